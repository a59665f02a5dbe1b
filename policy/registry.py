"""Controllers built by name: `make_controller("sift_pbvs", setup)` instead of an if-chain at every call site.

A module registers a factory with `@register_controller(name)`. Every factory takes one `ControllerSetup`, the things
a controller may draw on, and uses what it needs: the speed limits, CNSv2's stop rule and network, or, for the
benchmark's oracle only, the environment's ground truth. The built-in controllers (`policy.classical`,
`policy.servo`) register on the first lookup; another package registers its own when it is imported
(`evaluation.oracle` registers `oracle`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from configs.schema import ServoConfig
from policy.control import CNS_GAIN
from policy.interface import Controller

__all__ = ["ControllerSetup", "available_controllers", "make_controller", "register_controller"]

# Imported on the first lookup rather than here, so that `import policy.registry` pulls in neither OpenCV nor torch.
BUILTIN_MODULES = ("policy.classical", "policy.servo")


@dataclass(frozen=True)
class ControllerSetup:
    """What a factory may use to build a controller; each takes what it needs and ignores the rest."""

    servo: ServoConfig | None = None  # speed limits for every controller; hybrid and awareness for CNSv2
    stop_velocity: float | None = None  # CNSv2's stop rule (eval.stop_*); None: servo.stop_* (the policy's own)
    stop_steps: int | None = None
    gain: float = CNS_GAIN  # CNSv2's command is gain x its velocity (the other controllers' loop applies it)
    load_policy: Callable[[], Any] | None = None  # returns the CNSv2 network; called only by a CNSv2 factory
    env: Any = None  # the simulator, for controllers that read ground truth (the benchmark's oracle)
    device: str = "cpu"  # where a controller's networks run (eval.device): the learned matchers' ("cpu" or "cuda")


Factory = Callable[[ControllerSetup], Controller]
_FACTORIES: dict[str, Factory] = {}
_builtins_loaded = False


def register_controller(name: str) -> Callable[[Factory], Factory]:
    """Decorator: make the decorated function the factory of controller `name`.

    Registering another function under a taken name is an error; the same function again (a module reloaded) is not.
    """

    def register(factory: Factory) -> Factory:
        taken = _FACTORIES.get(name)
        if taken is not None and _qualified(taken) != _qualified(factory):
            raise ValueError(f"controller {name!r} is already registered by {_qualified(taken)}")
        _FACTORIES[name] = factory
        return factory

    return register


def _qualified(factory: Factory) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def available_controllers() -> list[str]:
    """The names that `make_controller` builds: the built-ins and those registered by packages imported so far."""
    _load_builtins()
    return sorted(_FACTORIES)


def make_controller(name: str, setup: ControllerSetup | None = None) -> Controller:
    """Build controller `name` from `setup` (defaults: no speed limits, no network, no environment).

    An unknown name is a ValueError that lists the known ones.
    """
    _load_builtins()
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown controller {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    return factory(setup or ControllerSetup())
