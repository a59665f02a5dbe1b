"""Settle objects into resting poses on the ground with MuJoCo rigid-body physics (convex-hull collisions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from assets.mesh import Mesh
from sim.mujoco_gl import load_mujoco
from sim.validate import as_pose

TIMESTEP = 0.002


def settle(meshes: Sequence[Mesh], start_poses: Sequence[np.ndarray], seconds: float = 2.0) -> list[np.ndarray]:
    """Drop meshes from their start poses onto the plane z = 0 and return their resting poses wTo (4x4).

    Deterministic: the same inputs give the same poses on the same machine.
    """
    if len(meshes) != len(start_poses):
        raise ValueError(f"settle: {len(meshes)} meshes but {len(start_poses)} start poses")
    if not meshes:
        return []
    mujoco = load_mujoco()
    spec = mujoco.MjSpec()
    spec.option.timestep = TIMESTEP
    # Damping and friction make objects come to rest within a couple of simulated seconds instead of rolling away.
    spec.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[5.0, 5.0, 0.1], friction=[1.0, 0.01, 0.001])
    for i, (mesh, pose) in enumerate(zip(meshes, start_poses, strict=True)):
        T = as_pose(pose, f"start_poses[{i}]")
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, T[:3, :3].ravel())
        spec.add_mesh(name=f"m{i}", uservert=mesh.vertices.ravel().tolist(), userface=mesh.faces.ravel().tolist())
        body = spec.worldbody.add_body(name=f"b{i}", pos=T[:3, 3], quat=quat)
        body.add_freejoint()
        body.add_geom(type=mujoco.mjtGeom.mjGEOM_MESH, meshname=f"m{i}", density=500.0, friction=[1.0, 0.01, 0.001])
    model = spec.compile()
    model.dof_damping[:] = 0.02
    data = mujoco.MjData(model)
    mujoco.mj_step(model, data, nstep=max(1, round(seconds / TIMESTEP)))
    poses = []
    for i in range(len(meshes)):
        T = np.eye(4)
        body = model.body(f"b{i}").id
        T[:3, :3] = data.xmat[body].reshape(3, 3)
        T[:3, 3] = data.xpos[body]
        poses.append(T)
    return poses
