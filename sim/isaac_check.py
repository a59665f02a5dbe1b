"""`python -m sim.isaac_check`: the first thing to run on an RTX machine with Isaac Sim, before any data is made.

What it renders and checks (each against an answer computed here, not against another renderer):

- sky: a sky with a red cap around the zenith, a blue mark towards world +X and a green one towards world +Y
  (on the horizon), seen from the origin along +-X, +-Y and +-Z. Each mark must show in its own direction and
  nowhere else; a dome on its side or turned about the vertical names where its marks went.
- K routes: the camera contract's plate (sim/camera_contract.py) through off-centre, non-square pinhole cameras,
  once with K in the USD aperture offsets and once in the OpenCV pinhole lens schema. The depth annotator's
  mask must equal the analytic projection pixel for pixel; the table says which route the renderer honours (and,
  from the mask's centroid, by how much the other one is off), and the check fails loudly when neither is exact
  or when the route the backend uses (CNSV2_ISAAC_K_ROUTE, default lens) is not the one that works.
- anti-aliasing: a dark plate's slanted edge against the plain dome. Every edge pixel must be plate or background;
  a blend of the two means anti-aliasing, DLSS or a denoiser is smoothing the frame.

It prints a table and one PASS/FAIL line, writes runs/isaac_check/isaac_check.png (each rendered view beside the
expected one), and, with --frames > 0, the render time per frame at 256 and 512 px and isaac_vs_mujoco.png.
Exits 0 when every required check passes, 1 when one fails and 2 when Isaac Sim cannot run here.

The checks themselves are pure functions of images (tested on CPU with synthetic renders); only `main` needs Isaac.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sim.camera import Camera
from sim.camera_contract import DEPTH_TOL, TIE_PX, analytic
from sim.geometry import look_at
from sim.validate import as_pose

COMMAND = "python -m sim.isaac_check"

# ------------------------------------------------------------------------------------------------------------ rows


@dataclass(frozen=True)
class CheckRow:
    """One line of the table. Rows with required=False inform (which K route works) without failing the run."""

    check: str
    measured: str
    expected: str
    ok: bool
    required: bool = True


def format_table(rows: Sequence[CheckRow]) -> str:
    """The rows as a Markdown table: check, measured, expected, result (pass/FAIL, or yes/no for information)."""
    lines = ["| check | measured | expected | result |", "|---|---|---|---|"]
    for r in rows:
        result = ("pass" if r.ok else "FAIL") if r.required else ("yes" if r.ok else "no")
        lines.append(f"| {r.check} | {r.measured} | {r.expected} | {result} |")
    return "\n".join(lines)


def verdict_line(rows: Sequence[CheckRow]) -> str:
    """One line: PASS with the count of required checks, or FAIL naming each failed check and what was measured."""
    required = [r for r in rows if r.required]
    if not required:
        raise ValueError("verdict_line: no required check among the rows")
    failed = [r for r in required if not r.ok]
    if not failed:
        return f"isaac check: PASS ({len(required)}/{len(required)} required checks)"
    return "isaac check: FAIL: " + "; ".join(f"{r.check}: {r.measured}" for r in failed)


def all_passed(rows: Sequence[CheckRow]) -> bool:
    """Whether every required row passed."""
    return all(r.ok for r in rows if r.required)


# ------------------------------------------------------------------------------------------------------------- sky

# Marks and the colour each is painted in; the dominant channel of a view identifies the mark it sees.
SKY_MARKS: dict[str, tuple[int, int, int]] = {"zenith": (255, 0, 0), "+X": (0, 0, 255), "+Y": (0, 255, 0)}
SKY_GREY = 128
ZENITH_CAP_DEG = 45.0  # the red cap: every direction within this of straight up
MARK_RADIUS_DEG = 20.0  # the blue and green discs around +X and +Y on the horizon
# Where each view looks (world) and which mark it must see; a camera with a 53 degree field of view at each.
SKY_VIEWS: dict[str, tuple[float, float, float]] = {
    "+X": (1.0, 0.0, 0.0),
    "-X": (-1.0, 0.0, 0.0),
    "+Y": (0.0, 1.0, 0.0),
    "-Y": (0.0, -1.0, 0.0),
    "+Z": (0.0, 0.0, 1.0),
    "-Z": (0.0, 0.0, -1.0),
}
EXPECTED_VIEW = {"zenith": "+Z", "+X": "+X", "+Y": "+Y"}


def _sky_directions(height: int, width: int) -> np.ndarray:
    # Our equirect convention (MuJoCo's too): column c is azimuth atan2(y, x) = 2 pi (c + 0.5) / W - pi, row r is
    # elevation pi/2 - pi (r + 0.5) / H.
    az = 2 * np.pi * (np.arange(width) + 0.5) / width - np.pi
    el = np.pi / 2 - np.pi * (np.arange(height) + 0.5) / height
    az, el = np.meshgrid(az, el)
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def marker_sky(width: int = 256) -> np.ndarray:
    """The check's sky: an equirect RGB uint8 image (width/2, width, 3), grey with the marks of SKY_MARKS.

    Raises ValueError for a width that is not an even number >= 16.
    """
    if not isinstance(width, int) or width < 16 or width % 2:
        raise ValueError(f"width: expected an even int >= 16, got {width!r}")
    d = _sky_directions(width // 2, width)
    sky = np.full(d.shape, SKY_GREY, np.uint8)
    sky[d[..., 2] > np.cos(np.radians(ZENITH_CAP_DEG))] = SKY_MARKS["zenith"]
    for name, axis in (("+X", (1.0, 0.0, 0.0)), ("+Y", (0.0, 1.0, 0.0))):
        sky[d @ np.array(axis) > np.cos(np.radians(MARK_RADIUS_DEG))] = SKY_MARKS[name]
    return sky


def sky_view_pose(view: str) -> np.ndarray:
    """The OpenCV pose wTc (4x4) of a camera at the origin looking along SKY_VIEWS[view] (e.g. "+X")."""
    if view not in SKY_VIEWS:
        raise ValueError(f"view: expected one of {', '.join(SKY_VIEWS)}, got {view!r}")
    target = np.array(SKY_VIEWS[view])
    up = (0.0, 0.0, 1.0) if abs(target[2]) < 0.5 else (1.0, 0.0, 0.0)
    return look_at(np.zeros(3), target, up=up)


def render_sky(sky: ArrayLike, K: ArrayLike, wTc: ArrayLike, width: int, height: int) -> np.ndarray:
    """What a pinhole camera (K, OpenCV pose wTc) at the sky's centre sees of an equirect sky, nearest texel.

    `sky` is (H, W, 3) uint8 in our convention (see `marker_sky`); returns (height, width, 3) uint8. This is the
    expected image of the sky check, and the synthetic render of the tests (rotate wTc to misorient the dome).
    """
    img = np.asarray(sky)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[1] != 2 * img.shape[0]:
        raise ValueError(f"sky: expected an equirect RGB uint8 (H, 2H, 3) image, got {img.dtype} {img.shape}")
    cam = Camera(K, width, height)
    T = as_pose(wTc, "wTc")
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    xy = cam.normalize(np.stack([u.ravel(), v.ravel()], axis=1).astype(float))
    d = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ T[:3, :3].T
    h, w = img.shape[:2]
    az = np.arctan2(d[:, 1], d[:, 0])
    el = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))
    col = np.floor((az + np.pi) / (2 * np.pi) * w).astype(int) % w
    row = np.clip(np.floor((np.pi / 2 - el) / np.pi * h).astype(int), 0, h - 1)
    return img[row, col].reshape(height, width, 3)


def classify_view(rgb: ArrayLike) -> str:
    """Which mark an (H, W, 3) view shows in its central half: a SKY_MARKS name, or "none" for grey or black.

    Judged by the dominant channel of the mean colour, so exposure and tone mapping do not change the answer.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 4:
        raise ValueError(f"rgb: expected an (H, W, 3) image at least 4 px wide, got {img.shape}")
    h, w = img.shape[:2]
    mean = img[h // 4 : h - h // 4, w // 4 : w - w // 4].reshape(-1, 3).astype(np.float64).mean(axis=0)
    top = float(mean.max())
    if top < 8.0 or top - float(mean.min()) < 0.35 * top:
        return "none"
    channel = int(np.argmax(mean))
    return next(name for name, colour in SKY_MARKS.items() if int(np.argmax(colour)) == channel)


def check_sky(views: Mapping[str, np.ndarray]) -> list[CheckRow]:
    """One row per mark: in which of the six views (keys of SKY_VIEWS) it shows; it must be its own view only.

    Raises ValueError when a view is missing.
    """
    missing = [v for v in SKY_VIEWS if v not in views]
    if missing:
        raise ValueError(f"views: missing {', '.join(missing)}")
    seen = {view: classify_view(views[view]) for view in SKY_VIEWS}
    rows = []
    for mark, expected in EXPECTED_VIEW.items():
        where = [view for view, got in seen.items() if got == mark]
        measured = f"seen towards {', '.join(where)}" if where else "not seen"
        rows.append(CheckRow(f"sky {mark} mark", measured, f"seen towards {expected} only", where == [expected]))
    return rows


# -------------------------------------------------------------------------------------------------------- K routes

ROUTE_NAMES = {"aperture": "aperture offsets", "lens": "OpenCV pinhole lens schema"}


@dataclass(frozen=True)
class RouteCase:
    """The plate's depth mask from one render compared with the analytic projection."""

    plate_pixels: int  # pixels the analytic plate covers
    wrong_pixels: int  # mask pixels that differ (rasteriser ties excluded)
    offset: tuple[float, float]  # centroid of the rendered mask minus the analytic one, (du, dv) px
    depth_error: float  # worst |depth - analytic| over the plate, metres

    @property
    def ok(self) -> bool:
        """The render reproduces the analytic projection and depth."""
        return self.wrong_pixels == 0 and self.depth_error <= DEPTH_TOL


def _centroid(mask: np.ndarray) -> np.ndarray:
    v, u = np.nonzero(mask)
    return np.array([u.mean(), v.mean()]) if len(u) else np.full(2, np.nan)


def compare_plate_depth(depth: ArrayLike, cam: Camera, wTc: ArrayLike, wTo: ArrayLike) -> RouteCase:
    """Compare a rendered z-depth image (H, W) of the contract plate with its analytic projection.

    The mask is where depth is finite and positive, so lighting, exposure and anti-aliasing do not enter.
    """
    z_img = np.asarray(depth, dtype=np.float64)
    if z_img.shape != (cam.height, cam.width):
        raise ValueError(f"depth: expected shape {(cam.height, cam.width)}, got {z_img.shape}")
    T, O = as_pose(wTc, "wTc"), as_pose(wTo, "wTo")
    mask = np.isfinite(z_img) & (z_img > 0)
    expected, z, dist = analytic(cam, T, O)
    wrong = (mask != expected) & (dist > TIE_PX)
    both = mask & expected & (dist > TIE_PX)
    depth_error = float(np.abs(z_img[both] - z[both]).max()) if both.any() else float("inf")
    du, dv = _centroid(mask) - _centroid(expected)
    return RouteCase(int(expected.sum()), int(wrong.sum()), (float(du), float(dv)), depth_error)


def _route_summary(cases: Sequence[RouteCase]) -> str:
    wrong = sum(c.wrong_pixels for c in cases)
    du, dv = np.nanmean([c.offset for c in cases], axis=0)
    depth = max(c.depth_error for c in cases)
    return f"{wrong} wrong px in {len(cases)} cases, offset ({du:+.2f}, {dv:+.2f}) px, depth error {depth:.1e} m"


def k_route_rows(results: Mapping[str, Sequence[RouteCase]], configured: str) -> list[CheckRow]:
    """Rows for the K routes: one informational row per route, then the required verdict.

    `results` maps each route of ROUTE_NAMES to its cases; `configured` is the route the backend uses. The verdict
    passes only when the configured route reproduces every case; it names both routes when neither does, and says
    which variable to set when only the other one does. Raises ValueError for a missing route or no cases.
    """
    if set(results) != set(ROUTE_NAMES) or any(not results[r] for r in ROUTE_NAMES):
        raise ValueError(f"results: expected cases for each of {', '.join(ROUTE_NAMES)}, got {sorted(results)}")
    if configured not in ROUTE_NAMES:
        raise ValueError(f"configured: expected one of {', '.join(ROUTE_NAMES)}, got {configured!r}")
    honoured = {route: all(c.ok for c in cases) for route, cases in results.items()}
    rows = [
        CheckRow(f"K via {ROUTE_NAMES[r]}", _route_summary(results[r]), "0 wrong px", honoured[r], required=False)
        for r in ROUTE_NAMES
    ]
    working = [r for r in ROUTE_NAMES if honoured[r]]
    if not working:
        measured = "NEITHER route is exact: " + "; ".join(
            f"{ROUTE_NAMES[r]}: {_route_summary(results[r])}" for r in ROUTE_NAMES
        )
    elif configured in working:
        measured = f"the renderer honours {' and '.join(ROUTE_NAMES[r] for r in working)}; backend uses {configured}"
    else:
        measured = (
            f"only {ROUTE_NAMES[working[0]]} is exact, but the backend uses {configured}: "
            f"set CNSV2_ISAAC_K_ROUTE={working[0]}"
        )
    rows.append(CheckRow("K route honoured", measured, f"{configured} exact", configured in working))
    return rows


# -------------------------------------------------------------------------------------------------- anti-aliasing

BLEND_BAND = (0.2, 0.8)  # a pixel this far between background and plate is a blend of the two
MIN_CONTRAST = 40.0  # grey levels between plate and background for the edge to be judged at all


@dataclass(frozen=True)
class EdgeResult:
    """How hard a rendered edge is: pixels near it that blend background and plate."""

    edge_pixels: int  # pixels whose centre is within 1.5 px of the analytic outline
    blended_pixels: int  # of those, pixels between background and plate (BLEND_BAND)
    contrast: float  # grey levels between the plate's and the background's median colour

    @property
    def ok(self) -> bool:
        """No blended pixel, with enough contrast to have seen one."""
        return self.contrast >= MIN_CONTRAST and self.blended_pixels == 0


def check_hard_edge(rgb: ArrayLike, inside: ArrayLike, dist: ArrayLike) -> EdgeResult:
    """Judge the edge of a uniform region in an RGB uint8 (H, W, 3) render.

    `inside` (H, W bool) is the analytic region and `dist` (H, W) each pixel centre's distance in px to its outline
    (both from `sim.camera_contract.analytic`). Plate and background colours are the medians over pixels more than
    2 px from the outline.
    """
    img = np.asarray(rgb)
    m = np.asarray(inside, dtype=bool)
    d = np.asarray(dist, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3 or m.shape != img.shape[:2] or d.shape != img.shape[:2]:
        raise ValueError(f"rgb (H, W, 3), inside and dist (H, W) must match, got {img.shape}, {m.shape}, {d.shape}")
    c = img.reshape(-1, 3).astype(np.float64)
    far = d.ravel() > 2.0
    inner, outer = far & m.ravel(), far & ~m.ravel()
    if not inner.any() or not outer.any():
        raise ValueError("the region or its background has no pixel more than 2 px from the edge")
    fg, bg = np.median(c[inner], axis=0), np.median(c[outer], axis=0)
    span = fg - bg
    contrast = float(np.abs(span).max())
    near = d.ravel() <= 1.5
    alpha = (c[near] - bg) @ span / max(float(span @ span), 1e-9)
    blended = (alpha > BLEND_BAND[0]) & (alpha < BLEND_BAND[1])
    return EdgeResult(int(near.sum()), int(blended.sum()), contrast)


def edge_case() -> tuple[Camera, np.ndarray, np.ndarray]:
    """The anti-aliasing view: (canonical camera, wTc, wTo) looking straight down at the plate turned by 0.3 rad."""
    from sim.camera_contract import OFFSET
    from sim.geometry import make_pose, rot_z

    wTo = make_pose(rot_z(0.3), np.zeros(3))  # turned, so that the edges are slanted across rows and columns
    centre = wTo[:3, :3] @ OFFSET
    wTc = look_at(centre + np.array([0.0, 0.0, 0.2]), centre, up=(0.0, 1.0, 0.0))
    return Camera.canonical(EDGE_SIZE), wTc, wTo


def edge_row(result: EdgeResult) -> CheckRow:
    """The anti-aliasing row of the table."""
    measured = f"{result.blended_pixels} of {result.edge_pixels} edge px blended, contrast {result.contrast:.0f}"
    expected = f"0 blended, contrast >= {MIN_CONTRAST:.0f}"
    return CheckRow("anti-aliasing off (hard edge)", measured, expected, result.ok)


# ------------------------------------------------------------------------------------------------------------- PNG


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"panel images must be RGB uint8, grey uint8 or bool, got {a.dtype} {a.shape}")
    scale = size / max(a.shape[:2])
    rows = np.minimum((np.arange(round(a.shape[0] * scale)) / scale).astype(int), a.shape[0] - 1)
    cols = np.minimum((np.arange(round(a.shape[1] * scale)) / scale).astype(int), a.shape[1] - 1)
    out = np.full((size, size, 3), 255, np.uint8)
    small = a[rows][:, cols]
    out[: small.shape[0], : small.shape[1]] = small
    return out


def mask_difference(rendered: ArrayLike, expected: ArrayLike) -> np.ndarray:
    """An RGB uint8 picture of two (H, W) masks: white where both, red only rendered, blue only expected."""
    r, e = np.asarray(rendered, dtype=bool), np.asarray(expected, dtype=bool)
    if r.shape != e.shape or r.ndim != 2:
        raise ValueError(f"masks must be (H, W) of one shape, got {r.shape} and {e.shape}")
    out = np.zeros((*r.shape, 3), np.uint8)
    out[r & e] = 255
    out[r & ~e] = (255, 0, 0)
    out[~r & e] = (0, 0, 255)
    return out


def comparison_image(panels: Sequence[tuple[str, Sequence[np.ndarray]]], size: int = 128) -> np.ndarray:
    """A sheet with one row per (label, images): each image scaled to fit a size x size tile, label on the first.

    Images may be RGB uint8, grey uint8 or bool masks. Returns RGB uint8.
    """
    if not panels or any(not imgs for _, imgs in panels):
        raise ValueError("panels: need at least one row, each with at least one image")
    from sim.preview import label_image  # PIL only where a PNG is made

    width = max(len(imgs) for _, imgs in panels)
    sheet = np.full((len(panels) * (size + 4), width * (size + 4), 3), 255, np.uint8)
    for i, (label, imgs) in enumerate(panels):
        for j, img in enumerate(imgs):
            tile = _tile(img, size)
            if j == 0:
                tile = label_image(tile, label)
            sheet[i * (size + 4) : i * (size + 4) + size, j * (size + 4) : j * (size + 4) + size] = tile
    return sheet


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as a PNG atomically (the folder is created); return the path."""
    from PIL import Image

    from file_io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".tmp.png") as tmp:  # PIL picks the format from the suffix
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp)
    return path


# ----------------------------------------------------------------------------------------- on Isaac (needs an RTX GPU)

SKY_SIZE = 64
EDGE_SIZE = 128


def _settled_render(renderer: Any, K: np.ndarray, wTc: np.ndarray) -> Any:
    # The first frame after a scene load may still miss textures or meshes that stream in; a check must not fail on
    # that, so each view is rendered twice and the second frame is judged.
    renderer.render(K, wTc)
    return renderer.render(K, wTc)


def _run_sky() -> tuple[list[CheckRow], list[tuple[str, list[np.ndarray]]]]:
    from sim.isaac_backend import IsaacRenderer
    from sim.scene import SceneSpec, SkySpec

    sky = marker_sky()
    K = Camera.canonical(SKY_SIZE).K
    views, panels = {}, []
    with IsaacRenderer(SKY_SIZE, SKY_SIZE) as r:
        r.load(SceneSpec(sky=SkySpec(image=sky), lights=(), ambient=(0.3, 0.3, 0.3)))
        for view in SKY_VIEWS:
            views[view] = _settled_render(r, K, sky_view_pose(view)).rgb
            panels.append((f"sky {view}", [views[view], render_sky(sky, K, sky_view_pose(view), SKY_SIZE, SKY_SIZE)]))
    return check_sky(views), panels


def _run_k_routes(cases: int) -> tuple[list[CheckRow], list[tuple[str, list[np.ndarray]]]]:
    from sim.camera_contract import plate_scene, random_case
    from sim.isaac_backend import K_ROUTES, IsaacRenderer, default_k_route

    results: dict[str, list[RouteCase]] = {}
    panels = []
    for route in K_ROUTES:
        results[route] = []
        for W, H in [(320, 240), (256, 256)]:
            rng = np.random.default_rng(W * 1000 + H)  # the same cameras for both routes
            with IsaacRenderer(W, H, k_route=route) as r:
                for i in range(cases):
                    cam, wTc, wTo = random_case(rng, W, H)
                    r.load(plate_scene(wTo))
                    depth = _settled_render(r, cam.K, wTc).depth
                    results[route].append(compare_plate_depth(depth, cam, wTc, wTo))
                    if i == 0:
                        expected, _, _ = analytic(cam, wTc, wTo)
                        rendered = np.isfinite(depth) & (depth > 0)
                        panels.append((f"{route} {W}x{H}", [rendered, expected, mask_difference(rendered, expected)]))
    return k_route_rows(results, default_k_route()), panels


def _run_edge() -> tuple[list[CheckRow], list[tuple[str, list[np.ndarray]]]]:
    from sim.camera_contract import plate_scene
    from sim.isaac_backend import IsaacRenderer
    from sim.scene import MaterialSpec

    cam, wTc, wTo = edge_case()
    dark = MaterialSpec((0.05, 0.05, 0.05, 1.0), specular=0.0, shininess=0.0)
    with IsaacRenderer(EDGE_SIZE, EDGE_SIZE) as r:
        r.load(plate_scene(wTo, dark))
        rgb = _settled_render(r, cam.K, wTc).rgb
    inside, _, dist = analytic(cam, wTc, wTo)
    ideal = np.where(inside[..., None], np.median(rgb[inside], axis=0), np.median(rgb[~inside], axis=0))
    return [edge_row(check_hard_edge(rgb, inside, dist))], [("edge", [rgb, ideal.astype(np.uint8)])]


def _timing(sizes: list[int], subframes: list[int], frames: int) -> list[tuple[int, int, float]]:
    from configs import load_config
    from sim.isaac_backend import IsaacRenderer
    from sim.poses import sample_pose
    from sim.scene_sampler import SceneSampler

    cfg = load_config("smoke").sim
    sampler = SceneSampler(cfg.scene, cfg.assets)
    rows = []
    for size in sizes:
        K = Camera.canonical(size).K
        for rt in subframes:
            rng = np.random.default_rng(0)
            with IsaacRenderer(size, size, rt_subframes=rt) as r:
                r.load(sampler.sample(rng, seed=0))
                r.render(K, sample_pose(rng, cfg.poses.desired))  # first frame compiles and uploads
                t0 = time.perf_counter()
                for _ in range(frames):
                    r.render(K, sample_pose(rng, cfg.poses.initial))
                rows.append((size, rt, 1e3 * (time.perf_counter() - t0) / frames))
            print(f"  {size} px, rt_subframes {rt}: {rows[-1][2]:.1f} ms/frame", flush=True)
    return rows


def _side_by_side(out: Path, size: int = 256, scenes: int = 4) -> Path:
    from configs import load_config
    from sim.env import ServoEnv

    images = []
    for backend in ("isaac", "mujoco"):
        cfg = load_config("smoke", [f"sim.renderer.backend={backend}", f"sim.camera.width={size}",
                                    f"sim.camera.height={size}"]).sim  # fmt: skip
        with ServoEnv(cfg) as env:
            images.append(np.concatenate([env.reset(seed).rgb for seed in range(scenes)], axis=1))
    return write_png(out / "isaac_vs_mujoco.png", np.concatenate(images, axis=0))


def main(argv: list[str] | None = None) -> int:
    """Run the checks on Isaac Sim, print the table and the verdict, write the PNGs; return the exit status."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--cases", type=int, default=3, help="K-route cases per image size and route (default 3)")
    parser.add_argument("--frames", type=int, default=50, help="timed frames per setting; 0 skips timing (default 50)")
    parser.add_argument("--out", type=Path, default=Path("runs/isaac_check"), help="where the PNGs go")
    args = parser.parse_args(argv)
    if args.cases < 1 or args.frames < 0:
        parser.error("need --cases >= 1 and --frames >= 0")
    from sim.isaac_backend import IsaacUnavailable, require_isaac

    try:
        require_isaac()
    except IsaacUnavailable as err:
        parser.exit(2, f"{COMMAND}: {err}\n")
    rows: list[CheckRow] = []
    panels: list[Any] = []
    for run in (_run_sky, lambda: _run_k_routes(args.cases), _run_edge):
        new_rows, new_panels = run()
        rows += new_rows
        panels += new_panels
    png = write_png(args.out / "isaac_check.png", comparison_image(panels))
    print(f"\n`{COMMAND} --cases {args.cases} --frames {args.frames}`\n")
    print(format_table(rows))
    if args.frames:
        print("\nrender time (RGB + distance_to_image_plane, synchronous step):", flush=True)
        timing = _timing([256, 512], [1, 4], args.frames)
        print("\n| size | rt_subframes | ms/frame | FPS |\n|---|---|---|---|")
        for size, rt, ms in timing:
            print(f"| {size} | {rt} | {ms:.1f} | {1e3 / ms:.0f} |")
        print(f"\nIsaac (top) and MuJoCo (bottom) on smoke scenes: {_side_by_side(args.out)}")
    print(f"\ncomparison image (rendered | expected [| difference]): {png}")
    print(verdict_line(rows))
    return 0 if all_passed(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
