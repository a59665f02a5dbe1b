"""The shipped policy: it loads offline from package data, it really uses the matching, and it points the right way.

Pairs are the first frames of the canonical benchmark's episodes (held-out assets, initial poses drawn like desired
ones), seeds far from every training seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policy import load_pretrained
from policy.pretrained import available, pretrained_path

NAME = "cnsv2-cpu"
# Its real-time variants: the same network at 192 px, fine-tuned from it (configs/cpu192.yaml), and a shallower one
# with a cached desired stream at 256 px, started from its first blocks (configs/cpu_rt.yaml).
FAST = "cnsv2-cpu-192"
RT = "cnsv2-cpu-rt"
PAIRS = 40
SEED = 2_000_000


@pytest.fixture(scope="module")
def shipped():  # type: ignore[no-untyped-def]
    return load_pretrained(NAME)


@pytest.fixture(scope="module", params=[NAME, FAST, RT])
def each_shipped(request):  # type: ignore[no-untyped-def]
    return request.param, load_pretrained(request.param)


@pytest.fixture(scope="module")
def suite_cfg():  # type: ignore[no-untyped-def]
    from evaluation.suites import load_suite, suite_config

    return suite_config("cpu", load_suite("canonical"))


@pytest.mark.unit
def test_the_package_ships_it_with_a_model_card_within_25_mb(each_shipped) -> None:  # type: ignore[no-untyped-def]
    name, (policy, meta) = each_shipped
    assert name in available()
    folder = pretrained_path(name)
    assert pretrained_path(f"pretrained:{name}") == folder
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "policy.json", "MODEL_CARD.md"}
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 25 * 2**20
    assert not policy.training and meta["policy_version"] > 0
    assert policy.cfg.backbone.kind == "xfeat" and policy.cfg.rot90
    size, origin = {FAST: ((192, 192), f"pretrained:{NAME}"), RT: ((256, 256), f"pretrained:{NAME}")}.get(
        name, ((256, 256), None)
    )
    assert tuple(policy.cfg.input_size) == size and meta["extra"].get("init_from") == origin
    t = policy.cfg.transformer
    assert (t.depth, t.cache_desired, policy.cfg.controller.depth) == ((2, True, 1) if name == RT else (3, False, 2))
    card = (folder / "MODEL_CARD.md").read_text()
    assert "Closed-loop evaluation" in card and "canonical" in card and "Training config" in card
    with pytest.raises(FileNotFoundError, match=f"shipped: .*{NAME}"):
        load_pretrained("no-such-policy")


@pytest.mark.unit
def test_make_eval_resolves_the_shipped_policy() -> None:
    from evaluation.plan import make_plan

    _, plan = make_plan("cpu", [f"eval.checkpoint=pretrained:{NAME}", "eval.suites=[canonical]", "eval.episodes=1"])
    assert plan.checkpoint is not None and Path(plan.checkpoint) == pretrained_path(NAME).resolve()


@pytest.mark.integration
@pytest.mark.slow
def test_it_points_along_the_pbvs_label_on_held_out_pairs(each_shipped, suite_cfg) -> None:  # type: ignore[no-untyped-def]
    from evaluation.openloop import open_loop_scores

    scores = open_loop_scores(each_shipped[1][0], suite_cfg, [SEED + i for i in range(PAIRS)])
    summary = scores.summary()
    # Floors set below what was measured on these 40 pairs (see docs/cpu-recipe.md).
    assert summary["median_cos"] > MEDIAN_COS_FLOOR, summary
    assert summary["turn_accuracy"] > TURN_ACCURACY_FLOOR, summary


@pytest.mark.integration
@pytest.mark.slow
def test_its_velocity_depends_on_the_desired_image(shipped, suite_cfg) -> None:  # type: ignore[no-untyped-def]
    # A policy that ignored the match (reading the current image alone) would answer the same for any goal.
    from policy.servo import Servo
    from sim.env import ServoEnv

    policy = shipped[0]
    frames, desired = [], []
    with ServoEnv(suite_cfg.sim) as env:
        for i in range(PAIRS // 2):
            frames.append((env.reset(SEED + i).rgb, env.camera.K, env.scene_scale))
            desired.append(env.desired_frame().rgb)
    cos = []
    for i, (rgb, K, scale) in enumerate(frames):
        own = Servo(policy, desired[i], K, scale).step(rgb).velocity_unit
        other = Servo(policy, desired[(i + 1) % len(desired)], K, scale).step(rgb).velocity_unit
        cos.append(float(own @ other / max(np.linalg.norm(own) * np.linalg.norm(other), 1e-12)))
    assert np.median(cos) < SWAP_COS_CEILING, np.round(cos, 2)


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_camera_converges_as_the_canonical_one_does(shipped, suite_cfg) -> None:  # type: ignore[no-untyped-def]
    """A 640x480 camera with fx != fy and an off-centre principal point, remapped to the canonical camera by Servo."""
    from evaluation.episodes import run_episode
    from evaluation.suites import load_suite, suite_config
    from policy.servo import ServoController
    from sim.camera import Camera
    from sim.env import ServoEnv

    # The quarter turns searched every 8 steps, not every step: the same episodes succeed (docs/deployment.md) in
    # half the time, and what this test is about is the remap.
    policy, e = shipped[0], suite_cfg.eval
    servo = suite_cfg.policy.servo.model_copy(update={"turn_search_every": 8})

    def run(env: ServoEnv, seed: int):  # type: ignore[no-untyped-def]
        ctl = ServoController(policy, servo, name="cnsv2", stop_velocity=e.stop_velocity, stop_steps=e.stop_steps)
        return run_episode(env, ctl, seed, limits=(servo.max_linear, servo.max_angular))

    with ServoEnv(suite_cfg.sim) as env:  # the first canonical benchmark episode it solves (these seeds first: faster)
        for seed in [1_000_004, 1_000_007, 1_000_008, *range(1_000_000, 1_000_012)]:
            canonical = run(env, seed)
            if canonical.success:
                break
    assert canonical.success, "the shipped policy solves none of the first canonical benchmark episodes"
    real_cfg = suite_config("cpu", load_suite("canonical"), ["sim.camera.width=640", "sim.camera.height=480"])
    K = np.array([[481.0, 0.0, 322.3], [0.0, 478.6, 236.9], [0.0, 0.0, 1.0]])
    with ServoEnv(real_cfg.sim, camera=Camera(K, 640, 480)) as env:
        real = run(env, seed)
    te, te_real = 1e3 * canonical.te_m, 1e3 * real.te_m
    print(f"seed {seed}: canonical TE {te:.1f} mm, real camera TE {te_real:.1f} mm ({real.reason})")
    assert real.success and te_real <= max(2.0 * te, te + 20.0), (canonical, real)


# Measured on these pairs with the shipped cnsv2-cpu (step 4500: the recipe's two stages): median cosine 0.981, turn
# accuracy 0.900 (step 3000 of stage 1: 0.979 and 0.875; the policy shipped before it, without DAgger data: 0.977
# and 0.85, and a median cosine of 0.39 between the velocities for the own and for another scene's desired image,
# where 1.0 would mean the goal is ignored); cnsv2-cpu-192: 0.982 and 0.925; cnsv2-cpu-rt: 0.973 and 0.850. The bounds
# leave room for a retrained policy, not for a broken one.
MEDIAN_COS_FLOOR = 0.85
TURN_ACCURACY_FLOOR = 0.7
SWAP_COS_CEILING = 0.7


@pytest.mark.integration
@pytest.mark.slow
def test_it_sees_the_orbit_where_translation_and_tilt_nearly_cancel(shipped, suite_cfg) -> None:  # type: ignore[no-untyped-def]
    """The failure the recipe's stage 2 was made for. On the orbit about the point d* ahead the image barely changes,
    and the stage-1 policy (step 3000 of `configs/cpu.yaml`) answered almost at random at 3° (median cosine 0.12 on
    these 8 goals) and with a median |v| of 0.048 at 10° (TE 175 mm, outside the success bound; label 0.247): it
    fails this test. The shipped policy: median cosine 0.72 at 3°, median |v| 0.080 at 10°."""
    from evaluation.openloop import ambiguity_probe

    probe = ambiguity_probe(shipped[0], suite_cfg, [SEED + i for i in range(8)])
    stop = shipped[0].cfg.servo.stop_velocity  # the calibrated rule the policy carries (0.03)
    o3, o10 = probe[("orbit", 3.0)], probe[("orbit", 10.0)]
    print(f"orbit 3°: cos {o3[:, 2].round(2)}; orbit 10°: |v| {o10[:, 0].round(3)}, cos {o10[:, 2].round(2)}")
    assert np.median(o3[:, 2]) > 0.5
    assert np.median(o10[:, 0]) > 2 * stop and np.median(o10[:, 2]) > 0.6
    # It still sees the unambiguous motions of the same size, and never stops there.
    for kind in ("lateral", "tilt"):
        assert np.all(probe[(kind, 10.0)][:, 0] > stop)


@pytest.mark.unit
def test_the_shipped_policy_carries_its_calibrated_stop_rule() -> None:
    # Evaluated with |v| < 0.03 for 10 steps (MODEL_CARD.md); a robot's Servo must stop the same way by default.
    policy, _ = load_pretrained("cnsv2-cpu")
    assert (policy.cfg.servo.stop_velocity, policy.cfg.servo.stop_steps) == (0.03, 10)
