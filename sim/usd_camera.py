"""A pinhole camera K with an OpenCV pose, expressed as a USD camera prim (the Isaac Sim backend's camera math).

Conventions: pixels follow OpenCV, with the centre of the top-left pixel at (0, 0), so the image spans
[-0.5, W - 0.5] x [-0.5, H - 0.5]; K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]; `wTc` maps OpenCV camera
coordinates (x right, y down, z forward) to the world. A USD camera looks down its local -z with +y up, and its
frustum maps the aperture window to NDC [-1, 1], i.e. to the pixel *edges* -0.5 and W - 0.5. The canonical camera
(cx = W/2) is therefore half a pixel right of and below the image centre (W - 1)/2, and the aperture offsets
below carry that half pixel exactly.

Only `usd-core` (the `pxr` module) is needed, so all of this is tested on CPU; `pxr` is imported inside the
functions so that `import sim` never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from sim.camera import Camera
from sim.validate import as_array, as_pose, as_positive

if TYPE_CHECKING:
    from pxr import Gf, Usd, UsdGeom

# Attribute names of Isaac Sim's OpenCV pinhole lens schema (5.0+). Sources: isaac-sim/IsaacSim v5.1.0
# source/extensions/isaacsim.sensors.camera/isaacsim/sensors/camera/camera.py (set_opencv_pinhole_properties,
# OPENCV_PINHOLE_ATTRIBUTE_MAP) and isaacsim.ros2.bridge/python/impl/camera_info_utils.py (read_camera_info), and
# the ovrtx "Lens Calibration" page (nvidia-omniverse.github.io/ovrtx/sensors/cameras/lens_calibration.html),
# which declares them as `token omni:lensdistortion:model`, `float ...:fx/fy/cx/cy/k1...`, `int2 ...:imageSize`.
LENS_SCHEMA = "OmniLensDistortionOpenCvPinholeAPI"
LENS_MODEL_ATTR = "omni:lensdistortion:model"
LENS_MODEL = "opencvPinhole"
LENS_PREFIX = "omni:lensdistortion:opencvPinhole:"
# Isaac's order for the `pinhole` list: radial k1-k6 (rational model), tangential p1 p2, thin prism s1-s4.
LENS_COEFFICIENTS = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6", "s1", "s2", "s3", "s4")

_CV_TO_USD = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes -> USD camera axes (y up, looking down -z)


def _checked_camera(K: ArrayLike, width: int, height: int) -> Camera:
    # Camera validates shape, finiteness, positive focal lengths, zero skew and the image size.
    return Camera(K, width, height)


def camera_attributes(K: ArrayLike, width: int, height: int, focal_length: float = 24.0) -> dict[str, float]:
    """Return the USD camera attributes (focalLength, apertures and aperture offsets) that reproduce K exactly."""
    cam = _checked_camera(K, width, height)
    f = as_positive(focal_length, "focal_length")
    # USD maps the window [(-A/2 + o), (A/2 + o)] / f (normalised image coordinates) onto the pixel edges
    # [-0.5, W - 0.5]; equating that affine map with u = fx x + cx gives A = W f / fx and
    # o = ((W - 1)/2 - cx) f / fx. Along y the window's +y is up while v grows downwards, which flips the sign:
    # o_v = (cy - (H - 1)/2) f / fy. The "- 1" is the half pixel between OpenCV's pixel centres and pixel edges.
    return {
        "focalLength": f,
        "horizontalAperture": cam.width * f / cam.fx,
        "verticalAperture": cam.height * f / cam.fy,
        "horizontalApertureOffset": ((cam.width - 1) / 2.0 - cam.cx) * f / cam.fx,
        "verticalApertureOffset": (cam.cy - (cam.height - 1) / 2.0) * f / cam.fy,
    }


def opencv_pinhole_attributes(K: ArrayLike, width: int, height: int) -> dict[str, object]:
    """Return the attributes of Isaac Sim's OmniLensDistortionOpenCvPinholeAPI for K, without distortion.

    Keys are the full USD attribute names; values are plain Python (str, float, and a (W, H) int tuple for
    imageSize), converted to USD types by `define_camera`. cx and cy are K's values unchanged.

    Uncertain: the schema's pixel convention for cx, cy is not documented. NVIDIA's own example
    (standalone_examples/api/isaacsim.sensors.camera/camera_opencv_pinhole.py) feeds an OpenCV calibration K
    directly and overlays cv2.projectPoints, which suggests OpenCV's convention (pixel centres at integers), but
    Isaac's ROS CameraInfo code rescales cx by W'/W (not (cx + 0.5) W'/W - 0.5) and reports cx = W/2 for a
    centred camera, which would fit a pixel-corner convention. The two differ by half a pixel; the camera
    contract suite must settle it on an RTX machine.
    """
    cam = _checked_camera(K, width, height)
    attrs: dict[str, object] = {
        LENS_MODEL_ATTR: LENS_MODEL,
        LENS_PREFIX + "fx": cam.fx,
        LENS_PREFIX + "fy": cam.fy,
        LENS_PREFIX + "cx": cam.cx,
        LENS_PREFIX + "cy": cam.cy,
        LENS_PREFIX + "imageSize": (cam.width, cam.height),
    }
    attrs.update({LENS_PREFIX + name: 0.0 for name in LENS_COEFFICIENTS})
    return attrs


def usd_camera_matrix(wTc: ArrayLike) -> np.ndarray:
    """Return the USD camera's 4x4 camera-to-world matrix (column-vector convention) for the OpenCV pose wTc."""
    return as_pose(wTc, "wTc") @ _CV_TO_USD


def gf_matrix(T: ArrayLike) -> Gf.Matrix4d:
    """Return a numpy column-vector 4x4 transform as a Gf.Matrix4d (row-vector: transposed, translation in row 3)."""
    from pxr import Gf

    T = as_array(T, (4, 4), "T")
    return Gf.Matrix4d(T.T.tolist())


def define_camera(
    stage: Usd.Stage,
    path: str,
    K: ArrayLike,
    width: int,
    height: int,
    wTc: ArrayLike,
    near: float = 0.01,
    far: float = 1000.0,
    *,
    lens_schema: bool = True,
) -> UsdGeom.Camera:
    """Define (or redefine) a perspective USD camera at `path` that images like K from the OpenCV pose wTc.

    The camera gets the aperture attributes of `camera_attributes`, fStop 0 (no depth of field), the clipping
    range and exactly one `xformOp:transform`. With `lens_schema` it also carries the OpenCV pinhole lens
    attributes of `opencv_pinhole_attributes` and lists OmniLensDistortionOpenCvPinholeAPI in its apiSchemas.
    That schema is only registered inside Isaac Sim (usd-core does not know it), so the attributes are authored
    directly under their schema names; Isaac's renderer then reads them as the schema's values and they drive the
    projection instead of the apertures. Isaac code notes that the renderer may ignore aperture offsets, so the
    schema is the route for an off-centre principal point (see `opencv_pinhole_attributes` for its caveat).
    """
    from pxr import Gf, Sdf, UsdGeom

    if not isinstance(path, str) or not Sdf.Path.IsValidPathString(path) or not path.startswith("/"):
        raise ValueError(f"path: expected an absolute prim path, got {path!r}")
    near = as_positive(near, "near")
    far = as_positive(far, "far")
    if far <= near:
        raise ValueError(f"near/far: need 0 < near < far, got near={near}, far={far}")
    attrs = camera_attributes(K, width, height)
    lens = opencv_pinhole_attributes(K, width, height)
    pose = usd_camera_matrix(wTc)

    camera = UsdGeom.Camera.Define(stage, path)
    camera.CreateProjectionAttr(UsdGeom.Tokens.perspective)
    camera.CreateFocalLengthAttr(attrs["focalLength"])
    camera.CreateHorizontalApertureAttr(attrs["horizontalAperture"])
    camera.CreateVerticalApertureAttr(attrs["verticalAperture"])
    camera.CreateHorizontalApertureOffsetAttr(attrs["horizontalApertureOffset"])
    camera.CreateVerticalApertureOffsetAttr(attrs["verticalApertureOffset"])
    camera.CreateFStopAttr(0.0)
    camera.CreateClippingRangeAttr(Gf.Vec2f(near, far))

    # One op holding the whole pose: set_camera_pose rewrites it per frame, and no rotate/translate
    # decomposition can drift from the matrix we were given.
    camera.ClearXformOpOrder()
    camera.AddTransformOp(UsdGeom.XformOp.PrecisionDouble).Set(gf_matrix(pose))

    prim = camera.GetPrim()
    if not lens_schema:
        # A redefined camera must not keep lens attributes that would override its apertures inside Isaac.
        prim.RemoveAppliedSchema(LENS_SCHEMA)
        for name in lens:
            prim.RemoveProperty(name)
    else:
        prim.AddAppliedSchema(LENS_SCHEMA)
        for name, value in lens.items():
            if name == LENS_MODEL_ATTR:
                type_name, usd_value = Sdf.ValueTypeNames.Token, value
            elif name.endswith(":imageSize"):
                type_name, usd_value = Sdf.ValueTypeNames.Int2, Gf.Vec2i(*value)
            else:
                type_name, usd_value = Sdf.ValueTypeNames.Float, float(value)
            # custom=False: inside Isaac these are the schema's own properties, not user data.
            prim.CreateAttribute(name, type_name, custom=False).Set(usd_value)
    return camera


def _transform_op(camera: UsdGeom.Camera) -> UsdGeom.XformOp:
    from pxr import UsdGeom

    if not camera or not camera.GetPrim().IsValid():
        raise ValueError("camera: not a valid UsdGeom.Camera")
    ops = camera.GetOrderedXformOps()
    if len(ops) != 1 or ops[0].GetOpType() != UsdGeom.XformOp.TypeTransform:
        names = [op.GetOpName() for op in ops]
        raise ValueError(f"camera {camera.GetPath()}: expected exactly one xformOp:transform, got {names}")
    return ops[0]


def set_camera_pose(camera: UsdGeom.Camera, wTc: ArrayLike) -> None:
    """Move a camera made by `define_camera` to the OpenCV pose wTc."""
    _transform_op(camera).Set(gf_matrix(usd_camera_matrix(wTc)))


def project_with_usd(camera: UsdGeom.Camera, points_world: ArrayLike, width: int, height: int) -> np.ndarray:
    """Project (N, 3) world points through USD's own camera frustum to (N, 2) OpenCV pixels (NaN behind it)."""
    from pxr import Usd

    if not camera or not camera.GetPrim().IsValid():
        raise ValueError("camera: not a valid UsdGeom.Camera")
    P = as_array(points_world, (None, 3), "points_world")
    W = as_positive(width, "width")
    H = as_positive(height, "height")
    frustum = camera.GetCamera(Usd.TimeCode.Default()).frustum
    # Gf matrices act on row vectors: clip = [P 1] @ view @ projection.
    view = np.array(frustum.ComputeViewMatrix(), dtype=np.float64)
    proj = np.array(frustum.ComputeProjectionMatrix(), dtype=np.float64)
    clip = np.concatenate([P, np.ones((len(P), 1))], axis=1) @ view @ proj
    w = clip[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        ndc = clip[:, :2] / w[:, None]
    # NDC -1..1 spans the pixel edges -0.5..W-0.5; NDC +y is up, pixel v is down.
    uv = np.stack([(ndc[:, 0] + 1.0) * 0.5 * W - 0.5, (1.0 - ndc[:, 1]) * 0.5 * H - 0.5], axis=1)
    uv[w <= 0] = np.nan
    return uv
