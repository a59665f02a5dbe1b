"""SceneSpec: a scene as plain data (meshes, materials, poses, lights, sky), consumed by every render backend.

A scene is a pure function of its seed (see `sim.scene_sampler`). Object poses are final resting poses, already
settled by physics, so a backend only places and draws; MuJoCo and a future Isaac backend render the same scene.
Lengths are metres, colours are linear RGB in [0, 1], world z is up and the ground plane is z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from assets.mesh import Mesh

RGB = tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class MaterialSpec:
    """A surface: a base colour (multiplied with the texture, if any), and Phong specular and shininess."""

    rgba: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    texture: np.ndarray | None = field(default=None, repr=False)  # (H, W, 3) uint8
    tile_size: float | None = None  # metres per texture repeat on the ground; None: the mesh's own UVs
    specular: float = 0.3
    shininess: float = 0.3

    @property
    def textureless(self) -> bool:
        """True for a flat colour: the paper's hard case."""
        return self.texture is None


@dataclass(frozen=True, eq=False)
class ObjectSpec:
    """One rigid object: its mesh in the object frame, its material and its resting pose wTo."""

    mesh: Mesh
    material: MaterialSpec
    pose: np.ndarray  # (4, 4)


@dataclass(frozen=True)
class LightSpec:
    """A directional light; `direction` points from the light into the scene (world frame)."""

    direction: tuple[float, float, float]
    diffuse: RGB
    specular: RGB = (0.3, 0.3, 0.3)
    cast_shadow: bool = False


@dataclass(frozen=True, eq=False)
class SkySpec:
    """The background: an equirectangular image (H = W/2) when given, else a zenith-to-horizon gradient."""

    zenith: RGB = (0.35, 0.55, 0.85)
    horizon: RGB = (0.85, 0.88, 0.92)
    image: np.ndarray | None = field(default=None, repr=False)  # (W/2, W, 3) uint8


@dataclass(frozen=True)
class ImageEffects:
    """Camera effects applied to each rendered image: exposure gain, Gaussian blur (px) and noise (0-255 std)."""

    exposure: float = 1.0
    blur_sigma: float = 0.0
    noise_std: float = 0.0

    @property
    def identity(self) -> bool:
        """True when the effects leave the image unchanged."""
        return self.exposure == 1.0 and self.blur_sigma == 0.0 and self.noise_std == 0.0


@dataclass(frozen=True, eq=False)
class SceneSpec:
    """Everything a backend needs to draw one scene. `ground`/`sky` None mean no ground plane / a black sky."""

    objects: tuple[ObjectSpec, ...] = ()
    ground: MaterialSpec | None = None
    sky: SkySpec | None = None
    lights: tuple[LightSpec, ...] = (LightSpec((0.0, 0.3, -1.0), (0.8, 0.8, 0.8)),)
    ambient: RGB = (0.3, 0.3, 0.3)
    effects: ImageEffects = ImageEffects()
    ground_half_size: float = 25.0
    seed: int | None = None

    def scaled(self, k: float) -> SceneSpec:
        """Return the scene zoomed by k about the world origin (meshes, positions and ground tiles)."""
        if not k > 0:
            raise ValueError(f"scene scale factor must be > 0, got {k}")
        objs = []
        for o in self.objects:
            T = o.pose.copy()
            T[:3, 3] *= k
            objs.append(ObjectSpec(o.mesh.scaled(k), o.material, T))
        ground = self.ground
        if ground is not None and ground.tile_size is not None:
            ground = replace(ground, tile_size=ground.tile_size * k)
        return replace(self, objects=tuple(objs), ground=ground, ground_half_size=self.ground_half_size * k)
