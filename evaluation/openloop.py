"""Open-loop scores of a policy on fixed simulated pairs: the fast proxy before closed-loop servoing.

Each pair is the first frame of a benchmark episode (`ServoEnv.reset(seed)`), so the suites' settings apply: held-out
assets, initial poses drawn like desired ones. The policy runs through `Servo`, exactly as in closed loop (quarter-turn
search included), and its normalised velocity is compared with the PBVS label of the true pose.

    python -m evaluation.openloop --config cpu eval.checkpoint=pretrained:cnsv2-cpu

`--stop` adds |v| at, near and beyond the goal (to calibrate `policy.servo.stop_velocity`); `--probe` adds the
translation-tilt ambiguity probe (`ambiguity_probe`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from configs import add_config_arguments, config_following_data
from configs.schema import Config
from policy.control import normalize_velocity, pbvs
from policy.rotation import nearest_quarter_turn
from sim.geometry import exp_so3, relative_pose
from sim.seeds import Stream, rng_for


@dataclass(frozen=True)
class OpenLoopScores:
    """Per pair: cosine with the label, the quarter turn Servo chose and the true nearest one, the rotation (deg)."""

    cos: np.ndarray  # (P,)
    turn: np.ndarray  # (P,) int
    true_turn: np.ndarray  # (P,) int
    rot_deg: np.ndarray  # (P,)
    norm_pred: np.ndarray  # (P,) |v| predicted, unit world
    norm_true: np.ndarray  # (P,)

    def summary(self) -> dict[str, float]:
        """Median cosine, share of pairs with cosine > 0.5, and how often the chosen turn was the true one."""
        return {
            "pairs": float(len(self.cos)),
            "median_cos": float(np.median(self.cos)),
            "share_cos_above_0.5": float(np.mean(self.cos > 0.5)),
            "turn_accuracy": float(np.mean(self.turn == self.true_turn)),
        }


def open_loop_scores(policy: object, cfg: Config, seeds: list[int]) -> OpenLoopScores:
    """Score `policy` on the first frame of the episodes `seeds` of the environment `cfg.sim` describes."""
    from policy.servo import Servo
    from sim.env import ServoEnv

    rows = []
    with ServoEnv(cfg.sim) as env:
        for seed in seeds:
            frame = env.reset(seed)
            servo = Servo(policy, env.desired_frame().rgb, env.camera.K, env.scene_scale)  # type: ignore[arg-type]
            out = servo.step(frame.rgb)
            label = normalize_velocity(pbvs(env.dTc), env.scene_scale)
            pred = out.velocity_unit
            cos = float(pred @ label / max(np.linalg.norm(pred) * np.linalg.norm(label), 1e-12))
            rot = env.pose_error()[1]
            rows.append(
                (cos, out.turn, nearest_quarter_turn(env.dTc), rot, np.linalg.norm(pred), np.linalg.norm(label))
            )
    cos, turn, true_turn, rot, npred, ntrue = (np.array(c) for c in zip(*rows, strict=True))
    return OpenLoopScores(cos, turn.astype(int), true_turn.astype(int), rot, npred, ntrue)


# Offsets from the goal for the stop calibration, units of d* and degrees, log-uniform: well inside CNS's success
# bound (0.1 d*, 10 deg), and beyond it.
NEAR = ((0.002, 0.03), (0.1, 3.0))
FAR = ((0.12, 0.3), (12.0, 30.0))


def stop_norms(policy: object, cfg: Config, seeds: list[int]) -> dict[str, np.ndarray]:
    """The policy's predicted |v| (unit world) at the goal, near it (inside the success bound) and beyond it.

    For each episode seed: the current image rendered exactly at the desired pose ("goal"), at a pose drawn by
    `sim.poses.sample_near` within `NEAR` ("near"), and within `FAR` ("far"). A stop threshold on |v| should pass
    most "goal" and "near" frames and almost no "far" frame.
    """
    from policy.servo import Servo
    from sim.env import ServoEnv
    from sim.poses import sample_near

    out: dict[str, list[float]] = {"goal": [], "near": [], "far": []}
    with ServoEnv(cfg.sim) as env:
        for seed in seeds:
            env.reset(seed)
            rng = rng_for(seed, Stream.STOP_CALIBRATION)
            servo = Servo(policy, env.desired_frame().rgb, env.camera.K, env.scene_scale)  # type: ignore[arg-type]
            poses = {
                "goal": env.wTd,
                "near": sample_near(rng, env.wTd, *NEAR),
                "far": sample_near(rng, env.wTd, *FAR),
            }
            for name, wTc in poses.items():
                rgb = env.renderer.render(env.camera.K, wTc).rgb
                servo.restart()  # each frame on its own, not as steps of one episode
                out[name].append(float(np.linalg.norm(servo.step(rgb).velocity_unit)))
    return {k: np.array(v) for k, v in out.items()}


# Angles (deg) of the ambiguity probe: around the success bound (an orbit of 5.7° is TE 0.1 d*).
PROBE_DEG = (3.0, 6.0, 10.0, 15.0)


def ambiguity_probe(policy: object, cfg: Config, seeds: list[int]) -> dict[tuple[str, float], np.ndarray]:
    """The policy against the translation-tilt ambiguity: (|v| predicted, |v| label, cosine) per goal, (S, 3).

    For each episode seed and angle in `PROBE_DEG`, the current camera is moved from the desired pose three ways with
    the same axis a (random, normal to the optical axis): "orbit", about the point d* ahead (`sim.poses.orbit_pose`,
    where translation and tilt nearly cancel in the image), "lateral", translated by angle x d* along z x a, and
    "tilt", turned in place about a. A policy that cannot see the difference stops short on the orbit.
    """
    from policy.servo import Servo
    from sim.env import ServoEnv
    from sim.poses import orbit_pose

    rows: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    with ServoEnv(cfg.sim) as env:
        for seed in seeds:
            env.reset(seed)
            rng = rng_for(seed, Stream.AMBIGUITY_PROBE)
            servo = Servo(policy, env.desired_frame().rgb, env.camera.K, env.scene_scale)  # type: ignore[arg-type]
            wTd, z = env.wTd, env.wTd[:3, 2]
            for deg in PROBE_DEG:
                a = rng.normal(size=3)
                a -= (a @ z) * z
                rotvec = np.radians(deg) * a / np.linalg.norm(a)
                lateral = wTd.copy()
                lateral[:3, 3] += np.cross(rotvec, z) * env.scene_scale
                tilt = wTd.copy()
                tilt[:3, :3] = exp_so3(rotvec) @ wTd[:3, :3]
                for name, wTc in (("orbit", orbit_pose(wTd, rotvec)), ("lateral", lateral), ("tilt", tilt)):
                    servo.restart()  # each frame on its own, not as steps of one episode
                    pred = servo.step(env.renderer.render(env.camera.K, wTc).rgb).velocity_unit
                    label = normalize_velocity(pbvs(relative_pose(wTd, wTc)), env.scene_scale)
                    cos = float(pred @ label / max(np.linalg.norm(pred) * np.linalg.norm(label), 1e-12))
                    rows.setdefault((name, deg), []).append((np.linalg.norm(pred), np.linalg.norm(label), cos))
    return {k: np.array(v) for k, v in rows.items()}


def main(argv: list[str] | None = None) -> None:
    """CLI: print the open-loop summary of a checkpoint on the first frames of a suite's episodes."""
    from evaluation.plan import resolve_checkpoint
    from evaluation.suites import load_suite, suite_config
    from policy.checkpoint import load_checkpoint
    from policy.servo import own_stop_rule

    parser = argparse.ArgumentParser(prog="python -m evaluation.openloop", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="canonical")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--stop", action="store_true", help="also print |v| quantiles at, near and beyond the goal")
    parser.add_argument("--probe", action="store_true", help="also print the translation-tilt ambiguity probe")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    followed = config_following_data(parser, args)
    cfg = followed.cfg
    suite_cfg = suite_config(args.config, load_suite(args.suite), args.overrides, followed.defaults())
    policy, _ = load_checkpoint(resolve_checkpoint(cfg, ["cnsv2"]))
    stop, _ = own_stop_rule(policy, suite_cfg.eval.stop_velocity, suite_cfg.eval.stop_steps)  # as evaluation stops
    seeds = [cfg.eval.seed + i for i in range(args.pairs)]
    scores = open_loop_scores(policy, suite_cfg, seeds)
    print(" ".join(f"{k}={v:.3f}" for k, v in scores.summary().items()))
    if args.stop:
        for name, norms in stop_norms(policy, suite_cfg, seeds).items():
            q = np.quantile(norms, [0.1, 0.5, 0.9])
            print(f"|v| {name}: p10 {q[0]:.4f} median {q[1]:.4f} p90 {q[2]:.4f}")
    if args.probe:
        for (name, deg), r in sorted(ambiguity_probe(policy, suite_cfg, seeds).items()):
            print(
                f"{name:7s} {deg:4.0f}°: |v| median {np.median(r[:, 0]):.3f} (label {np.median(r[:, 1]):.3f}), "
                f"cos median {np.median(r[:, 2]):.2f}, below the stop {np.mean(r[:, 0] < stop):.0%}"
            )


if __name__ == "__main__":
    main()
