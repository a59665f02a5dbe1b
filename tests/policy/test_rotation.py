"""policy.rotation: a quarter turn of the image is a camera rotation about its optical axis, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs import load_config
from policy.control import normalize_velocity, pbvs
from policy.matching import gt_coarse_match
from policy.rotation import (
    nearest_quarter_turn,
    rot90_pose,
    rotate_label,
    rotate_match_grid,
    turn_image,
    turn_images,
    unturn_pixels,
    velocity_from_turned,
)
from sim import ServoEnv
from sim.geometry import exp_so3, log_so3, make_pose, rot_z


@pytest.fixture(scope="module")
def env():  # type: ignore[no-untyped-def]
    cfg = load_config("smoke", ["sim.scene.effects.prob=0"])
    with ServoEnv(cfg.sim) as e:
        e.reset(3)
        yield e


@pytest.mark.integration
@pytest.mark.parametrize("k", [1, 2, 3])
def test_turned_image_is_what_the_turned_camera_renders(env, k: int) -> None:  # type: ignore[no-untyped-def]
    K, wTc = env.camera.K, env.wTc
    image = env.renderer.render(K, wTc).rgb
    turned_camera = env.renderer.render(K, wTc @ rot90_pose(k)).rgb.astype(float)
    turned = turn_image(image, k).astype(float)
    inner = (slice(2, -2), slice(2, -2))
    # Measured: 0.005-0.012 grey levels; a plain np.rot90 (half-pixel-wrong centre) is 2-3, no turn ~40.
    assert np.abs(turned - turned_camera)[inner].mean() < 0.1
    assert np.abs(np.rot90(image, k, axes=(0, 1)) - turned_camera)[inner].mean() > 1.0
    # The tensor form is the same operation.
    t = torch.from_numpy(image).permute(2, 0, 1)[None]
    assert torch.equal(turn_images(t, k)[0].permute(1, 2, 0), torch.from_numpy(turn_image(image, k)))


@pytest.mark.unit
def test_label_of_the_turned_camera_maps_back_exactly() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        angle = rng.uniform(0, np.pi)
        axis = rng.normal(size=3)
        dTc = make_pose(exp_so3(angle * axis / np.linalg.norm(axis)), rng.normal(size=3))
        d = rng.uniform(0.3, 2.0)
        truth = normalize_velocity(pbvs(dTc), d)
        for k in range(4):
            turned = rotate_label(dTc, k, d)
            assert np.allclose(turned, normalize_velocity(pbvs(dTc @ rot90_pose(k)), d))
            # velocity_from_turned works in the unit world (d* = 1): scale the translation back.
            back = velocity_from_turned(np.concatenate([turned[:3] * d, turned[3:]]), k)
            assert np.allclose(np.concatenate([back[:3] / d, back[3:]]), truth, atol=1e-9)


@pytest.mark.unit
def test_nearest_turn_leaves_at_most_45_degrees_of_in_plane_rotation() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        yaw = rng.uniform(-np.pi, np.pi)
        tilt = exp_so3(rng.normal(size=3) * 0.05)
        dTc = make_pose(tilt @ rot_z(yaw), rng.normal(size=3))
        k = nearest_quarter_turn(dTc)
        residual = np.degrees(np.linalg.norm(log_so3(dTc[:3, :3] @ rot90_pose(k)[:3, :3])))
        assert residual < 45.0 + 12.0  # the small tilt adds a little
    # A half turn about the optical axis, where theta-u flips sign, becomes no rotation at all.
    assert nearest_quarter_turn(make_pose(rot_z(np.pi), np.zeros(3))) == 2


@pytest.mark.integration
def test_turned_match_grid_equals_the_turned_camera_s_ground_truth(env) -> None:  # type: ignore[no-untyped-def]
    K, wTc, wTd = env.camera.K, env.wTc, env.wTd
    depth_c = env.renderer.render(K, wTc).depth
    depth_d = env.renderer.render(K, wTd).depth
    dTc = np.linalg.inv(wTd) @ wTc
    match, valid = gt_coarse_match(depth_c, K, dTc, 16, depth_d=depth_d)
    for k in (1, 2, 3):
        m_k, v_k = rotate_match_grid(match, valid, k)
        wTc_k = wTc @ rot90_pose(k)
        truth, truth_valid = gt_coarse_match(
            env.renderer.render(K, wTc_k).depth, K, np.linalg.inv(wTd) @ wTc_k, 16, depth_d=depth_d
        )
        both = v_k & truth_valid
        assert both.sum() > 0.8 * truth_valid.sum()
        # One pixel of principal-point shift is 1/16 of a cell (more only where a patch centre sits on a depth edge).
        err = np.abs(m_k[both] - truth[both]).max(axis=-1)
        assert np.median(err) < 0.1 and np.percentile(err, 90) < 0.15


@pytest.mark.unit
def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="square"):
        turn_image(np.zeros((4, 6, 3), np.uint8), 1)
    with pytest.raises(ValueError, match="square"):
        turn_images(torch.zeros(1, 3, 4, 6), 1)
    with pytest.raises(ValueError, match="quarter turns"):
        rot90_pose(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="square"):
        rotate_match_grid(np.zeros((4, 6, 2)), np.zeros((4, 6), bool), 1)


@pytest.mark.unit
def test_training_turns_are_drawn_within_the_margin_and_cover_both_sides_of_the_boundary() -> None:
    from policy.rotation import draw_quarter_turn, turn_angles

    rng = np.random.default_rng(2)
    near_boundary = make_pose(rot_z(np.radians(40.0)), np.zeros(3))  # turns leave 40 deg (k=0) and 50 deg (k=3)
    assert np.allclose(sorted(turn_angles(near_boundary))[:2], [40.0, 50.0])
    draws = {draw_quarter_turn(near_boundary, 70.0, rng) for _ in range(50)}
    assert draws == {0, 3}
    assert {draw_quarter_turn(near_boundary, 45.0, rng) for _ in range(20)} == {0}
    small = make_pose(rot_z(np.radians(5.0)), np.zeros(3))  # the next turn would leave 85 deg
    assert {draw_quarter_turn(small, 70.0, rng) for _ in range(20)} == {0}
    tilted = make_pose(exp_so3([2.0, 0.0, 0.0]), np.zeros(3))  # 115 deg about x: no turn within 70 deg
    assert draw_quarter_turn(tilted, 70.0, rng) == nearest_quarter_turn(tilted)


@pytest.mark.unit
@pytest.mark.parametrize("shape", [(5, 7), (6, 6)])
def test_unturn_pixels_maps_each_turned_pixel_to_the_pixel_holding_its_value(shape: tuple[int, int]) -> None:
    image = np.arange(shape[0] * shape[1]).reshape(shape)
    for k in (0, 1, 2, 3, 5, -1):  # whole turns drop out, as in np.rot90
        turned = np.rot90(image, k)
        ys, xs = np.mgrid[: turned.shape[0], : turned.shape[1]]
        px = np.column_stack([xs.ravel(), ys.ravel()]).astype(float)
        back = unturn_pixels(px, k, shape[1], shape[0]).astype(int)
        assert np.array_equal(image[back[:, 1], back[:, 0]], turned[ys.ravel(), xs.ravel()]), k
    sub = unturn_pixels(np.array([[0.25, 1.5]]), 1, shape[1], shape[0])  # sub-pixel positions map linearly
    assert np.allclose(sub, [[shape[1] - 1 - 1.5, 0.25]])
