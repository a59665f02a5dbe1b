"""Mutation testing of the modules where a silent bug costs most, one module at a time against its own tests.

    make mutation                               # every module below, policy/servo.py last
    make mutation MODULE=evaluation/metrics.py  # one module
    python -m tests.mutation --list             # the modules and their tests

mutmut 3 (pinned in the dev extra; its shared settings are [tool.mutmut] in pyproject.toml) copies the packages
into mutants/, mutates the one module, runs the module's tests once to learn which test reaches which function, then
runs each mutant against only the tests that reach its function. mutants/ is wiped before each module, since the
test selection differs between modules. The scores go to runs/mutation/scores.md (one row per module, kept across
runs) and each module's survivors, as diffs, to runs/mutation/<module>.survivors.md.

Score = (killed + timeout) / (mutants - judged equivalent). A timeout is a mutant that made its tests run 30 times
longer than measured (an endless loop): detected. Survivors judged equivalent are listed, with the mutated line and
why, in docs/mutation-survivors.md; an entry whose line no longer matches its mutant's diff (the function changed
and mutmut renumbered) is ignored and reported as stale.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "mutation"
EQUIVALENT_DOC = ROOT / "docs" / "mutation-survivors.md"
TARGET = 85.0
# Every test these modules select takes under 7 s on the 2-core machine when it shares the cores (--durations).
TEST_TIMEOUT_S = 30
SLOWEST = 10  # mutants listed, with their seconds, at the end of each module's survivors file


@dataclass(frozen=True)
class Module:
    tests: str  # pytest arguments, shell-quoted: files, node ids, -m expressions
    functions: str = ""  # mutate only these functions or Class.methods (space-separated); the whole module when empty
    # Wall seconds each selected test gets under a mutant: a mutant that makes a test wait for what never comes is
    # detected after this long, so a module whose tests are all short gets a shorter limit.
    timeout_s: int = TEST_TIMEOUT_S

    def patterns(self, path: str) -> list[str]:
        """mutmut mutant-name globs: module.x_function__mutmut_N, module.xǁClassǁmethod__mutmut_N."""
        dotted = path.removesuffix(".py").replace("/", ".")
        out = []
        for f in self.functions.split() or ["*"]:
            cls, _, fn = f.rpartition(".")
            out.append(f"{dotted}.xǁ{cls}ǁ{fn}__mutmut_*" if cls else f"{dotted}.x_{fn}__mutmut_*")
        return out if self.functions else [f"{dotted}.*"]


# Each module against the tests that check it against an independent truth. Ray, CLI and child-process tests are
# left out: a mutant lives in a forked worker, and Ray workers and child processes would import the unmutated code.
MODULES: dict[str, Module] = {
    "policy/control.py": Module(
        "tests/policy/test_control_visp.py tests/policy/test_control_properties.py tests/policy/test_control_limits.py "
        "tests/policy/test_control_edges.py tests/policy/test_rotation.py -m 'not slow'"
    ),
    "evaluation/metrics.py": Module("tests/evaluation/test_metrics.py tests/evaluation/test_episode_success.py"),
    "evaluation/episodes.py": Module(
        "tests/evaluation/test_episode_success.py tests/evaluation/test_episode_loop.py "
        "tests/evaluation/test_episodes.py -m 'not slow'"
    ),
    "evaluation/plan.py": Module(
        "tests/evaluation/test_plan.py tests/evaluation/test_report_assets.py tests/evaluation/test_runner.py "
        "-m 'unit and not slow'",
        "make_plan check_plan_assets resolve_checkpoint prepare_export",
    ),
    "evaluation/openloop.py": Module("tests/evaluation/test_openloop.py", "stop_norms ambiguity_probe"),
    "evaluation/partial.py": Module("tests/evaluation/test_partial.py"),
    # The producers' tests that render least; -k keeps the ones about each producer.
    "datagen/hemisphere.py": Module(
        "tests/datagen/test_producers.py tests/datagen/test_images_match_poses.py "
        "-k '(hemisphere or near_goal) and not refused'",
        "shard_count HemisphereProducer.indices HemisphereProducer._n_samples HemisphereProducer.make_shard",
    ),
    "datagen/dagger.py": Module(
        # -k matches module names too: every test of test_dagger_rollouts.py (a stand-in renderer) is selected.
        "tests/datagen/test_dagger_rollouts.py tests/datagen/test_producers.py "
        "tests/datagen/test_images_match_poses.py -k 'dagger or sidecars'",
        "weights_by_push DaggerProducer.make_shard DaggerProducer._servo DaggerProducer.run "
        "DaggerProducer._swap_pending DaggerProducer._install DaggerProducer._owns DaggerProducer._next_index "
        "DaggerProducer._owned_from DaggerProducer._published_samples",
        # Its slowest test takes 2.5 s alone; a mutant that leaves a test waiting (for weights, for a stop) is caught
        # in 10 s instead of 30.
        timeout_s=10,
    ),
    "training/trainer.py": Module(
        "tests/training/test_trainer.py tests/training/test_trainer_step.py -m unit",
        "_optimiser_step _to_device _batch_metrics _due _prune check_input_size TrainState.*",
    ),
    "training/dataset.py": Module("tests/training/test_dataset.py tests/training/test_dataset_stream.py -m 'not slow'"),
    # Measured last: its stop rule and gain were reworked last.
    "policy/servo.py": Module(
        "tests/policy/test_servo.py tests/policy/test_servo_wiring.py tests/policy/test_registry.py "
        "tests/evaluation/test_runner.py::test_cnsv2_stops_and_moves_as_its_servo_says"
    ),
}

# Runs in a fresh interpreter: mutmut reads its configuration once, at import, so the module and its tests are set
# on top of [tool.mutmut] before mutmut.__main__ is imported.
_CHILD = """
import dataclasses, json, sys
import mutmut.configuration as c
spec = json.loads(sys.argv[1])
base = c._load_config()
c._config = dataclasses.replace(base, only_mutate=[spec["path"]], pytest_add_cli_args_test_selection=spec["tests"],
                                pytest_add_cli_args=[*base.pytest_add_cli_args, *spec["always"]])
from mutmut.__main__ import cli
cli(["run", "--max-children", str(spec["jobs"]), *spec["patterns"]])
"""

KILLED = {1: "killed", 3: "killed"}
SURVIVED = {0: "survived", 5: "no tests", 33: "no tests"}
TIMEOUT = {36, 24, -24, 152, 255, -9}  # mutmut's timeout codes, and SIGKILL one second after the CPU limit


def _status(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in TIMEOUT:
        return "timeout"
    return "other"  # not checked, suspicious, segfault: listed with the survivors, counted against the score


def judged_equivalent() -> dict[str, str]:
    """{mutant name: its mutated line} from docs/mutation-survivors.md (lines "- `name`: `mutated line` — why")."""
    if not EQUIVALENT_DOC.exists():
        return {}
    found = re.findall(r"^- `(\S+__mutmut_\d+)`: `(.+?)`", EQUIVALENT_DOC.read_text(), flags=re.M)
    return dict(found)


def _plus_lines(diff: str) -> set[str]:
    return {ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")}


def _diff(name: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    try:
        return get_diff_for_mutant(name, path=path)
    except Exception as err:  # a diff is a courtesy; the score does not depend on it
        return f"(no diff: {err})"


def run_module(path: str, jobs: int) -> dict:
    """Mutate `path`, run its tests against every mutant, keep the verdicts (and survivors' diffs), and score them."""
    import fnmatch

    mod = MODULES[path]
    patterns = mod.patterns(path)
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    # mutmut's own limits are generous ((estimated + 1) x 15 s), so a mutant that loops or turns a poll into a long
    # sleep would hold a worker for minutes; a test past mod.timeout_s of wall clock fails instead (pytest-timeout),
    # which detects the mutant. The limit goes with the arguments of every run: mutmut drops the selection's
    # arguments (-m, -k, files) once it names each mutant's tests, so a limit among them applied to no mutant.
    # (pytest-timeout's signal method: its thread method, which ends the process, left forked workers waiting on a
    # lock forever.) Name globs only where the module is restricted to some functions (mutmut then lists every
    # mutant's verdict).
    always = [f"--timeout={mod.timeout_s}"]
    spec = {"path": path, "tests": shlex.split(mod.tests), "always": always, "jobs": jobs}
    spec["patterns"] = patterns if mod.functions else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env["CNSV2_HYPOTHESIS_PROFILE"] = "mutation"  # 50 property examples per test instead of 200
    t0 = time.monotonic()
    rc = subprocess.call([sys.executable, "-c", _CHILD, json.dumps(spec)], cwd=ROOT, env=env)
    wall = time.monotonic() - t0
    meta = ROOT / "mutants" / f"{path}.meta"
    if rc != 0 or not meta.exists():
        raise SystemExit(f"mutmut failed on {path} (exit {rc}); rerun with debug = true under [tool.mutmut]")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    diffs = {k: _diff(k, path) for k, v in codes.items() if _status(v) in ("survived", "other")}
    results = {"codes": codes, "diffs": diffs, "wall_s": round(wall), "date": date.today().isoformat()}
    results["seconds"] = _mutant_seconds(ROOT / "mutants" / "mutant-seconds.jsonl")
    OUT.mkdir(parents=True, exist_ok=True)
    _results_file(path).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return score(path)


def _mutant_seconds(log: Path) -> dict[str, float]:
    """{mutant: wall seconds of its tests} from the lines tests/conftest.py appends under each mutant; a mutant that
    mutmut itself ended (its CPU or wall limit) never writes one."""
    if not log.exists():
        return {}
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.strip())
    return {d["mutant"]: float(d["seconds"]) for d in lines}


def _results_file(path: str) -> Path:
    return OUT / f"{path.replace('/', '.')}.results.json"


def score(path: str) -> dict:
    """The row of `path` from its last run's verdicts and the equivalents listed now; writes its survivors file."""
    results = json.loads(_results_file(path).read_text())
    codes, diffs = results["codes"], results["diffs"]
    status = {k: _status(v) for k, v in codes.items()}
    judged = judged_equivalent()
    equivalent, survivors = [], []
    for name in sorted(diffs):
        if name in judged and judged[name].strip() in _plus_lines(diffs[name]):
            equivalent.append(name)
        else:
            survivors.append(name)
    prefix = path.removesuffix(".py").replace("/", ".") + "."
    stale = sorted(n for n in judged if n.startswith(prefix) and n not in equivalent)
    if stale:
        print(f"{path}: entries of {EQUIVALENT_DOC.relative_to(ROOT)} that excuse no survivor now: {stale}")
    killed = sum(s == "killed" for s in status.values())
    timeout = sum(s == "timeout" for s in status.values())
    counted = len(codes) - len(equivalent)
    row = {
        "module": path,
        "mutants": len(codes),
        "killed": killed,
        "survived": len(survivors),
        "equivalent": len(equivalent),
        "timeout": timeout,
        "score": 100.0 * (killed + timeout) / counted if counted else 100.0,
        "wall_s": results["wall_s"],
        "date": results["date"],
    }
    lines = [f"# Surviving mutants of {path} ({row['date']}): {len(survivors)}", ""]
    lines += [f"Entries in {EQUIVALENT_DOC.relative_to(ROOT)} that excuse no survivor now: {stale}", ""] * bool(stale)
    for name in survivors:
        lines += [f"## {name} ({_status(codes[name])})", "", "```diff", diffs[name], "```", ""]
    lines += ["## Judged equivalent", ""] + [f"- {n}" for n in equivalent]
    seconds = results.get("seconds", {})
    if seconds:
        slow = sorted(seconds.items(), key=lambda kv: -kv[1])[:SLOWEST]
        lines += ["", f"## Where the time went: {sum(seconds.values()):.0f} s of tests over {len(seconds)} mutants", ""]
        lines += [f"- {s:.1f} s `{n}` ({status[n]})" for n, s in slow if n in status]
    (OUT / f"{path.replace('/', '.')}.survivors.md").write_text("\n".join(lines) + "\n")
    return row


def table(rows: list[dict]) -> str:
    head = "| module | mutants | killed | survived | equivalent | timeout | score | wall |"
    out = [head, "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        flag = "" if r["score"] >= TARGET else " ✗"
        out.append(
            f"| {r['module']} | {r['mutants']} | {r['killed']} | {r['survived']} | {r['equivalent']} | "
            f"{r['timeout']} | {r['score']:.1f} %{flag} | {r['wall_s'] // 60}m{r['wall_s'] % 60:02d}s |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modules", nargs="*", help="module paths, e.g. evaluation/metrics.py (default: all)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants run in parallel")
    p.add_argument("--list", action="store_true", help="print the modules and their tests, and exit")
    p.add_argument("--rescore", action="store_true", help="score the last run again (after judging survivors)")
    a = p.parse_args(argv)
    if a.list:
        for path, mod in MODULES.items():
            print(f"{path}: {mod.tests}" + f"  [functions: {mod.functions}]" * bool(mod.functions))
        return 0
    paths = [m.removeprefix("./") for m in a.modules] or list(MODULES)
    unknown = [m for m in paths if m not in MODULES]
    if unknown:
        p.error(f"not a mutation-tested module: {unknown}; choose from {list(MODULES)}")
    scores = OUT / "scores.json"
    rows = {r["module"]: r for r in json.loads(scores.read_text())} if scores.exists() else {}
    if a.rescore:
        paths = [m for m in paths if _results_file(m).exists()]
    for path in paths:
        if not a.rescore:
            print(f"== mutation testing {path}: make mutation MODULE={path}", flush=True)
        rows[path] = score(path) if a.rescore else run_module(path, a.jobs)
        ordered = [rows[m] for m in MODULES if m in rows]
        OUT.mkdir(parents=True, exist_ok=True)
        scores.write_text(json.dumps(ordered, indent=1))
        (OUT / "scores.md").write_text(
            f"Reproduce: `make mutation` (one module: `make mutation MODULE=<path>`)\n\n{table(ordered)}\n"
        )
    ran = [rows[m] for m in paths]
    print(table(ran))
    print(f"\nTable: {(OUT / 'scores.md').relative_to(ROOT)}; survivors: {OUT.relative_to(ROOT)}/<module>.survivors.md")
    print(f"Reproduce: make mutation{' MODULE=' + ' '.join(a.modules) if a.modules else ''}")
    return 0 if all(r["score"] >= TARGET for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
