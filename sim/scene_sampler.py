"""Random scenes for visual servoing: 1-6 objects dropped in a disc and settled by physics, a textured ground,
a sky, 1-3 coloured directional lights, Phong materials and camera effects. A scene is a pure function of its
random stream, and comes out as plain data (`SceneSpec`) that any render backend draws.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from assets import (
    MESH_FAMILIES,
    TEXTURE_FAMILIES,
    make_mesh,
    make_sky,
    make_texture,
    procedural_name,
    procedural_seed,
    random_color,
)
from assets.mesh import Mesh
from configs.schema import AssetsConfig, SceneConfig
from sim.asset_catalogue import AssetCatalogue
from sim.geometry import make_pose
from sim.physics import settle
from sim.scene import ImageEffects, LightSpec, MaterialSpec, ObjectSpec, SceneSpec, SkySpec

TEXTURE_SIZE = 256
SKY_WIDTH = 512


class SceneSampler:
    """Draws SceneSpecs from the scene config and the asset catalogue of one split (train or held-out)."""

    def __init__(self, cfg: SceneConfig, assets: AssetsConfig) -> None:
        self.cfg = cfg
        self.assets = assets
        self.catalogue = AssetCatalogue(assets)
        self._meshes = self.catalogue.in_split("meshes")
        self._textures = self.catalogue.in_split("textures")
        self._skies = self.catalogue.in_split("skies")
        uses_procedural = assets.procedural_meshes or assets.procedural_textures
        if uses_procedural and assets.split == "heldout" and assets.heldout_fraction == 0.0:
            raise ValueError("sim.assets: split 'heldout' is empty with heldout_fraction 0; raise the fraction")

    # -- assets ------------------------------------------------------------------------------------------------
    def _mesh(self, rng: np.random.Generator, size: float) -> Mesh:
        n_proc = len(MESH_FAMILIES) if self.assets.procedural_meshes else 0
        i = int(rng.integers(n_proc + len(self._meshes)))
        if i < n_proc:
            family = MESH_FAMILIES[i]
            seed = procedural_seed(rng, family, self.assets.split, self.assets.heldout_fraction, "mesh")
            return make_mesh(family, np.random.default_rng(seed), procedural_name(family, seed)).scaled(size)
        folder, name = self._meshes[i - n_proc]
        return folder.load(name, size=size, strict=self.assets.strict_textures)

    def _texture(self, rng: np.random.Generator) -> np.ndarray:
        n_proc = len(TEXTURE_FAMILIES) if self.assets.procedural_textures else 0
        i = int(rng.integers(n_proc + len(self._textures)))
        if i < n_proc:
            family = TEXTURE_FAMILIES[i]
            seed = procedural_seed(rng, family, self.assets.split, self.assets.heldout_fraction, "texture")
            return make_texture(family, np.random.default_rng(seed), TEXTURE_SIZE)
        folder, name = self._textures[i - n_proc]
        return folder.load(name, size=TEXTURE_SIZE)

    def _material(
        self, rng: np.random.Generator, textureless: bool, tile: float | None = None, own: np.ndarray | None = None
    ) -> MaterialSpec:
        c = self.cfg
        spec, shine = float(rng.uniform(*c.specular)), float(rng.uniform(*c.shininess))
        if own is not None:  # a scanned object keeps its own texture
            return MaterialSpec((1.0, 1.0, 1.0, 1.0), own, None, spec, shine)
        if textureless:
            return MaterialSpec((*random_color(rng), 1.0), None, None, spec, shine)
        return MaterialSpec((1.0, 1.0, 1.0, 1.0), self._texture(rng), tile, spec, shine)

    # -- scene -------------------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, seed: int | None = None) -> SceneSpec:
        """Draw one scene from `rng`; `seed` is only recorded in the spec."""
        c = self.cfg
        n = int(rng.integers(c.objects[0], c.objects[1] + 1))
        meshes, materials, starts = [], [], []
        top = 0.0
        for _ in range(n):
            mesh = self._mesh(rng, float(rng.uniform(*c.object_size)))
            textureless = mesh.texture is None and rng.random() < c.textureless_prob
            materials.append(self._material(rng, textureless, own=mesh.texture))
            # Stack the drops so that no two objects start interpenetrating.
            radius = float(np.linalg.norm(mesh.vertices, axis=1).max())
            r, a = c.drop_radius * np.sqrt(rng.random()), rng.uniform(-np.pi, np.pi)
            z = top + radius + 0.005
            top = z + radius
            starts.append(make_pose(_random_rotation(rng), [r * np.cos(a), r * np.sin(a), z]))
            meshes.append(mesh)
        poses = settle(meshes, starts, c.settle_seconds)
        objects = tuple(ObjectSpec(m, mat, T) for m, mat, T in zip(meshes, materials, poses, strict=True))

        ground = self._material(rng, rng.random() < c.ground_textureless_prob, float(rng.uniform(*c.ground_tile)))
        return SceneSpec(
            objects=objects,
            ground=ground,
            sky=self._sky(rng),
            lights=self._lights(rng),
            ambient=tuple(float(rng.uniform(*c.ambient)) * _tint(rng, 0.1)),
            effects=self._effects(rng),
            seed=seed,
        )

    def relight(self, scene: SceneSpec, rng: np.random.Generator) -> SceneSpec:
        """The same scene under lights and ambient drawn afresh from `rng` (the lighting-change hard case)."""
        ambient = tuple(float(rng.uniform(*self.cfg.ambient)) * _tint(rng, 0.1))
        return replace(scene, lights=self._lights(rng), ambient=ambient)

    def _sky(self, rng: np.random.Generator) -> SkySpec:
        zenith = tuple(np.clip(np.array([0.3, 0.5, 0.85]) * _tint(rng, 0.3) * rng.uniform(0.6, 1.1), 0, 1))
        horizon = tuple(np.clip(np.array([0.85, 0.87, 0.9]) * _tint(rng, 0.15) * rng.uniform(0.7, 1.1), 0, 1))
        if rng.random() >= self.cfg.sky_image_prob:
            return SkySpec(zenith, horizon, None)
        if self._skies and (not rng.integers(2)):
            folder, name = self._skies[int(rng.integers(len(self._skies)))]
            return SkySpec(zenith, horizon, folder.load(name, size=SKY_WIDTH))
        return SkySpec(zenith, horizon, make_sky(rng, SKY_WIDTH))

    def _lights(self, rng: np.random.Generator) -> tuple[LightSpec, ...]:
        c = self.cfg
        out = []
        for _ in range(int(rng.integers(c.lights[0], c.lights[1] + 1))):
            el = np.radians(rng.uniform(*c.light_elevation_deg))
            az = rng.uniform(-np.pi, np.pi)
            direction = -np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
            colour = np.clip(float(rng.uniform(*c.light_intensity)) * _tint(rng, c.light_tint), 0.0, 1.0)
            out.append(LightSpec(tuple(direction), tuple(colour), tuple(0.5 * colour)))
        return tuple(out)

    def _effects(self, rng: np.random.Generator) -> ImageEffects:
        e = self.cfg.effects
        if rng.random() >= e.prob:
            return ImageEffects()
        return ImageEffects(
            float(rng.uniform(*e.exposure)), float(rng.uniform(*e.blur_sigma)), float(rng.uniform(*e.noise_std))
        )


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    # A normalised Gaussian quaternion is uniform on SO(3).
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _tint(rng: np.random.Generator, amount: float) -> np.ndarray:
    return 1.0 - amount * rng.random(3)
