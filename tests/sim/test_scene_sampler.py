"""The scene sampler: counts, settled resting poses, materials, lights, effects, splits and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from configs import load_config
from sim.scene import SceneSpec
from sim.scene_sampler import SceneSampler

pytestmark = pytest.mark.unit


def _sampler(*overrides: str) -> SceneSampler:
    cfg = load_config("smoke", list(overrides)).sim
    return SceneSampler(cfg.scene, cfg.assets)


def _sample(sampler: SceneSampler, seed: int) -> SceneSpec:
    return sampler.sample(np.random.default_rng(seed), seed=seed)


def test_same_seed_same_scene() -> None:
    s = _sampler()
    a, b = _sample(s, 11), _sample(s, 11)
    assert len(a.objects) == len(b.objects)
    for oa, ob in zip(a.objects, b.objects, strict=True):
        assert oa.mesh.name == ob.mesh.name
        np.testing.assert_array_equal(oa.mesh.vertices, ob.mesh.vertices)
        np.testing.assert_array_equal(oa.pose, ob.pose)
        assert (oa.material.texture is None) == (ob.material.texture is None)
        if oa.material.texture is not None:
            np.testing.assert_array_equal(oa.material.texture, ob.material.texture)
    assert a.lights == b.lights and a.effects == b.effects and a.ambient == b.ambient


def test_scenes_vary_and_respect_the_config() -> None:
    s = _sampler("sim.scene.objects=[2,4]", "sim.scene.lights=[1,3]")
    counts, names, n_lights = set(), set(), set()
    for seed in range(12):
        scene = _sample(s, seed)
        counts.add(len(scene.objects))
        n_lights.add(len(scene.lights))
        names |= {o.mesh.name.split("/")[1] for o in scene.objects}
        for light in scene.lights:
            assert light.direction[2] < 0  # lights shine downwards
        assert 0.1 <= max(scene.ambient) <= 0.45
    assert counts <= {2, 3, 4} and len(counts) >= 2
    assert n_lights <= {1, 2, 3} and len(n_lights) >= 2
    assert len(names) >= 5  # many mesh families show up


def test_objects_rest_on_the_ground_near_the_centre() -> None:
    s = _sampler("sim.scene.objects=[4,6]")
    for seed in range(4):
        scene = _sample(s, seed)
        lows = []
        for o in scene.objects:
            P = o.mesh.vertices @ o.pose[:3, :3].T + o.pose[:3, 3]
            lows.append(P[:, 2].min())
            assert P[:, 2].min() > -0.003, "an object sank through the ground"
            assert np.linalg.norm(o.pose[:2, 3]) < 0.6, "an object rolled far away"
            assert np.ptp(P, axis=0).max() <= 0.2 + 1e-9
        assert min(lows) < 0.003, "at least one object lies on the ground"
        # After settling nothing is left hanging in the air where it was dropped.
        assert max(o.pose[2, 3] for o in scene.objects) < 0.35


@pytest.mark.parametrize(("prob", "expect_textured"), [("1.0", False), ("0.0", True)])
def test_textureless_probability(prob: str, expect_textured: bool) -> None:
    s = _sampler(f"sim.scene.textureless_prob={prob}", f"sim.scene.ground_textureless_prob={prob}")
    for seed in range(3):
        scene = _sample(s, seed)
        assert all((o.material.texture is not None) == expect_textured for o in scene.objects)
        assert (scene.ground.texture is not None) == expect_textured


def test_effects_probability() -> None:
    never = _sampler("sim.scene.effects.prob=0")
    always = _sampler("sim.scene.effects.prob=1", "sim.scene.effects.noise_std=[1,2]")
    assert all(_sample(never, k).effects.identity for k in range(5))
    assert all(1.0 <= _sample(always, k).effects.noise_std <= 2.0 for k in range(5))


@pytest.mark.slow
def test_train_and_heldout_procedural_assets_are_disjoint() -> None:
    train, held = _sampler("sim.assets.split=train"), _sampler("sim.assets.split=heldout")
    names = {"train": set(), "heldout": set()}
    for split, s in (("train", train), ("heldout", held)):
        for seed in range(15):
            names[split] |= {o.mesh.name for o in _sample(s, seed).objects}
    assert names["train"] and names["heldout"] and not names["train"] & names["heldout"]


def test_empty_heldout_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="heldout_fraction"):
        _sampler("sim.assets.split=heldout", "sim.assets.heldout_fraction=0")


def test_scaling_a_scene_zooms_everything() -> None:
    scene = _sample(_sampler(), 2)
    big = scene.scaled(2.0)
    for a, b in zip(scene.objects, big.objects, strict=True):
        np.testing.assert_allclose(b.mesh.vertices, 2.0 * a.mesh.vertices)
        np.testing.assert_allclose(b.pose[:3, 3], 2.0 * a.pose[:3, 3])
        np.testing.assert_array_equal(b.pose[:3, :3], a.pose[:3, :3])
    assert big.ground.tile_size == pytest.approx(2.0 * scene.ground.tile_size)
    with pytest.raises(ValueError):
        scene.scaled(0.0)
