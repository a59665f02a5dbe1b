"""The USD camera of the Isaac Sim backend: K and an OpenCV pose in, and USD's own projection agrees with ours."""

from __future__ import annotations

import numpy as np
import pytest

from sim.camera import Camera
from sim.geometry import exp_se3, look_at
from sim.usd_camera import (
    LENS_COEFFICIENTS,
    LENS_PREFIX,
    LENS_SCHEMA,
    camera_attributes,
    define_camera,
    gf_matrix,
    opencv_pinhole_attributes,
    project_with_usd,
    set_camera_pose,
    usd_camera_matrix,
)

pytest.importorskip("pxr")
from pxr import Gf, Sdf, Usd, UsdGeom

pytestmark = pytest.mark.unit

CAMERAS = {
    "canonical": Camera.canonical(256),
    "non_square": Camera.from_focal(300.0, 320, 240, fy=280.0, cx=165.3, cy=118.7),
    "off_centre": Camera.from_focal(250.0, 256, 192, fy=240.0, cx=40.0, cy=170.0),
    "focal_0.5": Camera.canonical(256, focal_scale=0.5),
    "focal_1.5": Camera.canonical(256, focal_scale=1.5),
}


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    eye = rng.normal(size=3)
    eye *= rng.uniform(0.5, 3.0) / np.linalg.norm(eye)
    wTc = look_at(eye, rng.uniform(-0.2, 0.2, size=3), up=rng.normal(size=3))
    return wTc @ exp_se3(np.concatenate([rng.normal(0.0, 0.05, 3), rng.normal(0.0, 0.3, 3)]))


def _points_in_front(cam: Camera, wTc: np.ndarray, rng: np.random.Generator, n: int = 100) -> np.ndarray:
    # Pixels over (and a little beyond) the whole image, at depths from 5 cm to 20 m.
    uv = np.stack([rng.uniform(-20, cam.width + 20, n), rng.uniform(-20, cam.height + 20, n)], axis=1)
    P_c = cam.unproject(uv, rng.uniform(0.05, 20.0, n))
    return P_c @ wTc[:3, :3].T + wTc[:3, 3]


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_usd_projection_matches_opencv(name: str) -> None:
    cam = CAMERAS[name]
    rng = np.random.default_rng(sorted(CAMERAS).index(name))
    stage = Usd.Stage.CreateInMemory()
    worst = 0.0
    for k in range(5):
        wTc = _random_pose(rng)
        usd_cam = define_camera(stage, f"/World/cam_{k}", cam.K, cam.width, cam.height, wTc)
        P = _points_in_front(cam, wTc, rng)
        expected, _ = cam.project_world(P, wTc)
        got = project_with_usd(usd_cam, P, cam.width, cam.height)
        worst = max(worst, float(np.abs(got - expected).max()))
    assert worst < 1e-3, f"{name}: max |USD - OpenCV| = {worst:.2e} px"


def test_image_edges_map_to_ndc_edges() -> None:
    # The half pixel, directly: the ray through pixel (-0.5, -0.5), the top-left image corner, hits NDC (-1, +1).
    cam = CAMERAS["canonical"]
    stage = Usd.Stage.CreateInMemory()
    usd_cam = define_camera(stage, "/cam", cam.K, cam.width, cam.height, np.eye(4))
    corners = cam.unproject([[-0.5, -0.5], [cam.width - 0.5, cam.height - 0.5]], [2.0, 2.0])
    frustum = usd_cam.GetCamera(Usd.TimeCode.Default()).frustum
    M = frustum.ComputeViewMatrix() * frustum.ComputeProjectionMatrix()
    ndc = [M.Transform(Gf.Vec3d(*p.tolist())) for p in corners]
    np.testing.assert_allclose([ndc[0][0], ndc[0][1]], [-1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose([ndc[1][0], ndc[1][1]], [1.0, -1.0], atol=1e-6)


def test_canonical_camera_has_the_half_pixel_offset() -> None:
    a = camera_attributes(Camera.canonical(256).K, 256, 256, focal_length=24.0)
    assert a["focalLength"] == 24.0
    assert a["horizontalAperture"] == pytest.approx(24.0) and a["verticalAperture"] == pytest.approx(24.0)
    # cx = W/2 sits half a pixel right of the image centre (W - 1)/2, and cy half a pixel below it.
    assert a["horizontalApertureOffset"] == pytest.approx(-0.5 * 24.0 / 256)
    assert a["verticalApertureOffset"] == pytest.approx(0.5 * 24.0 / 256)
    centred = camera_attributes(Camera.from_focal(256.0, 256, 256, cx=127.5, cy=127.5).K, 256, 256)
    assert centred["horizontalApertureOffset"] == 0.0 and centred["verticalApertureOffset"] == 0.0


def test_focal_length_only_sets_the_units() -> None:
    cam = CAMERAS["off_centre"]
    a, b = camera_attributes(cam.K, cam.width, cam.height, 10.0), camera_attributes(cam.K, cam.width, cam.height, 50.0)
    for key in a:
        assert b[key] == pytest.approx(5.0 * a[key])


def test_define_camera_authors_the_expected_prim() -> None:
    cam = CAMERAS["non_square"]
    stage = Usd.Stage.CreateInMemory()
    usd_cam = define_camera(stage, "/World/Camera", cam.K, cam.width, cam.height, np.eye(4), near=0.05, far=50.0)
    assert usd_cam.GetProjectionAttr().Get() == UsdGeom.Tokens.perspective
    assert usd_cam.GetFStopAttr().Get() == 0.0
    assert tuple(usd_cam.GetClippingRangeAttr().Get()) == pytest.approx((0.05, 50.0))
    assert usd_cam.GetXformOpOrderAttr().Get() == ["xformOp:transform"]
    for key, value in camera_attributes(cam.K, cam.width, cam.height).items():
        assert usd_cam.GetPrim().GetAttribute(key).Get() == pytest.approx(value, rel=1e-6)
    prim = usd_cam.GetPrim()
    assert LENS_SCHEMA in prim.GetMetadata("apiSchemas").GetAddedOrExplicitItems()
    assert prim.GetAttribute("omni:lensdistortion:model").Get() == "opencvPinhole"
    assert prim.GetAttribute(LENS_PREFIX + "imageSize").Get() == Gf.Vec2i(320, 240)
    assert prim.GetAttribute(LENS_PREFIX + "imageSize").GetTypeName() == Sdf.ValueTypeNames.Int2
    for key, value in (("fx", cam.fx), ("fy", cam.fy), ("cx", cam.cx), ("cy", cam.cy)):
        assert prim.GetAttribute(LENS_PREFIX + key).Get() == pytest.approx(value, rel=1e-6)
    for key in LENS_COEFFICIENTS:
        assert prim.GetAttribute(LENS_PREFIX + key).Get() == 0.0
    plain = define_camera(stage, "/World/Plain", cam.K, cam.width, cam.height, np.eye(4), lens_schema=False)
    assert not plain.GetPrim().HasAttribute("omni:lensdistortion:model")
    # Redefining without the schema drops it, so that Isaac falls back to the apertures.
    define_camera(stage, "/World/Camera", cam.K, cam.width, cam.height, np.eye(4), lens_schema=False)
    assert LENS_SCHEMA not in prim.GetMetadata("apiSchemas").GetAddedOrExplicitItems()
    assert not [a for a in prim.GetAttributes() if a.GetName().startswith("omni:lensdistortion")]


def test_opencv_pinhole_attributes_lists_the_schema() -> None:
    cam = CAMERAS["off_centre"]
    attrs = opencv_pinhole_attributes(cam.K, cam.width, cam.height)
    assert attrs["omni:lensdistortion:model"] == "opencvPinhole"
    assert attrs[LENS_PREFIX + "imageSize"] == (256, 192)
    assert attrs[LENS_PREFIX + "cx"] == 40.0 and attrs[LENS_PREFIX + "cy"] == 170.0
    assert {k for k in attrs if k.startswith(LENS_PREFIX)} == {
        LENS_PREFIX + k for k in ("fx", "fy", "cx", "cy", "imageSize", *LENS_COEFFICIENTS)
    }


def test_set_camera_pose_moves_the_camera() -> None:
    cam = CAMERAS["canonical"]
    rng = np.random.default_rng(7)
    stage = Usd.Stage.CreateInMemory()
    usd_cam = define_camera(stage, "/cam", cam.K, cam.width, cam.height, _random_pose(rng))
    wTc = _random_pose(rng)
    set_camera_pose(usd_cam, wTc)
    assert len(usd_cam.GetOrderedXformOps()) == 1
    world = np.array(usd_cam.ComputeLocalToWorldTransform(Usd.TimeCode.Default())).T
    np.testing.assert_allclose(world, usd_camera_matrix(wTc), atol=1e-12)
    P = _points_in_front(cam, wTc, rng)
    np.testing.assert_allclose(project_with_usd(usd_cam, P, cam.width, cam.height), cam.project_world(P, wTc)[0])


def test_usd_camera_matrix_flips_y_and_z() -> None:
    wTc = look_at([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    M = usd_camera_matrix(wTc)
    np.testing.assert_allclose(M[:3, 2], -wTc[:3, 2])  # USD looks down -z, OpenCV down +z
    np.testing.assert_allclose(M[:3, 1], -wTc[:3, 1])  # USD's y is up, OpenCV's down
    np.testing.assert_array_equal(M[:3, [0, 3]], wTc[:3, [0, 3]])


def test_gf_matrix_round_trips() -> None:
    T = _random_pose(np.random.default_rng(3))
    G = gf_matrix(T)
    assert isinstance(G, Gf.Matrix4d)
    np.testing.assert_array_equal(np.array(G).T, T)
    np.testing.assert_array_equal(np.array(G.ExtractTranslation()), T[:3, 3])  # row 3 holds the translation
    p = np.array([0.3, -1.2, 2.0])
    np.testing.assert_allclose(np.array(G.Transform(Gf.Vec3d(*p))), T[:3, :3] @ p + T[:3, 3], atol=1e-12)


def test_points_behind_the_camera_are_nan() -> None:
    cam = CAMERAS["canonical"]
    stage = Usd.Stage.CreateInMemory()
    usd_cam = define_camera(stage, "/cam", cam.K, cam.width, cam.height, np.eye(4))
    uv = project_with_usd(usd_cam, [[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]], cam.width, cam.height)
    assert np.isnan(uv[0]).all()
    np.testing.assert_allclose(uv[1], [cam.cx, cam.cy], atol=1e-9)


@pytest.mark.parametrize(
    ("K", "match"),
    [
        (np.eye(2), "K: expected shape"),
        ([[0.0, 0, 1], [0, 1, 1], [0, 0, 1]], "focal lengths must be > 0"),
        ([[100.0, 0, 1], [0, -5, 1], [0, 0, 1]], "focal lengths must be > 0"),
        ([[100.0, 2, 1], [0, 100, 1], [0, 0, 1]], r"K: expected \[\[fx, 0, cx\]"),
        ([[100.0, 0, np.nan], [0, 100, 1], [0, 0, 1]], "K: contains NaN"),
    ],
)
def test_bad_intrinsics_raise(K: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        camera_attributes(K, 64, 64)
    with pytest.raises(ValueError, match=match):
        opencv_pinhole_attributes(K, 64, 64)


def test_bad_inputs_raise() -> None:
    K = Camera.canonical(64).K
    stage = Usd.Stage.CreateInMemory()
    with pytest.raises(ValueError, match="focal_length"):
        camera_attributes(K, 64, 64, focal_length=0.0)
    with pytest.raises(ValueError, match="width/height"):
        camera_attributes(K, 0, 64)
    bad_pose = np.eye(4)
    bad_pose[0, 0] = 2.0
    with pytest.raises(ValueError, match=r"wTc\[:3, :3\]: not a rotation"):
        usd_camera_matrix(bad_pose)
    with pytest.raises(ValueError, match="wTc: expected shape"):
        define_camera(stage, "/cam", K, 64, 64, np.eye(3))
    with pytest.raises(ValueError, match="near/far"):
        define_camera(stage, "/cam", K, 64, 64, np.eye(4), near=1.0, far=0.5)
    with pytest.raises(ValueError, match="path"):
        define_camera(stage, "relative/cam", K, 64, 64, np.eye(4))
    with pytest.raises(ValueError, match="T: expected shape"):
        gf_matrix(np.eye(3))
    usd_cam = define_camera(stage, "/cam", K, 64, 64, np.eye(4))
    with pytest.raises(ValueError, match="points_world"):
        project_with_usd(usd_cam, np.zeros((4, 2)), 64, 64)
    usd_cam.AddTranslateOp()
    with pytest.raises(ValueError, match="exactly one xformOp:transform"):
        set_camera_pose(usd_cam, np.eye(4))
