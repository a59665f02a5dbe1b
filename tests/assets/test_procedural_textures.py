"""Procedural textures, flat colours and skies: right type and shape, real variation, reproducible, tileable."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from assets.procedural_textures import TEXTURE_FAMILIES, make_sky, make_texture, random_color, random_palette

pytestmark = pytest.mark.unit

TILEABLE = ("checker", "stripes", "noise", "voronoi", "dots", "patches", "marble")


def _seam_is_like_the_interior(image: np.ndarray, axis: int) -> bool:
    """The step across the wrap-around edge is no larger than the largest step between neighbouring lines inside."""
    a = image.astype(np.float64)
    steps = np.abs(np.diff(a, axis=axis)).mean(axis=(1 - axis, 2))
    wrap = np.abs(np.take(a, -1, axis=axis) - np.take(a, 0, axis=axis)).mean()
    return wrap <= steps.max() + 1.0


def test_there_are_at_least_seven_families() -> None:
    assert len(TEXTURE_FAMILIES) >= 7


@pytest.mark.parametrize("family", TEXTURE_FAMILIES)
def test_uint8_square_rgb_with_real_variation(family: str) -> None:
    for seed in range(5):
        t = make_texture(family, np.random.default_rng(seed))
        assert t.dtype == np.uint8 and t.shape == (256, 256, 3)
        assert t.reshape(-1, 3).std(axis=0).max() > 8, (family, seed)
        assert len(np.unique(t.reshape(-1, 3)[::97], axis=0)) > 1


@pytest.mark.parametrize("family", TEXTURE_FAMILIES)
def test_size_argument(family: str) -> None:
    assert make_texture(family, np.random.default_rng(0), size=64).shape == (64, 64, 3)


@pytest.mark.parametrize("family", TEXTURE_FAMILIES)
def test_same_seed_same_texture_and_different_seeds_differ(family: str) -> None:
    a = make_texture(family, np.random.default_rng(3), size=96)
    b = make_texture(family, np.random.default_rng(3), size=96)
    c = make_texture(family, np.random.default_rng(4), size=96)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("family", TILEABLE)
def test_tileable_families_have_no_seam(family: str) -> None:
    for seed in range(5):
        t = make_texture(family, np.random.default_rng(seed), size=128)
        assert _seam_is_like_the_interior(t, axis=0) and _seam_is_like_the_interior(t, axis=1), (family, seed)


def test_the_seam_check_catches_a_seam() -> None:
    ramp = np.repeat(np.linspace(0, 255, 128)[None, :, None], 128, axis=0).repeat(3, axis=2).astype(np.uint8)
    assert not _seam_is_like_the_interior(ramp, axis=1)


def test_unknown_family_and_bad_size() -> None:
    with pytest.raises(ValueError, match=r"unknown texture family 'plaid'.*checker"):
        make_texture("plaid", np.random.default_rng(0))
    with pytest.raises(ValueError, match="size"):
        make_texture("checker", np.random.default_rng(0), size=2)


def test_random_colours_are_varied_and_mostly_not_saturated_primaries() -> None:
    rng = np.random.default_rng(0)
    colours = [random_color(rng) for _ in range(400)]
    assert all(isinstance(c, float) and 0.0 <= c <= 1.0 for rgb in colours for c in rgb)
    hsv = np.array([colorsys.rgb_to_hsv(*rgb) for rgb in colours])
    hue, sat, val = hsv.T
    assert np.histogram(hue[sat > 0.2], bins=6, range=(0, 1))[0].min() > 5  # every part of the colour wheel
    assert 0.2 < np.median(sat) < 0.7
    assert (sat < 0.15).mean() > 0.05  # some greys and near-whites
    assert ((sat > 0.95) & (val > 0.95)).mean() < 0.05  # few pure, bright primaries
    assert np.ptp(val) > 0.6


def test_palette_colours_differ_in_brightness() -> None:
    for seed in range(20):
        palette = random_palette(np.random.default_rng(seed), 4)
        assert palette.shape == (4, 3) and palette.min() >= 0 and palette.max() <= 1
        luminance = palette @ [0.299, 0.587, 0.114]
        assert np.ptp(luminance) > 0.1, seed


def test_sky_shape_bright_sky_dark_ground_and_wraps_around() -> None:
    for seed in range(8):
        sky = make_sky(np.random.default_rng(seed), width=256)
        assert sky.dtype == np.uint8 and sky.shape == (128, 256, 3)
        upper, lower = sky[:64].astype(float).mean(), sky[64:].astype(float).mean()
        assert upper > lower, seed
        assert sky[:64].std() > 1.0  # a gradient, not a flat fill
        assert _seam_is_like_the_interior(sky, axis=1), seed
    assert np.array_equal(make_sky(np.random.default_rng(1)), make_sky(np.random.default_rng(1)))
    assert make_sky(np.random.default_rng(1)).shape == (256, 512, 3)
    with pytest.raises(ValueError, match="even"):
        make_sky(np.random.default_rng(0), width=101)
