"""ServoEnv: one visual-servo episode in simulation, in the unit world, rendered by any backend.

`reset(seed)` samples a scene and a (desired, initial) pose pair with the CNS distributions, then zooms the world
so that the desired camera sits at distance d* (`sim.env.scene_scale`, 1 in the unit world) from the scene centre.
`step(vel, dt)` moves the camera by the twist `vel` (its own frame) and renders what it sees.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from configs import load_config
from configs.schema import SimConfig
from sim.camera import Camera
from sim.effects import apply_effects
from sim.geometry import exp_se3, pose_error, relative_pose
from sim.poses import sample_pose_pair
from sim.render import Frame, Renderer, make_renderer
from sim.scene import SceneSpec
from sim.scene_sampler import SceneSampler
from sim.seeds import Stream, rng_for
from sim.validate import as_array


class ServoEnv:
    """A camera servoing to a desired view of a random scene; `ServoEnv()` uses the smoke config."""

    def __init__(
        self, cfg: SimConfig | None = None, *, renderer: Renderer | None = None, camera: Camera | None = None
    ) -> None:
        """`camera`: render through these intrinsics (e.g. a real camera's K) instead of `sim.camera`'s canonical
        one; its size must be `sim.camera.width` x `height`."""
        self.cfg = cfg if cfg is not None else load_config("smoke").sim
        c = self.cfg.camera
        if camera is not None and (camera.width, camera.height) != (c.width, c.height):
            raise ValueError(
                f"camera: {camera.width}x{camera.height} differs from sim.camera {c.width}x{c.height}; set those too"
            )
        self.camera = camera if camera is not None else Camera.canonical(c.width, c.height, c.focal_scale)
        r = self.cfg.renderer
        self.renderer = renderer or make_renderer(
            r.backend, c.width, c.height, shadows=r.shadows, shadow_size=r.shadow_size
        )
        self.sampler = SceneSampler(self.cfg.scene, self.cfg.assets)
        self.scene: SceneSpec | None = None
        self.seed: int | None = None
        self._wTd = self._wTc = np.eye(4)
        self._desired: Frame | None = None
        self._current: Frame | None = None
        self._fx_rng = np.random.default_rng(0)
        self.steps = 0
        self.reason = ""

    # -- episode -----------------------------------------------------------------------------------------------
    def reset(self, seed: int) -> Frame:
        """Start the episode of `seed` (a pure function of it) and return the first observation."""
        seed = int(seed)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        scene = self.sampler.sample(rng_for(seed, Stream.SCENE), seed=seed)
        wTd, wTc = sample_pose_pair(rng_for(seed, Stream.POSES), self.cfg.poses)
        k = self.cfg.env.scene_scale / np.linalg.norm(wTd[:3, 3])
        wTd[:3, 3] *= k
        wTc[:3, 3] *= k
        self.scene = scene.scaled(k)
        self.seed, self._wTd, self._wTc = seed, wTd, wTc
        self._fx_rng = rng_for(seed, Stream.EFFECTS)
        self.steps, self.reason = 0, ""
        if self.cfg.env.lighting_change:
            self.renderer.load(self.sampler.relight(self.scene, rng_for(seed, Stream.LIGHTS)))
            self._desired = self._render(wTd)
            self.renderer.load(self.scene)
        else:
            self.renderer.load(self.scene)
            self._desired = self._render(wTd)
        self._current = None
        return self.observe()

    def desired_frame(self) -> Frame:
        """The image of the desired view (rendered once per episode)."""
        self._require_reset()
        assert self._desired is not None
        return self._desired

    def observe(self) -> Frame:
        """The current camera's image (rendered once per step)."""
        self._require_reset()
        if self._current is None:
            self._current = self._render(self._wTc)
        return self._current

    def step(self, vel: ArrayLike, dt: float | None = None) -> Frame:
        """Move the camera by twist `vel` (vx, vy, vz, wx, wy, wz; its own frame) for dt seconds and observe."""
        self._require_reset()
        if self.done:
            raise RuntimeError(f"ServoEnv.step: the episode has ended ({self.reason}); call reset(seed)")
        vel = as_array(vel, (6,), "vel")
        dt = self.cfg.env.dt if dt is None else float(dt)
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        self._wTc = self._wTc @ exp_se3(vel, dt)
        self.steps += 1
        self._current = None
        self.reason = self._check_end()
        return self.observe()

    def _check_end(self) -> str:
        env, d = self.cfg.env, self.cfg.env.scene_scale
        pos = self._wTc[:3, 3]
        if pos[2] < env.min_height * d:
            return "below ground"
        if np.linalg.norm(pos) > env.max_distance * d:
            return "too far from the scene"
        uv, z = self.camera.project_world(np.zeros((1, 3)), self._wTc)
        if z[0] <= 0:
            return "scene centre behind the camera"
        if not self.camera.in_image(uv)[0]:
            return "scene centre out of view"
        if self.steps >= env.max_steps:
            return "step limit"
        return ""

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def terminated(self) -> bool:
        """The episode ended abnormally (below ground, scene lost, too far)."""
        return self.reason not in ("", "step limit")

    @property
    def truncated(self) -> bool:
        """The episode reached the step limit."""
        return self.reason == "step limit"

    @property
    def done(self) -> bool:
        """The episode has ended for any reason."""
        return bool(self.reason)

    @property
    def wTc(self) -> np.ndarray:
        """The current camera pose."""
        return self._wTc.copy()

    @property
    def wTd(self) -> np.ndarray:
        """The desired camera pose."""
        return self._wTd.copy()

    @property
    def dTc(self) -> np.ndarray:
        """The ground-truth relative pose inv(wTd) @ wTc."""
        return relative_pose(self._wTd, self._wTc)

    @property
    def scene_scale(self) -> float:
        """d*: the distance from the desired camera to the scene centre."""
        return self.cfg.env.scene_scale

    def pose_error(self) -> tuple[float, float]:
        """(translation in metres, rotation in degrees) between the current and desired cameras."""
        return pose_error(self._wTc, self._wTd)

    # -- internals ---------------------------------------------------------------------------------------------
    def _render(self, wTc: np.ndarray) -> Frame:
        f = self.renderer.render(self.camera.K, wTc)
        assert self.scene is not None
        if self.scene.effects.identity:
            return f
        return Frame(apply_effects(f.rgb, self.scene.effects, self._fx_rng), f.depth, f.K, f.wTc)

    def _require_reset(self) -> None:
        if self.seed is None:
            raise RuntimeError("ServoEnv: call reset(seed) first")

    def close(self) -> None:
        """Release the renderer."""
        self.renderer.close()

    def __enter__(self) -> ServoEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
