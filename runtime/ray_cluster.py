"""The Ray cluster a job runs on: the address to join (and where it came from), a fast check that it is there, a local
Ray otherwise, and the render-backend check that runs before Ray starts."""

from __future__ import annotations

import math
import os
from typing import Any

from configs.schema import Config
from sim.mujoco_gl import choose_platform
from sim.render import check_backend

NAMESPACE = "cnsv2"  # every job's actors live here, so the trainer finds the DAgger actors by name


def check_local_backend(cfg: Config) -> None:
    """Fail before Ray starts when the job's renderers would run here on a backend this machine cannot run.

    Joining a cluster skips the check: the renderers run on other nodes (RTX workers for Isaac), which check for
    themselves when they start.
    """
    if cfg.datagen.ray_address is None and os.environ.get("RAY_ADDRESS") is None:
        check_backend(cfg.sim.renderer.backend)


def ray_address(cfg: Config) -> tuple[str | None, str]:
    """The Ray cluster to join and where that came from: (address or None for a local Ray, source)."""
    if cfg.datagen.ray_address is not None:
        return cfg.datagen.ray_address, "datagen.ray_address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "$RAY_ADDRESS"
    return None, "neither datagen.ray_address nor $RAY_ADDRESS is set"


def check_ray_address(cfg: Config, timeout: float = 5.0) -> None:
    """Fail within seconds, naming the address and where it came from, when the Ray cluster to join is not there.

    Ray itself retries an unreachable address for minutes. Covered: host:port (the GCS), ray://host:port (Ray
    Client) and 'auto' (the cluster `ray start` recorded on this machine); 'local' and no address start a local Ray.
    ConnectionError otherwise, saying how to start a cluster or use a local one.
    """
    import socket

    address, source = ray_address(cfg)
    if address is None or address in ("local", ""):
        return
    hint = (
        "Start the cluster (`ray start --head` on its head node), or unset $RAY_ADDRESS and set "
        "datagen.ray_address=null to start a local Ray instead."
    )
    target = address
    if address == "auto":
        try:
            from ray._private.utils import read_ray_address  # the file `ray start` writes; no public accessor

            target = read_ray_address() or ""
        except Exception:  # a Ray without it: let ray.init judge
            return
        if not target:
            raise ConnectionError(
                f"Ray address 'auto' (from {source}): no Ray cluster was started on this machine. {hint}"
            )
    host, _, port = target.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ConnectionError(f"Ray address {address!r} (from {source}) is not host:port or ray://host:port. {hint}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        via = f" (recorded for 'auto': {target})" if address == "auto" else ""
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address}{via} (from {source}): {err.strerror or err}. {hint}"
        ) from None


def init_ray(cfg: Config, env_vars: dict[str, str] | None = None, min_cpus: float = 0.0) -> bool:
    """Join RAY_ADDRESS / datagen.ray_address, or start a local Ray; returns True when this call started it.

    A local Ray advertises at least `min_cpus` logical CPUs, so that producers and trainer that each reserve a CPU
    can all run on a small machine (they share the cores; nothing deadlocks waiting for a slot).
    """
    import ray

    if ray.is_initialized():
        return False
    check_ray_address(cfg)
    platform = choose_platform()  # probe GL once here; the workers inherit the answer
    env = {"MUJOCO_GL": platform, "PYOPENGL_PLATFORM": platform, **(env_vars or {})}
    address = cfg.datagen.ray_address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "runtime_env": {"env_vars": env}, "log_to_driver": True}
    if address is None:
        cpus = cfg.datagen.num_cpus or os.cpu_count() or 1
        kwargs.update(num_cpus=max(cpus, math.ceil(min_cpus)), include_dashboard=False)
    ray.init(address=address, **kwargs)
    return True
