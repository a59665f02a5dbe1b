"""`python -m sim.isaac_check`'s checks on synthetic renders: an ideal render passes, a misoriented sky, a K off by
half a pixel and an anti-aliased edge fail, and the table, the verdict and the PNG say so. Isaac Sim is not needed;
`main` itself only runs where it is (exit 2 otherwise)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from sim import isaac_check as ic
from sim.camera import Camera
from sim.camera_contract import analytic, random_case
from sim.geometry import make_pose, rot_y, rot_z

pytestmark = pytest.mark.unit

SIZE = 48


def _views(world_to_dome: np.ndarray | None = None, sky: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What the six cameras see of the sky (the marker sky by default) when the renderer turns it by world_to_dome."""
    world_to_dome = np.eye(3) if world_to_dome is None else world_to_dome
    sky = ic.marker_sky(128) if sky is None else sky
    K = Camera.canonical(SIZE).K
    out = {}
    for view in ic.SKY_VIEWS:
        wTc = ic.sky_view_pose(view)
        out[view] = ic.render_sky(sky, K, make_pose(world_to_dome.T @ wTc[:3, :3], np.zeros(3)), SIZE, SIZE)
    return out


def _by_check(rows: list[ic.CheckRow]) -> dict[str, ic.CheckRow]:
    return {r.check: r for r in rows}


def test_marker_sky_has_its_marks_where_the_convention_says() -> None:
    sky = ic.marker_sky(64)
    assert sky.shape == (32, 64, 3) and sky.dtype == np.uint8
    assert tuple(sky[0, 5]) == ic.SKY_MARKS["zenith"]  # row 0 is the zenith
    assert tuple(sky[16, 32]) == ic.SKY_MARKS["+X"]  # the centre column is azimuth 0, world +X
    assert tuple(sky[16, 48]) == ic.SKY_MARKS["+Y"]  # three quarters across is azimuth +90 degrees, world +Y
    assert tuple(sky[16, 0]) == (ic.SKY_GREY,) * 3 and tuple(sky[-1, 5]) == (ic.SKY_GREY,) * 3
    with pytest.raises(ValueError, match="even int"):
        ic.marker_sky(63)


def test_ideal_sky_passes() -> None:
    views = _views()
    assert {v: ic.classify_view(img) for v, img in views.items()} == {
        "+X": "+X",
        "-X": "none",
        "+Y": "+Y",
        "-Y": "none",
        "+Z": "zenith",
        "-Z": "none",
    }
    rows = ic.check_sky(views)
    assert [r.check for r in rows] == ["sky zenith mark", "sky +X mark", "sky +Y mark"]
    assert all(r.ok and r.required for r in rows)


def test_sky_turned_90_degrees_about_the_vertical_fails_and_says_where_the_marks_went() -> None:
    rows = _by_check(ic.check_sky(_views(rot_z(np.pi / 2))))
    assert rows["sky zenith mark"].ok
    assert not rows["sky +X mark"].ok and rows["sky +X mark"].measured == "seen towards +Y"
    assert not rows["sky +Y mark"].ok and rows["sky +Y mark"].measured == "seen towards -X"


def test_sky_on_its_side_fails() -> None:
    # The failure issue 19 predicts for a Y-pole transform under RTX's Z-pole dome: the zenith along world +X.
    rows = _by_check(ic.check_sky(_views(rot_y(np.pi / 2))))
    assert rows["sky zenith mark"].measured == "seen towards +X" and not rows["sky zenith mark"].ok


def test_mirrored_sky_fails() -> None:
    # Longitude running the wrong way (a texture not flipped left-right): +Y's mark shows towards -Y.
    rows = _by_check(ic.check_sky(_views(sky=ic.marker_sky(128)[:, ::-1])))
    assert rows["sky +X mark"].ok and rows["sky +Y mark"].measured == "seen towards -Y"


def test_classify_view_ignores_exposure_and_rejects_bad_input() -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 90  # dim red: still the zenith mark
    assert ic.classify_view(red) == "zenith"
    assert ic.classify_view(np.full((8, 8, 3), 250, np.uint8)) == "none"  # saturated grey
    assert ic.classify_view(np.zeros((8, 8, 3), np.uint8)) == "none"  # black: no sky drawn
    with pytest.raises(ValueError, match="rgb"):
        ic.classify_view(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="missing -Z"):
        ic.check_sky({v: img for v, img in _views().items() if v != "-Z"})


def _route_cases(cx_error: float = 0.0, n: int = 2) -> list[ic.RouteCase]:
    """Synthetic depth renders of contract cases; cx_error moves the renderer's principal point."""
    rng = np.random.default_rng(5)
    out = []
    for _ in range(n):
        cam, wTc, wTo = random_case(rng, 96, 72)
        seen = Camera.from_focal(cam.fx, cam.width, cam.height, cam.fy, cam.cx + cx_error, cam.cy)
        mask, z, _ = analytic(seen, wTc, wTo)
        depth = np.where(mask, z, np.inf).astype(np.float32)
        out.append(ic.compare_plate_depth(depth, cam, wTc, wTo))
    return out


def test_exact_depth_render_passes_and_half_a_pixel_is_measured() -> None:
    exact = _route_cases()
    assert all(c.ok and c.wrong_pixels == 0 and c.depth_error < 1e-6 for c in exact)
    shifted = _route_cases(0.5)
    assert all(not c.ok and c.wrong_pixels > 0 for c in shifted)
    du = np.mean([c.offset[0] for c in shifted])
    assert 0.35 < du < 0.65 and abs(np.mean([c.offset[1] for c in shifted])) < 0.1


def test_k_route_verdict_names_the_route_that_works() -> None:
    good, bad = _route_cases(), _route_cases(0.5)
    rows = _by_check(ic.k_route_rows({"aperture": bad, "lens": good}, "lens"))
    assert rows["K route honoured"].ok and "honours OpenCV pinhole lens schema" in rows["K route honoured"].measured
    assert not rows["K via aperture offsets"].ok and not rows["K via aperture offsets"].required
    assert re.search(r"offset \(\+0\.[45]\d, [+-]0\.0\d\)", rows["K via aperture offsets"].measured)


def test_k_route_verdict_says_what_to_set_when_only_the_other_route_works() -> None:
    rows = _by_check(ic.k_route_rows({"aperture": _route_cases(), "lens": _route_cases(0.5)}, "lens"))
    assert not rows["K route honoured"].ok
    assert "set CNSV2_ISAAC_K_ROUTE=aperture" in rows["K route honoured"].measured


def test_both_k_routes_off_fails_loudly_naming_both() -> None:
    bad = _route_cases(0.5)
    rows = ic.k_route_rows({"aperture": bad, "lens": bad}, "lens")
    verdict = _by_check(rows)["K route honoured"]
    assert not verdict.ok and verdict.required
    assert "NEITHER" in verdict.measured
    assert "aperture offsets:" in verdict.measured and "OpenCV pinhole lens schema:" in verdict.measured
    line = ic.verdict_line(rows)
    assert line.startswith("isaac check: FAIL") and "NEITHER" in line
    with pytest.raises(ValueError, match="expected cases for each"):
        ic.k_route_rows({"lens": bad}, "lens")
    with pytest.raises(ValueError, match="configured"):
        ic.k_route_rows({"aperture": bad, "lens": bad}, "crop")


def _edge_render(blur: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cam, wTc, wTo = ic.edge_case()
    inside, _, dist = analytic(cam, wTc, wTo)
    grey = np.where(inside, 20.0, 200.0)
    if blur:  # what anti-aliasing or a denoiser does to the edge: a 3x3 box filter
        padded = np.pad(grey, 1, mode="edge")
        grey = sum(padded[i : i + grey.shape[0], j : j + grey.shape[1]] for i in range(3) for j in range(3)) / 9
    rgb = np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=2)
    return rgb, inside, dist


def test_hard_edge_passes_and_a_blurred_edge_fails() -> None:
    result = ic.check_hard_edge(*_edge_render())
    assert result.ok and result.blended_pixels == 0 and result.edge_pixels > 200 and result.contrast == 180
    blurred = ic.check_hard_edge(*_edge_render(blur=True))
    assert not blurred.ok and blurred.blended_pixels > 100
    row = ic.edge_row(blurred)
    assert not row.ok and row.measured.startswith(f"{blurred.blended_pixels} of {blurred.edge_pixels}")


def test_edge_without_contrast_cannot_pass() -> None:
    rgb, inside, dist = _edge_render()
    assert not ic.check_hard_edge(np.full_like(rgb, 200), inside, dist).ok
    with pytest.raises(ValueError, match="must match"):
        ic.check_hard_edge(rgb[:-1], inside, dist)


def test_table_and_verdict() -> None:
    rows = [
        ic.CheckRow("sky zenith mark", "seen towards +Z", "seen towards +Z only", True),
        ic.CheckRow("K via aperture offsets", "3 wrong px", "0 wrong px", False, required=False),
        ic.CheckRow("anti-aliasing off (hard edge)", "12 of 700 edge px blended", "0 blended", False),
    ]
    table = ic.format_table(rows).splitlines()
    assert table[0] == "| check | measured | expected | result |" and len(table) == 2 + len(rows)
    assert table[2].endswith("| pass |") and table[3].endswith("| no |") and table[4].endswith("| FAIL |")
    assert ic.verdict_line(rows) == "isaac check: FAIL: anti-aliasing off (hard edge): 12 of 700 edge px blended"
    assert not ic.all_passed(rows)
    ok = [rows[0], rows[1]]  # an informational row does not fail the run
    assert ic.all_passed(ok) and ic.verdict_line(ok) == "isaac check: PASS (1/1 required checks)"
    with pytest.raises(ValueError, match="no required check"):
        ic.verdict_line([rows[1]])


def test_comparison_png(tmp_path) -> None:
    views = _views()
    rendered, expected = np.eye(20, dtype=bool), np.eye(20, k=1, dtype=bool)
    diff = ic.mask_difference(rendered, expected)
    assert tuple(diff[0, 0]) == (255, 0, 0) and tuple(diff[0, 1]) == (0, 0, 255) and tuple(diff[0, 5]) == (0, 0, 0)
    sheet = ic.comparison_image([("sky +X", [views["+X"], views["+X"]]), ("lens 96x72", [rendered, expected, diff])])
    assert sheet.shape == (2 * (128 + 4), 3 * (128 + 4), 3) and sheet.dtype == np.uint8
    path = ic.write_png(tmp_path / "out" / "isaac_check.png", sheet)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), sheet)
    with pytest.raises(ValueError, match="panels"):
        ic.comparison_image([])


def test_main_without_isaac_exits_2_with_the_reason(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from sim import isaac_backend

    monkeypatch.setattr(isaac_backend, "unavailable_reason", lambda: "Isaac Sim is not installed (test)")
    with pytest.raises(SystemExit) as exit_info:
        ic.main(["--frames", "0"])
    assert exit_info.value.code == 2
    assert "Isaac Sim is not installed (test)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ic.main(["--cases", "0"])


def test_main_runs_every_check_against_the_stand_ins(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    # The stand-in annotators return a flat grey image and a constant depth, so the wiring runs end to end (both K
    # routes, the sky views, the edge, the PNG) and every check fails as it should on such a renderer.
    from tests.sim.isaac_stand_ins import fake_isaac

    fake = fake_isaac(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path))  # the USD cache goes under ~/.cache
    assert ic.main(["--cases", "1", "--frames", "0", "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "| sky zenith mark | not seen |" in out and "NEITHER route is exact" in out
    assert "| anti-aliasing off (hard edge) |" in out
    assert out.rstrip().splitlines()[-1].startswith("isaac check: FAIL: sky zenith mark: not seen")
    sheet = np.asarray(Image.open(tmp_path / "out" / "isaac_check.png"))
    assert sheet.shape[0] == (6 + 4 + 1) * (128 + 4)  # six sky views, two sizes per K route, the edge
    routes = {"lens" if "omni:lensdistortion:model" in captured else "aperture" for captured in fake.world.cameras}
    assert routes == {"lens", "aperture"}
