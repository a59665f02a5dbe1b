"""`make eval` (`python -m evaluation`): suites, the episode plan, in-process and Ray runs, the CNSv2 controller, and
the written report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from configs import load_config
from configs.loader import ConfigError
from configs.schema import EVAL_CONTROLLERS
from evaluation.plan import make_plan
from evaluation.report import write_report
from evaluation.runner import EvalWorker, main, run_jobs
from evaluation.suites import available_suites, load_suite, suite_config
from policy.checkpoint import build_policy, save_checkpoint
from policy.registry import available_controllers, make_controller
from policy.servo import ServoController, ServoOutput
from tests.fixtures.factories import small_config, small_overrides

QUIET = "eval.wandb.mode=disabled"


def _plan(root: Path, *overrides: str):  # type: ignore[no-untyped-def]
    """The plan of a small benchmark run in this process, its report under `root`."""
    return make_plan("smoke", small_overrides(QUIET, "eval.workers=0", *overrides, root=root))


@pytest.mark.unit
def test_shipped_suites_cover_table_one_and_the_hard_cases() -> None:
    names = available_suites()
    assert "common" not in names and any("canonical" in n for n in names)
    for name in names:
        cfg = suite_config("smoke", load_suite(name))
        assert cfg.sim.assets.split == "heldout"  # common.yaml reaches every suite
        assert cfg.sim.poses.initial.elevation_deg == cfg.sim.poses.desired.elevation_deg  # benchmark distribution
    f05 = suite_config("smoke", load_suite("f0.5_d0.5_unaware"))
    assert (f05.sim.camera.focal_scale, f05.sim.env.scene_scale, f05.policy.servo.aware) == (0.5, 0.5, False)
    assert load_suite("f0.5_d0.5_unaware").controllers == ("cnsv2", "cnsv2_pbvs")
    assert suite_config("smoke", load_suite("lighting")).sim.env.lighting_change
    tl = suite_config("smoke", load_suite("textureless")).sim.scene
    assert tl.textureless_prob == tl.ground_textureless_prob == 1.0
    # The user's overrides come last and win over the suite's.
    assert suite_config("smoke", load_suite("canonical"), ["sim.camera.focal_scale=2.0"]).sim.camera.focal_scale == 2.0


@pytest.mark.unit
def test_bad_suites_and_controllers_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"suite 'nope' not found; shipped suites: .*canonical"):
        load_suite("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("descripton: x\ncontrollers: [sift]\noverrides: {sim.camera.widht: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_suite(bad)
    assert "unknown key 'descripton'" in str(err.value) and "unknown 'sift'" in str(err.value)
    with pytest.raises(ConfigError, match="widht"):
        suite_config("smoke", load_suite(_write(tmp_path, "overrides:\n  sim.camera.widht: 3\n")))
    with pytest.raises(ConfigError, match=r"eval\.controllers"):
        load_config("smoke", ["eval.controllers=[oracle,sift]"])
    with pytest.raises(ConfigError, match="listed more than once: oracle"):
        load_config("smoke", ["eval.controllers=[oracle,oracle]"])


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return p


@pytest.mark.unit
def test_plan_runs_every_controller_on_the_same_seeds_and_skips_what_a_suite_excludes(tmp_path: Path) -> None:
    cfg, plan = _plan(
        tmp_path, "eval.suites=[canonical,f0.5_d0.5_unaware]", "eval.controllers=[oracle,sift_pbvs]", "eval.episodes=3"
    )
    assert [(j.suite, j.controller) for j in plan.jobs[::3]] == [("canonical", "oracle"), ("canonical", "sift_pbvs")]
    assert {j.seed for j in plan.jobs} == {cfg.eval.seed, cfg.eval.seed + 1, cfg.eval.seed + 2}
    assert plan.checkpoint is None  # no CNSv2 measured, none needed
    _, only = _plan(tmp_path, "eval.suites=[f0.5_d0.5_unaware]", "eval.controllers=[oracle,cnsv2]",
                    "eval.checkpoint=pretrained:cnsv2-cpu", "eval.episodes=2")  # fmt: skip
    assert [j.controller for j in only.jobs] == ["cnsv2", "cnsv2"]  # the unaware suite measures CNSv2 alone
    with pytest.raises(ConfigError, match="measure nothing"):
        _plan(tmp_path, "eval.suites=[f0.5_d0.5_unaware]", "eval.controllers=[oracle]")


@pytest.mark.unit
def test_cnsv2_without_a_checkpoint_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make pipeline"):
        _plan(tmp_path, "eval.controllers=[cnsv2]")
    with pytest.raises(FileNotFoundError, match=r"eval\.checkpoint"):
        _plan(tmp_path, "eval.controllers=[cnsv2_pbvs]", f"eval.checkpoint={tmp_path / 'missing'}")


@pytest.mark.integration
@pytest.mark.slow
def test_oracle_reaches_every_goal_of_the_canonical_suite_and_the_report_is_written(tmp_path: Path) -> None:
    cfg, plan = _plan(tmp_path, "eval.suites=[canonical]", "eval.controllers=[oracle]", "eval.episodes=6")
    results = run_jobs(cfg, plan)
    assert all(ep.success and ep.reason == "stop" for _, ep in results)
    report = write_report(cfg, plan, results)
    rows = json.loads(report.json.read_text())
    row = next(r for r in rows if r["split"] == "all")
    required = "suite controller episodes successes sr te_mm_mean te_mm_std te_mm_median re_deg_mean re_deg_std"
    required += " steps_mean fps"
    assert set(required.split()) <= set(row)
    assert (row["suite"], row["controller"], row["episodes"], row["sr"]) == ("canonical", "oracle", 6, 1.0)
    assert row["te_mm_mean"] < 0.2 and row["fps"] > 0
    splits = [r for r in rows if r["split"] != "all"]
    assert [r["split"] for r in splits] == ["S", "M", "L"] and sum(r["episodes"] for r in splits) == 6
    assert splits[0]["initial_re_deg_max"] <= splits[1]["initial_re_deg_min"]
    text = report.markdown.read_text()
    assert "| canonical | oracle | 6/6 (100 %" in text
    # The setup line is read from the suite's own config (common.yaml + canonical.yaml + these overrides).
    assert "64x64 px, f = 1 W, d* = 1, 50 Hz, at most 600 steps, held-out assets" in text
    assert "initial pose from the desired distribution" in text
    episodes = [json.loads(line) for line in report.episodes.read_text().splitlines()]
    assert sorted(e["seed"] for e in episodes) == [cfg.eval.seed + i for i in range(6)]  # each episode's own seed
    assert {p.name for p in report.images} == {"errors_canonical.png", "paths_canonical.png"}
    assert all(p.stat().st_size > 10_000 for p in report.images)


@pytest.mark.integration
@pytest.mark.slow
def test_ray_actors_give_the_same_episodes_as_one_process(tmp_path: Path, ray_session) -> None:  # type: ignore[no-untyped-def]
    args = ["eval.suites=[canonical,lighting]", "eval.controllers=[oracle]", "eval.episodes=2"]
    cfg, plan = _plan(tmp_path, *args)
    serial = run_jobs(cfg, plan)
    cfg2, plan2 = _plan(tmp_path, *args, "eval.workers=2")
    parallel = run_jobs(cfg2, plan2)
    assert [j for j, _ in parallel] == [j for j, _ in serial]
    for (_, a), (_, b) in zip(serial, parallel, strict=True):
        assert (a.te_m, a.re_deg, a.steps, a.success) == (b.te_m, b.re_deg, b.steps, b.success)


@pytest.mark.integration
def test_cnsv2_controllers_run_from_a_checkpoint(tmp_path: Path) -> None:
    cfg = small_config()
    ckpt = save_checkpoint(build_policy(cfg.policy), tmp_path / "ckpt", version=1)
    plan_args = ["eval.suites=[canonical]", "eval.controllers=[cnsv2,cnsv2_pbvs]", "eval.episodes=1"]
    cfg, plan = _plan(tmp_path, *plan_args, f"eval.checkpoint={ckpt}", "sim.env.max_steps=5")
    results = run_jobs(cfg, plan)
    assert [j.controller for j, _ in results] == ["cnsv2", "cnsv2_pbvs"]
    for _, ep in results:
        assert ep.steps <= 5 and ep.reason  # an untrained policy runs to the limit or loses the scene
        assert ep.trace is not None and len(ep.trace.errors) == ep.steps + 1


@pytest.mark.unit
def test_cnsv2_stops_and_moves_as_its_servo_says() -> None:
    cfg = small_config()
    ctrl = ServoController(build_policy(cfg.policy), stop_velocity=0.01, stop_steps=3, gain=2.0)
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(RuntimeError, match="reset"):
        ctrl.step(img)
    ctrl.reset(img, np.array([[64.0, 0, 31.5], [0, 64.0, 31.5], [0, 0, 1]]), 1.0)
    assert ctrl.servo is not None
    assert (ctrl.servo.stop_velocity, ctrl.servo.stop_steps, ctrl.servo.gain) == (0.01, 3, 2.0)  # one stop rule
    v = np.full(6, 0.1)
    arrived = ServoOutput(v, v, "pbvs", np.zeros(2), np.zeros(2), 0.5, True, 0, 2 * v, True)
    ctrl.servo.step = lambda rgb: arrived  # type: ignore[method-assign]
    out = ctrl.step(img)
    assert out.stop and out.ok and np.array_equal(out.command, 2 * v)
    failed = ServoOutput(np.zeros(6), np.full(6, np.nan), "pbvs", np.zeros(2), np.zeros(2), 0.0, False)
    ctrl.servo.step = lambda rgb: failed  # type: ignore[method-assign]
    out = ctrl.step(img)
    assert not out.ok and not out.stop and "non-finite" in out.info["reason"]
    with pytest.raises(ValueError, match="stop_steps"):
        ServoController(build_policy(cfg.policy), stop_steps=0)


@pytest.mark.integration
@pytest.mark.slow
def test_cli_writes_the_table_and_exits_2_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = small_overrides(QUIET, "run.name=cli", "eval.workers=0", "eval.suites=[canonical]", root=tmp_path)
    assert main([*args, "eval.controllers=[oracle]", "eval.episodes=1", "eval.trajectories=0"]) == 0
    out = capsys.readouterr().out
    assert "eval: 1 episodes (1 successes) over 1 suites" in out
    assert (tmp_path / "cli" / "eval" / "results.md").is_file()
    assert not (tmp_path / "cli" / "eval" / "paths_canonical.png").exists()
    assert "[1/1] canonical/oracle seed" in out  # not a terminal: a line per episode
    assert not (tmp_path / "cli" / "eval" / "episodes.partial.jsonl").exists()  # the full report replaced it
    with pytest.raises(SystemExit) as err:
        main([*args, "eval.suites=[nope]"])
    assert err.value.code == 2


@pytest.mark.integration
def test_a_benchmark_that_dies_keeps_its_episodes_and_resumes_from_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import evaluation.report

    def crash(*_: object) -> None:
        raise RuntimeError("killed while writing the report")

    monkeypatch.setattr(evaluation.report, "write_report", crash)
    args = small_overrides(QUIET, "run.name=dies", "eval.workers=0", "eval.suites=[canonical]", root=tmp_path)
    partial = tmp_path / "dies" / "eval" / "episodes.partial.jsonl"
    partial.parent.mkdir(parents=True)
    partial.write_text('{"seed": -1}\n')  # an earlier unfinished run's line must not survive into this one
    with pytest.raises(RuntimeError, match="killed"):
        main([*args, "eval.controllers=[oracle]", "eval.episodes=2", "eval.trajectories=0"])
    lines = [json.loads(line) for line in partial.read_text().splitlines()]
    assert [(r["controller"], r["seed"], r["success"]) for r in lines] == [
        ("oracle", s, True) for s in (1_000_000, 1_000_001)
    ]
    # Resumed: the first episode is kept as it was logged (a marked TE proves it did not run again), the second,
    # whose line the crash cut short, runs again.
    first = {**lines[0], "te_mm": 1.25}
    partial.write_text(json.dumps(first) + "\n" + json.dumps(lines[1])[:40])
    monkeypatch.undo()
    argv = [*args, "eval.controllers=[oracle]", "eval.episodes=2", "eval.trajectories=0", "eval.resume=true"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "resuming: 1 of 2 episodes kept" in err and "eval: 2 episodes (2 successes, 1 resumed)" in out
    episodes = [json.loads(line) for line in (partial.parent / "episodes.jsonl").read_text().splitlines()]
    assert [e["seed"] for e in episodes] == [1_000_000, 1_000_001]
    assert episodes[0]["te_mm"] == 1.25 and episodes[1]["te_mm"] == pytest.approx(lines[1]["te_mm"])
    assert not partial.exists()
    # A log measured under other settings is refused, not mixed into the table.
    partial.write_text(json.dumps({**first, "settings": "0" * 16}) + "\n")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "measured under other settings" in capsys.readouterr().err


@pytest.mark.integration
def test_ctrl_c_says_how_many_episodes_are_kept_and_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import evaluation.report

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation.report, "write_report", interrupt)
    args = small_overrides(QUIET, "run.name=ctrlc", "eval.workers=0", "eval.suites=[canonical]", root=tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([*args, "eval.controllers=[oracle]", "eval.episodes=1", "eval.trajectories=0"])
    err = capsys.readouterr().err
    partial = tmp_path / "ctrlc" / "eval" / "episodes.partial.jsonl"
    assert exit_.value.code == 130 and "Traceback" not in err
    assert f"interrupted; 1 of 1 episodes are kept in {partial}: add eval.resume=true" in err
    assert len(partial.read_text().splitlines()) == 1


@pytest.mark.integration
def test_every_eval_controller_is_built_by_the_worker(tmp_path: Path) -> None:
    cfg = small_config()
    ckpt = save_checkpoint(build_policy(cfg.policy), tmp_path / "ckpt", version=1)
    names = ",".join(EVAL_CONTROLLERS)
    cfg, plan = _plan(tmp_path, "eval.suites=[canonical]", f"eval.controllers=[{names}]", f"eval.checkpoint={ckpt}")
    worker = EvalWorker(plan.configs, plan.checkpoint)
    try:
        env = worker._env_for("canonical")
        built = {name: worker._controller("canonical", name, env) for name in EVAL_CONTROLLERS}
    finally:
        worker.close()
    assert {n: c.name for n, c in built.items()} == {n: n for n in EVAL_CONTROLLERS}
    assert built["cnsv2"].cfg.hybrid and not built["cnsv2_pbvs"].cfg.hybrid
    limits = cfg.policy.servo
    assert built["sift_pbvs"].limits == (limits.max_linear, limits.max_angular)  # the same speed limits for all


@pytest.mark.unit
def test_the_registry_builds_exactly_the_controllers_the_config_accepts() -> None:
    assert available_controllers() == sorted(EVAL_CONTROLLERS)  # importing evaluation registered "oracle"
    with pytest.raises(ValueError, match=r"'oracle' reads the true pose"):
        make_controller("oracle")


@pytest.mark.integration
@pytest.mark.slow
def test_wandb_gets_the_table_and_the_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # The benchmark's W&B settings are its own: training's mode does not decide whether it logs.
    args = ["eval.suites=[canonical]", "eval.controllers=[oracle]", "eval.episodes=1", "train.wandb.mode=offline"]
    cfg, plan = _plan(tmp_path / "off", *args)
    write_report(cfg, plan, run_jobs(cfg, plan))
    assert not (Path(cfg.eval.root) / "wandb").exists()
    cfg, plan = _plan(tmp_path, *args, "eval.wandb.mode=offline", "train.wandb.mode=disabled")
    write_report(cfg, plan, run_jobs(cfg, plan))
    runs = list((Path(cfg.eval.root) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    tables = list((media / "table" / "eval").glob("results_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    assert (row["suite"], row["controller"], row["sr"]) == ("canonical", "oracle", 1.0)
    images = {p.name.split("_0_")[0] for p in (media / "images" / "eval").glob("*.png")}
    assert images == {"errors_canonical", "paths_canonical"}


@pytest.mark.unit
def test_the_worker_runs_its_job_with_the_suites_speed_limits_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluation.episodes
    from evaluation.plan import Job

    # Two suites with different, asymmetric limits: a swapped pair or another suite's config would show.
    cfgs = {
        "a": small_config(QUIET, "policy.servo.max_linear=0.3", "policy.servo.max_angular=0.7"),
        "b": small_config(QUIET, "policy.servo.max_linear=0.2", "policy.servo.max_angular=0.9"),
    }
    worker = EvalWorker(cfgs, None)
    monkeypatch.setattr(worker, "_env_for", lambda suite: f"env {suite}")
    monkeypatch.setattr(worker, "_controller", lambda suite, name, env: f"{name} in {env}")
    calls = []

    def spy(env, controller, seed, **kw):  # type: ignore[no-untyped-def]
        calls.append((env, controller, seed, kw.get("limits")))
        return "episode"

    monkeypatch.setattr(evaluation.episodes, "run_episode", spy)
    assert worker.run(Job("b", "oracle", 17)) == (Job("b", "oracle", 17), "episode")
    assert worker.run(Job("a", "sift_pbvs", 3))[1] == "episode"
    assert calls == [
        ("env b", "oracle in env b", 17, (0.2, 0.9)),
        ("env a", "sift_pbvs in env a", 3, (0.3, 0.7)),
    ]
