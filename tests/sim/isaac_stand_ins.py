"""Stand-ins for Isaac Sim's Python modules that behave like the real launcher where it matters (read from Isaac Sim
5.1's isaacsim.simulation_app/simulation_app.py): SimulationApp parses sys.argv with parse_known_args and hands the
unknown arguments to Kit, which fails on them here; a new stage brings the render defaults back; every orchestrator
step records the settings and viewport state it rendered with. Around them, the USD stage is a real usd-core one."""

from __future__ import annotations

import argparse
import sys
import types

import numpy as np
import pytest

from sim import isaac_backend


class FakeAnnotator:
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log, self.product = name, log, None

    def attach(self, products: list) -> None:
        self.product = products[0]

    def detach(self) -> None:
        self.log.append(("detach", self.name))

    def get_data(self) -> np.ndarray:
        w, h = self.product.size
        if self.name == "rgb":
            return np.full((h, w, 4), 200, np.uint8)
        depth = np.full((h, w), 0.7, np.float32)
        depth[0, :] = np.inf  # what the annotator reports where nothing was hit
        depth[1, :] = 0.0
        return depth


# What a stage load may bring back: SimulationApp 5.1's own render defaults (anti_aliasing 3 is DLSS) and the
# Replicator/Kit settings we turn off. The stand-in resets to these on new_stage(), at once and again on the next
# update() (Kit handles stage events inside update()).
HOSTILE_DEFAULTS = {
    "/rtx/post/aa/op": 3,
    "/rtx/post/histogram/enabled": True,
    "/omni/replicator/captureMotionBlur": True,
    "/omni/replicator/captureOnPlay": True,
    "/omni/replicator/asyncRendering": True,
    "/app/asyncRendering": True,
}


class KitStandIn:
    """Kit's command line as far as it matters here: `--/path=value` settings and a few flags; anything else fails."""

    FLAGS = ("--no-window", "--portable", "--allow-root")

    def __init__(self, args: list[str]) -> None:
        bad = [a for a in args if not (a.startswith("--/") and "=" in a) and a not in self.FLAGS]
        if bad:
            raise RuntimeError(f"Kit: unknown command-line arguments {bad}")
        self.settings = dict(a[2:].split("=", 1) for a in args if a.startswith("--/"))


class World:
    """The state the stand-ins share: carb settings, the viewport, pending stage events, and what was captured."""

    def __init__(self) -> None:
        self.log: list = []
        self.settings: dict = {}
        self.viewport = types.SimpleNamespace(updates_enabled=True)
        self.pending_resets: list[dict] = []
        self.captures: list[tuple[dict, bool]] = []
        self.cameras: list[set[str]] = []  # the camera prim's attribute names at each capture


class Settings:
    def __init__(self, world: World) -> None:
        self.world = world

    def get(self, key: str) -> object:
        return self.world.settings.get(key)

    def set(self, key: str, value: object) -> None:
        self.world.settings[key] = value


class SimulationAppStandIn:
    """SimulationApp 5.1's launch as far as it matters: argparse parse_known_args() on sys.argv, the unknown
    arguments and the config's Kit arguments handed to a strict Kit, render settings from the config."""

    world: World

    def __init__(self, cfg: dict) -> None:
        _, unknown = argparse.ArgumentParser(add_help=False).parse_known_args()
        args = [*cfg["extra_args"], f"--/physics/cudaDevice={cfg.get('physics_gpu', 0)}", *unknown]
        self.kit = KitStandIn(["--no-window", *args])
        self.cfg = cfg
        self.world.settings.update(HOSTILE_DEFAULTS)
        self.world.settings["/rtx/post/aa/op"] = cfg.get("anti_aliasing", 3)  # reset_render_settings()
        if cfg.get("disable_viewport_updates") and cfg.get("headless"):
            self.world.viewport.updates_enabled = False
        self.world.log.append(("app", cfg["extra_args"][0]))

    def update(self) -> None:
        if self.world.pending_resets:
            self.world.settings.update(self.world.pending_resets.pop())
        self.world.log.append(("update",))


class ContextStandIn:
    def __init__(self, world: World) -> None:
        self.world, self.stage = world, None

    def new_stage(self) -> None:
        from pxr import Usd

        self.stage = Usd.Stage.CreateInMemory()
        self.world.settings.update(HOSTILE_DEFAULTS)
        self.world.pending_resets.append(dict(HOSTILE_DEFAULTS))

    def get_stage(self):
        return self.stage


class ProductStandIn:
    def __init__(self, world: World, path: str, size: tuple) -> None:
        self.world, self.path, self.size = world, path, size

    def destroy(self) -> None:
        self.world.log.append(("destroy",))


def fake_isaac(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-ins for isaacsim, carb, omni.usd, the viewport utility and omni.replicator.core around a real usd-core
    stage: a SimulationApp that hands unknown arguments to a strict Kit, a new_stage() that resets the render
    settings, and an orchestrator step that records the settings each frame was rendered with."""
    pytest.importorskip("pxr.Usd")
    world = World()
    names = ("isaacsim", "carb", "carb.settings", "omni", "omni.usd", "omni.kit", "omni.kit.viewport")
    names += ("omni.kit.viewport.utility", "omni.replicator", "omni.replicator.core")
    mods = {name: types.ModuleType(name) for name in names}

    def step(**kw: object) -> None:
        world.log.append(("step", kw))
        world.captures.append((dict(world.settings), world.viewport.updates_enabled))
        camera = ctx.stage.GetPrimAtPath(isaac_backend.CAMERA_PATH)
        world.cameras.append({a.GetName() for a in camera.GetAttributes()} if camera else set())

    ctx = ContextStandIn(world)
    mods["isaacsim"].SimulationApp = type("SimulationApp", (SimulationAppStandIn,), {"world": world})
    mods["carb.settings"].get_settings = lambda: Settings(world)
    mods["omni.usd"].get_context = lambda: ctx
    mods["omni.kit.viewport.utility"].get_active_viewport = lambda: world.viewport
    rep = mods["omni.replicator.core"]
    rep.create = types.SimpleNamespace(render_product=lambda path, size: ProductStandIn(world, path, size))
    rep.AnnotatorRegistry = types.SimpleNamespace(get_annotator=lambda name: FakeAnnotator(name, world.log))
    rep.orchestrator = types.SimpleNamespace(step=step)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(mods[parent], child, mod)
    monkeypatch.setattr(isaac_backend, "_app", None)
    monkeypatch.setattr(isaac_backend, "unavailable_reason", lambda: None)
    return types.SimpleNamespace(world=world, ctx=ctx, App=mods["isaacsim"].SimulationApp)
