"""Procedural textures, flat colours and skies drawn from a numpy Generator (vectorised numpy, no other dependency).

Every texture family except `gradient` and `wood` tiles seamlessly: its pattern repeats a whole number of times
across the image, so a renderer may repeat it on a large ground plane or across a UV seam without a visible edge.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TEXTURE_FAMILIES: tuple[str, ...] = (
    "checker",
    "stripes",
    "noise",
    "voronoi",
    "gradient",
    "dots",
    "patches",
    "marble",
    "wood",
)


def make_texture(family: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A random RGB uint8 (size, size, 3) texture of `family`."""
    builder = _BUILDERS.get(family)
    if builder is None:
        raise ValueError(f"unknown texture family {family!r}; expected one of: {', '.join(TEXTURE_FAMILIES)}")
    if size < 8:
        raise ValueError(f"texture size must be at least 8 pixels, got {size}")
    return _to_uint8(builder(rng, int(size)))


def random_color(rng: np.random.Generator) -> tuple[float, float, float]:
    """One plausible material colour, RGB in [0, 1], for textureless objects."""
    r, g, b = random_palette(rng, 1)[0]
    return float(r), float(g), float(b)


def random_palette(rng: np.random.Generator, k: int) -> np.ndarray:
    """k colours (k, 3) in [0, 1] that belong together: analogous, complementary, triadic, neutral or earthy."""
    scheme = rng.choice(["analogous", "complementary", "triad", "neutral", "earthy"], p=[0.3, 0.2, 0.15, 0.15, 0.2])
    base = rng.random()
    if scheme == "analogous":
        hue = base + rng.uniform(-0.08, 0.08, size=k)
    elif scheme == "complementary":
        hue = base + 0.5 * rng.integers(0, 2, size=k) + rng.uniform(-0.03, 0.03, size=k)
    elif scheme == "triad":
        hue = base + rng.integers(0, 3, size=k) / 3 + rng.uniform(-0.03, 0.03, size=k)
    elif scheme == "earthy":
        hue = rng.uniform(0.02, 0.16, size=k)  # browns, ochres, olives: the colours of wood, soil and cardboard
    else:
        hue = np.full(k, base)
    if scheme == "neutral":
        sat = rng.uniform(0.0, 0.12, size=k)
    elif scheme == "earthy":
        sat = rng.uniform(0.2, 0.7, size=k)
    else:
        # Beta(2, 2) keeps most colours at mid saturation: real surfaces are rarely pure primaries.
        sat = rng.beta(2.0, 2.0, size=k)
    # Spread the values so that any two palette colours differ in brightness: a texture must show contrast
    # even to a grey-scale feature extractor.
    lo, hi = rng.uniform(0.08, 0.4), rng.uniform(0.7, 1.0)
    val = rng.permutation(np.linspace(lo, hi, k)) if k > 1 else rng.uniform(0.15, 0.95, size=1)
    return _hsv_to_rgb(hue % 1.0, sat, np.clip(val + rng.uniform(-0.05, 0.05, size=k), 0.0, 1.0))


def make_sky(rng: np.random.Generator, width: int = 512) -> np.ndarray:
    """An equirectangular sky (width // 2, width, 3) uint8: horizon-to-zenith gradient, soft clouds, darker ground."""
    if width < 16 or width % 2:
        raise ValueError(f"sky width must be even and at least 16, got {width}")
    h, w = width // 2, width
    # Row 0 looks straight up (elevation +90 degrees), the middle row at the horizon, the last row straight down.
    elevation = (0.5 - (np.arange(h) + 0.5) / h) * np.pi
    kind = rng.choice(["clear", "overcast", "sunset", "dusk"], p=[0.45, 0.2, 0.2, 0.15])
    jitter = rng.uniform(-0.04, 0.04, size=3)
    zenith_hsv, horizon_hsv = {
        "clear": ((0.58, 0.65, 0.75), (0.56, 0.25, 0.95)),
        "overcast": ((0.6, 0.08, 0.7), (0.6, 0.04, 0.85)),
        "sunset": ((0.62, 0.5, 0.5), (0.07, 0.6, 0.98)),
        "dusk": ((0.7, 0.5, 0.3), (0.9, 0.35, 0.7)),
    }[str(kind)]
    zenith = _hsv_to_rgb(*(np.clip(np.array(zenith_hsv) + jitter, 0.0, 1.0)[:, None]))[0]
    horizon = _hsv_to_rgb(*(np.clip(np.array(horizon_hsv) + jitter, 0.0, 1.0)[:, None]))[0]
    up = np.clip(elevation / (np.pi / 2), 0.0, 1.0) ** rng.uniform(0.35, 0.9)
    sky = horizon + (zenith - horizon) * up[:, None]
    image = np.broadcast_to(sky[:, None, :], (h, w, 3)).copy()

    if kind == "overcast" or rng.random() < 0.7:
        # Cloud noise repeats across the width, so the image wraps around the azimuth without a seam.
        clouds = _fractal_noise(rng, (h, w), (4, 8), octaves=5, gain=0.55)
        cover = rng.uniform(0.3, 0.75) if kind != "overcast" else rng.uniform(0.7, 0.95)
        density = _smoothstep(1.0 - cover, 1.0 - cover + 0.35, clouds)
        density *= _smoothstep(0.0, 0.25, elevation)[:, None]  # clouds thin out into the haze at the horizon
        shade = rng.uniform(0.75, 1.0)
        cloud_colour = shade * (0.8 + 0.2 * horizon)
        image += (cloud_colour - image) * (density * rng.uniform(0.6, 0.95))[..., None]

    # Soil, grass, rock or asphalt: hues from brown to green, muted, and darker than the sky above.
    ground = _hsv_to_rgb(rng.uniform(0.04, 0.3), rng.uniform(0.05, 0.5), rng.uniform(0.15, 0.45))
    below = elevation < 0
    depth = np.clip(-elevation / (np.pi / 2), 0.0, 1.0)[below]
    grain = 0.85 + 0.3 * _fractal_noise(rng, (int(below.sum()), w), (8, 32), octaves=3, gain=0.5)
    image[below] = ground * (1.0 - 0.5 * depth)[:, None, None] * grain[..., None]
    return _to_uint8(image)


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in [0, 1]) to RGB (..., 3)."""
    h, s, v = np.broadcast_arrays(np.asarray(h, float), np.asarray(s, float), np.asarray(v, float))
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Smoothly interpolated random lattice values in [0, 1], periodic over the image in both directions."""
    h, w = shape
    gy, gx = cells
    lattice = rng.random((gy, gx)).astype(np.float32)

    def axis(n: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = np.arange(n, dtype=np.float32) * (g / n)
        i0 = np.floor(p).astype(np.intp)
        f = p - i0
        return i0 % g, (i0 + 1) % g, (f * f * (3 - 2 * f)).astype(np.float32)

    y0, y1, fy = axis(h, gy)
    x0, x1, fx = axis(w, gx)
    # Separable: interpolate the lattice rows along x first (gy x w), then those rows along y (h x w).
    rows = lattice[:, x0] + (lattice[:, x1] - lattice[:, x0]) * fx
    return rows[y0] + (rows[y1] - rows[y0]) * fy[:, None]


def _fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int], octaves: int = 5, gain: float = 0.5
) -> np.ndarray:
    """Sum of value-noise octaves (each twice as fine), stretched to span [0, 1]."""
    h, w = shape
    total = np.zeros(shape, dtype=np.float32)
    amplitude = 1.0
    for o in range(octaves):
        gy, gx = min(cells[0] << o, h), min(cells[1] << o, w)
        total += amplitude * _value_noise(rng, shape, (gy, gx))
        amplitude *= gain
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def _palette_map(t: np.ndarray, palette: np.ndarray, smooth: bool = True) -> np.ndarray:
    """Map t in [0, 1] through palette stops, blended (smooth) or as hard bands."""
    k = len(palette)
    if not smooth:
        return palette[np.minimum((t * k).astype(np.intp), k - 1)]
    x = np.clip(t, 0.0, 1.0) * (k - 1)
    i = np.minimum(x.astype(np.intp), k - 2)
    f = (x - i)[..., None]
    return palette[i] * (1.0 - f) + palette[i + 1] * f


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in tile units: 0 at the first pixel, 1 one tile later (so integer periods tile)."""
    t = np.arange(size, dtype=np.float32) / size
    return t[:, None], t[None, :]


# ---------------------------------------------------------------------------------------------------------------------
# families (each returns float RGB in [0, 1])


def _checker(rng: np.random.Generator, size: int) -> np.ndarray:
    nx, ny = rng.integers(2, 17, size=2) if rng.random() < 0.3 else (int(rng.integers(2, 17)),) * 2
    y, x = _grid(size)
    parity = (np.floor(x * nx).astype(np.intp) + np.floor(y * ny).astype(np.intp)) % 2
    return random_palette(rng, 2)[parity]


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    # An integer wave vector is what makes a stripe at any angle tile: the phase advances by whole cycles per tile.
    while True:
        kx, ky = rng.integers(-8, 9, size=2)
        if kx or ky:
            break
    y, x = _grid(size)
    phase = (kx * x + ky * y) % 1.0
    palette = random_palette(rng, int(rng.integers(2, 5)))
    if rng.random() < 0.5:
        return _palette_map(phase, palette, smooth=False)
    return _palette_map(0.5 + 0.5 * np.sin(2 * np.pi * phase), palette)


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    base = int(rng.integers(2, 9))
    t = _fractal_noise(rng, (size, size), (base, base), octaves=int(rng.integers(3, 7)), gain=rng.uniform(0.4, 0.7))
    return _palette_map(t, random_palette(rng, int(rng.integers(2, 6))))


def _voronoi(rng: np.random.Generator, size: int) -> np.ndarray:
    n = int(rng.integers(8, 48))
    seeds = rng.random((n, 2)).astype(np.float32)
    t = np.arange(size, dtype=np.float32) / size
    # Distances on the torus (wrap-around), so the cells tile; separable per axis, combined one seed at a time.
    dy = np.abs(t[None, :] - seeds[:, 0:1])
    dx = np.abs(t[None, :] - seeds[:, 1:2])
    dy2, dx2 = np.minimum(dy, 1 - dy) ** 2, np.minimum(dx, 1 - dx) ** 2
    d1 = np.full((size, size), np.inf, dtype=np.float32)
    d2 = np.full((size, size), np.inf, dtype=np.float32)
    owner = np.zeros((size, size), dtype=np.intp)
    for k in range(n):
        d = dy2[k][:, None] + dx2[k][None, :]
        closer = d < d1
        d2 = np.where(closer, d1, np.minimum(d2, d))
        d1 = np.where(closer, d, d1)
        owner[closer] = k
    palette = random_palette(rng, int(rng.integers(3, 7)))
    image = palette[rng.integers(0, len(palette), size=n)][owner]
    if rng.random() < 0.6:
        # F2 - F1 is small only near a cell border, so thresholding it draws grout lines between the cells.
        border = _smoothstep(0.0, rng.uniform(0.004, 0.02), np.sqrt(d2) - np.sqrt(d1))
        image = image * (0.35 + 0.65 * border[..., None])
    return image


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size)
    if rng.random() < 0.6:
        a = rng.uniform(0, 2 * np.pi)
        t = (x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a)
    else:
        cy, cx = rng.uniform(-0.2, 1.2, size=2)
        t = np.hypot(x - cx, y - cy)
    t = (t - t.min()) / (t.max() - t.min())
    return _palette_map(t, random_palette(rng, int(rng.integers(2, 5))))


def _dots(rng: np.random.Generator, size: int) -> np.ndarray:
    n = 2 * int(rng.integers(2, 7))  # even, so the half-cell offset of staggered rows still tiles
    y, x = _grid(size)
    row = np.floor(y * n)
    shift = 0.5 * (row % 2) if rng.random() < 0.5 else 0.0
    fy, fx = y * n - row, (x * n + shift) % 1.0
    d = np.hypot(fx - 0.5, fy - 0.5)
    radius = rng.uniform(0.15, 0.45)
    edge = 1.5 * n / size  # one and a half pixels of anti-aliasing, in cell units
    inside = _smoothstep(radius + edge, radius - edge, d)[..., None]
    palette = random_palette(rng, int(rng.integers(2, 5)))
    if rng.random() < 0.5:
        fg = palette[1]
    else:
        cell = (row.astype(np.intp) * n + np.floor(x * n + shift).astype(np.intp) % n) % (n * n)
        fg = palette[1:][rng.integers(0, len(palette) - 1, size=n * n)][cell]
    return palette[0] * (1.0 - inside) + fg * inside


def _patches(rng: np.random.Generator, size: int) -> np.ndarray:
    palette = random_palette(rng, int(rng.integers(3, 7)))
    image = np.empty((size, size, 3))
    image[:] = palette[0]
    for _ in range(int(rng.integers(10, 40))):
        h, w = (rng.uniform(0.05, 0.4, size=2) * size).astype(int) + 1
        y0, x0 = rng.integers(0, size, size=2)
        # Indices modulo the size wrap a rectangle across the border, so the patchwork tiles.
        image[np.ix_((y0 + np.arange(h)) % size, (x0 + np.arange(w)) % size)] = palette[rng.integers(0, len(palette))]
    return image


def _marble(rng: np.random.Generator, size: int) -> np.ndarray:
    while True:
        kx, ky = rng.integers(-4, 5, size=2)
        if kx or ky:
            break
    y, x = _grid(size)
    turbulence = _fractal_noise(rng, (size, size), (4, 4), octaves=5, gain=0.55)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * (kx * x + ky * y + rng.uniform(1.0, 4.0) * turbulence))
    # A sharp power makes thin dark veins in a light stone rather than an even sine.
    t = t ** rng.uniform(0.3, 3.0)
    return _palette_map(t, random_palette(rng, int(rng.integers(2, 4))))


def _wood(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size)
    cy, cx = rng.uniform(-1.5, 2.5, size=2)
    warp = _fractal_noise(rng, (size, size), (3, 3), octaves=4, gain=0.5)
    rings = (np.hypot((x - cx) * rng.uniform(0.3, 1.0), y - cy) * rng.uniform(6, 30) + 2.0 * warp) % 1.0
    t = rings ** rng.uniform(1.5, 4.0)
    hue = rng.uniform(0.04, 0.11)
    light = _hsv_to_rgb(hue, rng.uniform(0.35, 0.6), rng.uniform(0.6, 0.9))
    dark = _hsv_to_rgb(hue, rng.uniform(0.5, 0.8), rng.uniform(0.2, 0.45))
    return light + (dark - light) * t[..., None]


_BUILDERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "checker": _checker,
    "stripes": _stripes,
    "noise": _noise,
    "voronoi": _voronoi,
    "gradient": _gradient,
    "dots": _dots,
    "patches": _patches,
    "marble": _marble,
    "wood": _wood,
}
assert set(_BUILDERS) == set(TEXTURE_FAMILIES)
