"""Servo: the closed-loop API that evaluation, DAgger and a real robot use.

`Servo(policy, desired_rgb, K, scene_scale)` encodes the desired image once; `step(rgb)` returns the camera velocity
in real units: the network's normalised prediction, denormalised for the real camera and scene scale (Eq. 18-21),
through the hybrid law (Eq. 24) until the image gravity centres meet, then PBVS (Sec. III.G), clamped. Each output
also carries the twist to command (`command`: gain x the clamped velocity, the benchmark's execution) and whether
the goal is reached (`arrived`: the benchmark's stop rule), so a robot loop is

    servo = Servo(policy, desired_rgb, K, scene_scale=d_star)
    while not (out := servo.step(camera.read_rgb())).arrived:
        robot.send_camera_twist(out.command)

The benchmark (`evaluation.episodes`) executes exactly these commands and stops on exactly this rule.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from configs.schema import ServoConfig
from policy.canonical_camera import CanonicalRemap
from policy.control import (
    CNS_GAIN,
    SingularLawWarning,
    clamp_velocity,
    denormalize_velocity,
    executed_velocity,
    hybrid,
    pbvs_inverse,
)
from policy.interface import ControlOutput
from policy.onnx_policy import NetworkStep, OnnxPolicy
from policy.registry import ControllerSetup, register_controller
from policy.rotation import QUARTER_TURNS, turn_image, unturn_pixels, velocity_from_turned
from runtime.threads import SERVO_AUTO_THREADS, resolve_threads, set_torch_threads
from sim.camera import Camera
from sim.validate import as_positive

if TYPE_CHECKING:
    from policy.network import CNSv2Policy

# torch: the CNSv2Policy module itself; onnx: its exported graphs (python -m policy.export) on onnxruntime, where torch
# is never imported (policy.onnx_policy), so a robot computer needs neither torch nor the training stack.
RUNTIMES = ("torch", "onnx")


@dataclass(frozen=True)
class ServoOutput:
    """One control step. Gravity centres are pixels of the caller's image; velocities are twists of the current
    camera in its own frame (OpenCV: x right, y down, z forward), linear part m/s, angular part rad/s."""

    velocity: np.ndarray  # (6,) the control law's twist, clamped to max_linear / max_angular; zero when not ok
    velocity_unit: np.ndarray  # (6,) the network's normalised prediction (unit world, lambda = 1), never clamped
    mode: str  # "hybrid" or "pbvs"
    gravity_cur: np.ndarray  # (2,)
    gravity_des: np.ndarray  # (2,)
    confidence: float  # mean dual-softmax matching confidence, in [0, 1]
    ok: bool  # False when the network produced a non-finite output
    turn: int = 0  # quarter turns of the current image the network saw (policy.rot90), 0 otherwise
    # (6,) the twist to send the robot: gain x velocity (policy.control.executed_velocity); zero when arrived or not ok
    command: np.ndarray = field(default_factory=lambda: np.zeros(6))
    arrived: bool = False  # |velocity_unit| < stop_velocity on each of the last stop_steps steps (all of them ok)


def _check_image(rgb: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{name}: expected a uint8 RGB image (H, W, 3), got {a.dtype} {a.shape}")
    return a


def _check_stop_rule(stop_velocity: float, stop_steps: int) -> None:
    if not stop_velocity >= 0 or isinstance(stop_steps, bool) or not isinstance(stop_steps, int) or stop_steps < 1:
        raise ValueError(f"need stop_velocity >= 0 and stop_steps >= 1, got {stop_velocity} and {stop_steps}")


def own_stop_rule(
    policy: CNSv2Policy | OnnxPolicy, stop_velocity: float | None, stop_steps: int | None
) -> tuple[float, int]:
    """(stop_velocity, stop_steps): each one given, else the policy's own (`policy.cfg.servo`), which its checkpoint
    carries because the rule is calibrated per trained policy; a config's `policy.servo` for the control law (hybrid,
    limits) never replaces it. ValueError for a bad rule."""
    if stop_velocity is None:
        stop_velocity = policy.cfg.servo.stop_velocity
    if stop_steps is None:
        stop_steps = policy.cfg.servo.stop_steps
    _check_stop_rule(stop_velocity, stop_steps)
    return float(stop_velocity), int(stop_steps)


def _runtime_policy(policy: Any, runtime: str) -> CNSv2Policy | OnnxPolicy:
    """The network `runtime` runs: the torch module (in eval mode), or the export folder loaded on onnxruntime."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "onnx":
        if isinstance(policy, OnnxPolicy):
            return policy
        if isinstance(policy, str | os.PathLike):
            return OnnxPolicy(policy)
        raise TypeError(
            f"runtime='onnx' runs exported graphs: pass the export folder (python -m policy.export CHECKPOINT --out "
            f"DIR) or a policy.onnx_policy.OnnxPolicy, not a {type(policy).__name__}"
        )
    if isinstance(policy, OnnxPolicy | str | os.PathLike):
        raise TypeError(f"a {type(policy).__name__} policy is an ONNX export: pass runtime='onnx' to run it")
    return policy.eval()


class Servo:
    """Closed-loop visual servoing towards one desired image with a CNSv2 policy.

    Images are RGB (not OpenCV's BGR), uint8, (H, W, 3), in the camera's native size: the desired image fixes the
    size, `K` (3, 3, pixels) must be the intrinsics of that size, and every current image must have the same size
    (another is a ValueError). Any size and aspect works: both images are remapped to the camera the network was
    trained on (square pixels, centred principal point, `policy.input_size`; a centre crop where the aspects differ),
    and the focal-length change is part of the denormalisation. Do not resize images yourself without resizing K.

    Outputs are twists of the current camera in its own frame (OpenCV: x right, y down, z forward): linear m/s,
    angular rad/s. `scene_scale` is d*, the distance in metres from the desired camera to the scene it looks at
    (the object or table centre). With `cfg.aware` (the default) the linear part scales with d* and the focal scale
    (paper Eq. 18-21) while the angular part does not, so in PBVS mode a wrong d* changes the speed of the approach,
    not its direction. Unaware (`cfg.aware: false`), the unit world's velocity is used as is (d* = 1, f = W).

    Args:
        policy: the network (`policy.load_pretrained("cnsv2-cpu")[0]`, `policy.load_checkpoint`), put in eval mode;
            with `runtime="onnx"`, an export folder (`python -m policy.export`) or a loaded `OnnxPolicy`.
        desired_rgb: the goal image, uint8 (H, W, 3) RGB.
        K: (3, 3) intrinsics of the camera, for images of size (W, H).
        scene_scale: d* in metres, > 0.
        cfg: the servo settings (hybrid law, awareness, speed limits, the quarter-turn hysteresis and search period
            `turn_search_every`); default the policy's own `policy.servo`.
        gain: `command` = gain x `velocity`; 2 is what the benchmark executes (CNS), and what the policy was
            trained and evaluated with.
        max_linear, max_angular: `velocity` is scaled down (as a whole twist) to |v| <= max_linear m/s and
            |w| <= max_angular rad/s; default `cfg.max_linear`, `cfg.max_angular`. `command` is then at most
            gain x these.
        stop_velocity, stop_steps: the stop rule, the same as the benchmark's: `arrived` once |velocity_unit| <
            stop_velocity on stop_steps consecutive steps. None: the policy's own `policy.cfg.servo.stop_velocity`
            and `stop_steps` (not `cfg`'s: the rule is calibrated per trained policy, with `python -m
            evaluation.openloop --stop`, and saved in its checkpoint; 0.03 and 10 for the shipped cnsv2-cpu). It is
            on the unit-world prediction, so it does not depend on d*, K or the gain.
        threads: torch intra-op threads for this process (a process-wide setting, applied here), or onnxruntime's for
            the exported graphs' sessions; None: `cfg.threads`; 0: automatic, `runtime.threads.SERVO_AUTO_THREADS` (1:
            beside other busy processes more threads only wait for each other).
        runtime: "torch" runs the module; "onnx" runs its exported graphs with onnxruntime (fp32, on the CPU unless the
            OnnxPolicy was loaded with other providers), without importing torch. Both give the same outputs to
            `policy.export.PARITY_TOLERANCE` and go through the same guards (sizes, non-finite outputs, clamping).

    Raises ValueError for a non-uint8 or non-RGB image, a non-positive scene_scale, gain or limit, a bad stop rule or
    thread count, or an unknown runtime; TypeError for a policy that does not fit the runtime; ModuleNotFoundError
    for runtime="onnx" without onnxruntime; see `policy.onnx_policy.OnnxPolicy` for a bad export folder.
    """

    def __init__(
        self,
        policy: CNSv2Policy | OnnxPolicy | str | os.PathLike[str],
        desired_rgb: np.ndarray,
        K: ArrayLike,
        scene_scale: float,
        *,
        cfg: ServoConfig | None = None,
        gain: float = CNS_GAIN,
        max_linear: float | None = None,
        max_angular: float | None = None,
        stop_velocity: float | None = None,
        stop_steps: int | None = None,
        threads: int | None = None,
        runtime: str = "torch",
    ) -> None:
        self.runtime = runtime
        self.policy = policy = _runtime_policy(policy, runtime)
        self.cfg = cfg if cfg is not None else policy.cfg.servo
        self.gain = as_positive(gain, "gain")
        self.max_linear = as_positive(self.cfg.max_linear if max_linear is None else max_linear, "max_linear")
        self.max_angular = as_positive(self.cfg.max_angular if max_angular is None else max_angular, "max_angular")
        self.stop_velocity, self.stop_steps = own_stop_rule(policy, stop_velocity, stop_steps)
        requested = self.cfg.threads if threads is None else threads
        n_threads = resolve_threads(requested, default=SERVO_AUTO_THREADS)
        if isinstance(policy, OnnxPolicy):
            self.threads, self.device = policy.set_threads(n_threads), None
        else:
            self.threads, self.device = set_torch_threads(n_threads), next(policy.parameters()).device
        des = _check_image(desired_rgb, "desired_rgb")
        self.image_size = (des.shape[1], des.shape[0])
        self.camera = Camera(np.asarray(K, dtype=np.float64), *self.image_size)
        self.scene_scale = as_positive(scene_scale, "scene_scale")
        self.input_size = tuple(policy.cfg.input_size)
        # The network sees exactly the camera it was trained on: square pixels, centred principal point, its input
        # size; a real camera is remapped to that (a crop where the views differ in aspect).
        self.remap = CanonicalRemap(self.camera, self.input_size)
        self.net_camera = self.remap.target
        # The unit world's camera has f = W at the network's input size; anything else is a focal-length change.
        self.focal_scale = self.remap.focal_scale
        self.cache: Any = self._encode(self.remap(des))  # DesiredCache (torch) or {name: array} (onnx)
        self.rot90 = bool(policy.cfg.rot90)
        if self.rot90 and self.input_size[0] != self.input_size[1]:
            raise ValueError(f"policy.rot90 needs a square policy.input_size, got {self.input_size}")
        self.restart()

    def restart(self) -> None:
        """Forget the episode so far (the quarter turn in use, the latch to PBVS, the step count, the stop count),
        keeping the goal.

        A new episode towards the same desired image, or independent frames scored one by one (open-loop probes),
        must not inherit the turn hysteresis, the latch or the stop count of earlier frames; the desired image stays
        encoded.
        """
        self.pbvs_latched = not self.cfg.hybrid
        self.turn: int | None = None  # the quarter turn in use (policy.rot90)
        self.steps = 0
        self.below_stop = 0  # consecutive ok steps with |velocity_unit| < stop_velocity

    def _to_caller_px(self, g_patch: np.ndarray) -> np.ndarray:
        # Patch centre (i + 0.5) * p - 0.5 in network pixels, then through the remap back to the caller's image.
        p = self.policy.patch
        net_px = (g_patch + 0.5) * p - 0.5
        return self.remap.to_source_px(net_px)[0]

    def _encode(self, des: np.ndarray) -> Any:
        """The desired image's cache from its canonical uint8 (H, W, 3) image."""
        if isinstance(self.policy, OnnxPolicy):
            return self.policy.encode_desired(des[None])
        import torch

        from policy.network import images_to_tensor

        with torch.inference_mode():
            return self.policy.encode_desired(images_to_tensor(des, self.device))

    def _network(self, cur: np.ndarray, turns: tuple[int, ...]) -> NetworkStep:
        """The network on the canonical uint8 (H, W, 3) current image turned by each of `turns` (quarter turns, k),
        in one batch (row i is turn turns[i]), against the cached goal."""
        if isinstance(self.policy, OnnxPolicy):
            # The turns are pure indexing (np.rot90 and a one-pixel shift), the same pixels policy.rotation.turn_images
            # gives on torch; one batch, as on torch, rather than a call per turn.
            x = cur[None] if turns == (0,) else np.stack([turn_image(cur, k) for k in turns])
            return self.policy.step(x, self.cache)
        import torch

        from policy.network import images_to_tensor
        from policy.rotation import turn_images

        with torch.inference_mode():
            x = images_to_tensor(cur, self.device)
            if turns != (0,):
                x = torch.cat([turn_images(x, k) for k in turns])
            out = self.policy(x, self.cache)

            def as64(t: torch.Tensor) -> np.ndarray:
                return t.float().cpu().numpy().astype(np.float64)

            confidence = as64(out.confidence.float().mean(dim=1))
            return NetworkStep(as64(out.vel), as64(out.gravity_cur), as64(out.gravity_des), confidence, out.grid)

    def step(self, rgb: np.ndarray) -> ServoOutput:
        """The velocity that moves the camera towards the desired view, from the current image (uint8 RGB, the
        desired image's size), the command to send and whether the goal is reached; see the class docstring."""
        cur = _check_image(rgb, "rgb")
        if (cur.shape[1], cur.shape[0]) != self.image_size:
            w, h = self.image_size
            raise ValueError(f"rgb: expected {w}x{h} like the desired image, got {cur.shape[1]}x{cur.shape[0]}")
        # With rot90, a search runs all four quarter turns in one batch; the turn whose matches are most confident is
        # the one nearest the desired view, the range the network was trained on (policy.rotation). Between searches
        # (turn_search_every) only the turn in use runs.
        search = self.rot90 and (self.turn is None or self.steps % self.cfg.turn_search_every == 0)
        turns = QUARTER_TURNS if search else (self.turn or 0,)
        out = self._network(self.remap(cur), turns)
        row = 0
        if search:
            row = int(np.argmax(out.confidence))
            # Where two turns leave about 45 deg each, their confidences are close and the network is least sure of
            # the sign: a turn in use stays until another is clearly better (a Schmitt trigger, not an argmax).
            if self.turn is not None and out.confidence[row] <= out.confidence[self.turn] * (
                1.0 + self.cfg.turn_hysteresis
            ):
                row = self.turn
            self.turn = turns[row]
        turn = turns[row]
        self.steps += 1
        v_unit = out.velocity[row].copy()
        g_cur, g_des = out.gravity_cur[row].copy(), out.gravity_des[row].copy()
        conf = float(out.confidence[row])
        if turn:
            v_unit = velocity_from_turned(v_unit, turn) if np.all(np.isfinite(v_unit)) else v_unit
            g_cur = unturn_pixels(g_cur, turn, out.grid[1], out.grid[0])[0]  # grid (h, w), square when turned
        gc_px, gd_px = self._to_caller_px(g_cur), self._to_caller_px(g_des)
        if not (np.all(np.isfinite(v_unit)) and np.all(np.isfinite(g_cur)) and np.all(np.isfinite(g_des))):
            mode = "pbvs" if self.pbvs_latched else "hybrid"
            self.below_stop = 0
            return ServoOutput(np.zeros(6), v_unit, mode, gc_px, gd_px, conf, False, turn)

        d, sf = (self.scene_scale, self.focal_scale) if self.cfg.aware else (1.0, 1.0)
        v_pbvs = denormalize_velocity(v_unit, d, sf)
        h, w = out.grid
        if not self.pbvs_latched and np.linalg.norm(g_cur - g_des) < self.cfg.switch_threshold * np.sqrt(h * w):
            self.pbvs_latched = True  # Sec. III.G: once the gravity centres meet, PBVS for the rest of the episode
        vel, mode = v_pbvs, "pbvs"
        if not self.pbvs_latched:
            vel, mode = self._hybrid(v_pbvs, d, g_cur, g_des)
        vel = clamp_velocity(vel, self.max_linear, self.max_angular)
        self.below_stop = self.below_stop + 1 if float(np.linalg.norm(v_unit)) < self.stop_velocity else 0
        arrived = self.below_stop >= self.stop_steps
        # vel is clamped above, so executed_velocity's own clamp (with these limits) would change nothing.
        command = np.zeros(6) if arrived else executed_velocity(vel, self.gain)
        return ServoOutput(vel, v_unit, mode, gc_px, gd_px, conf, True, turn, command, arrived)

    def _hybrid(self, v_pbvs: np.ndarray, d: float, g_cur: np.ndarray, g_des: np.ndarray) -> tuple[np.ndarray, str]:
        T = pbvs_inverse(v_pbvs)
        p = self.policy.patch
        # Gravity centres in normalised coordinates of the network's image (patch centre -> pixel -> x, y).
        xg, xg_des = self.net_camera.normalize(np.stack([g_cur, g_des]) * p + 0.5 * p - 0.5)
        R, t = T[:3, :3], T[:3, 3]
        # The desired gravity point sits at depth ~ d* in the desired camera; move it into the current camera.
        Zg = float((R.T @ (d * np.append(xg_des, 1.0) - t))[2])
        if Zg <= 0:
            return v_pbvs, "pbvs"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularLawWarning)
            vel, mode = hybrid(T, xg, Zg, xg_des, 1.0, return_mode=True)
        return vel, mode


class ServoController:
    """CNSv2 behind the controller interface (`policy.interface`: `reset`, then `step(rgb) -> ControlOutput`).

    A thin adapter: the stop signal is `Servo`'s `arrived` and the command to execute is `Servo`'s `command` (gain
    and limits applied), so the benchmark stops and moves exactly as a robot loop over `Servo` does. A non-finite
    network output is reported as not ok. An `OnnxPolicy` runs on onnxruntime (`Servo`'s runtime "onnx"), a
    `CNSv2Policy` on torch.
    """

    def __init__(
        self,
        policy: CNSv2Policy | OnnxPolicy,
        cfg: ServoConfig | None = None,
        *,
        name: str = "cnsv2",
        stop_velocity: float | None = None,
        stop_steps: int | None = None,
        gain: float = CNS_GAIN,
    ) -> None:
        self.stop_velocity, self.stop_steps = own_stop_rule(policy, stop_velocity, stop_steps)
        self.policy, self.cfg, self.name = policy, cfg, name
        self.gain = as_positive(gain, "gain")
        self.servo: Servo | None = None

    def reset(self, desired_rgb: np.ndarray, K: np.ndarray, scene_scale: float) -> None:
        """Encode the desired image once (a fresh `Servo`, so the stop count starts at 0)."""
        self.servo = Servo(
            self.policy, desired_rgb, K, scene_scale, cfg=self.cfg, gain=self.gain,
            stop_velocity=self.stop_velocity, stop_steps=self.stop_steps,
            runtime="onnx" if isinstance(self.policy, OnnxPolicy) else "torch",
        )  # fmt: skip

    def step(self, rgb: np.ndarray) -> ControlOutput:
        """One network step: the velocity in real units, the command to execute and the stop signal."""
        if self.servo is None:
            raise RuntimeError("ServoController: call reset(desired_rgb, K, scene_scale) first")
        out = self.servo.step(rgb)
        info = {"mode": out.mode, "confidence": out.confidence, "velocity_unit": out.velocity_unit, "turn": out.turn}
        if not out.ok:
            info["reason"] = "non-finite network output"
        return ControlOutput(out.velocity, out.arrived, out.ok, info, command=out.command)


def _cnsv2(setup: ControllerSetup, name: str, hybrid: bool) -> ServoController:
    if setup.load_policy is None:
        raise ValueError(f"controller {name!r} needs the network: ControllerSetup(load_policy=...)")
    policy = setup.load_policy()
    servo = (setup.servo or policy.cfg.servo).model_copy(update={"hybrid": hybrid})
    return ServoController(
        policy, servo, name=name, stop_velocity=setup.stop_velocity, stop_steps=setup.stop_steps, gain=setup.gain
    )


@register_controller("cnsv2")
def _cnsv2_hybrid(setup: ControllerSetup) -> ServoController:
    """CNSv2 with the hybrid law until the gravity centres meet, then PBVS (paper Sec. III.G)."""
    return _cnsv2(setup, "cnsv2", hybrid=True)


@register_controller("cnsv2_pbvs")
def _cnsv2_pbvs(setup: ControllerSetup) -> ServoController:
    """CNSv2 with PBVS only."""
    return _cnsv2(setup, "cnsv2_pbvs", hybrid=False)
