"""The Ray cluster a job runs on: the address to join (and where it came from), a fast check that it is there, a local
Ray otherwise, and the render-backend check that runs before Ray starts."""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any

from configs.schema import Config
from sim.mujoco_gl import choose_platform
from sim.render import check_backend

NAMESPACE = "cnsv2"  # every job's actors live here, so the trainer finds the DAgger actors by name
GCS_PORT_VARIABLE = "RAY_GCS_SERVER_PORT"  # the port a new local Ray's GCS listens on, read by ray.init

# Lines that Ray's own actors print on every run and that no user can act on, dropped from what the workers forward
# to this terminal (the same lines stay in Ray's session logs). `RAY_DEDUP_LOGS=0` shows everything again.
RAY_CHATTER = (
    # Ray Train's PlacementGroupCleaner asks the State API, which needs the dashboard a local Ray here does not start,
    # once a second: the cleaner only matters when a driver dies without shutting Ray down.
    r"Failed to query Ray Train Controller actor state",
    # Ray Train's own PreemptionWatcher actor, logged at ERROR level by Ray's core worker about Ray's own code.
    r"Actor with class name: 'PreemptionWatcher'.*constructor arguments in the object store",
    # Every ray.train.report() as a 500-character dict. Ray Train's LoggingConfig cannot drop it: its logger is named
    # after the file path, not `ray.train.*`. The driver's progress bar shows the same numbers.
    r"Reporting training result \d+: TrainingReport\(",
)


def chatter_pattern() -> str:
    """The regular expression of `RAY_CHATTER` lines, plus the user's own `$RAY_DEDUP_LOGS_SKIP_REGEX` if set."""
    own = os.environ.get("RAY_DEDUP_LOGS_SKIP_REGEX")
    return "|".join(f"(?:{p})" for p in (*RAY_CHATTER, *([own] if own else [])))


def is_chatter(line: str) -> bool:
    """Whether a forwarded worker log line is Ray's internal chatter that the terminal does not show."""
    return re.search(chatter_pattern(), line) is not None


class _TokenAuthOn(logging.Filter):
    """Drops Ray's warning that a new local Ray turned token authentication on: the secure default, nothing to do.
    (Setting RAY_AUTH_MODE=token to avoid it makes Ray 2.60 skip creating the token, and the local Ray fails.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


def quiet_ray_driver() -> None:
    """Drop `RAY_CHATTER` from the worker lines this driver prints; everything else (errors, warnings, prints of our
    own actors) still reaches the terminal.

    Ray's documented knob is `$RAY_DEDUP_LOGS_SKIP_REGEX`, but Ray reads it once, when `ray` is first imported (in
    tests and the pipeline before any of our code runs), into the driver's two log deduplicators; so the pattern goes
    into those. A Ray without them prints the chatter: noise, not a failure.
    """
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenAuthOn) for f in auth.filters):
        auth.addFilter(_TokenAuthOn())
    try:
        from ray._private import ray_logging
    except ImportError:
        return
    skip = re.compile(chatter_pattern())
    for name in ("stdout_deduplicator", "stderr_deduplicator"):
        dedup = getattr(ray_logging, name, None)
        if dedup is not None and hasattr(dedup, "skip_re"):
            dedup.skip_re = skip


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
    can all run on a small machine (they share the cores; nothing deadlocks waiting for a slot). Its GCS listens on
    $RAY_GCS_SERVER_PORT if set, else on a free port, and the job's workers get that address as $RAY_ADDRESS, so that
    Ray's own address lookups inside them find this Ray even where other local Rays run.
    """
    import ray

    if ray.is_initialized():
        return False
    check_ray_address(cfg)
    platform = choose_platform()  # probe GL once here; the workers inherit the answer
    env = {"MUJOCO_GL": platform, "PYOPENGL_PLATFORM": platform, **(env_vars or {})}
    address = cfg.datagen.ray_address or os.environ.get("RAY_ADDRESS")
    # log_to_driver: our actors' warnings and errors must reach the terminal; quiet_ray_driver drops Ray's chatter.
    # logging_level: the driver's own "Started a local Ray instance" and the like are INFO.
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": True, "logging_level": logging.WARNING}
    gcs_port = None
    if address is None:
        cpus = cfg.datagen.num_cpus or os.cpu_count() or 1
        kwargs.update(num_cpus=max(cpus, math.ceil(min_cpus)), include_dashboard=False)
        # No node of a local Ray is ever preempted: Ray Train's watcher would only add an actor and a logged error.
        env.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        # Ray Train's PlacementGroupCleaner finds its cluster through the State API with address "auto", which fails
        # with a traceback in the terminal when another local Ray runs on this machine (a benchmark beside a
        # training run). Telling the job's actors their own cluster's address needs the port before Ray starts.
        gcs_port = os.environ.get(GCS_PORT_VARIABLE) or str(free_port())
        env.setdefault("RAY_ADDRESS", f"127.0.0.1:{gcs_port}")
    quiet_ray_driver()
    before = os.environ.get(GCS_PORT_VARIABLE)
    try:
        if gcs_port is not None:
            os.environ[GCS_PORT_VARIABLE] = gcs_port
        ray.init(address=address, runtime_env={"env_vars": env}, **kwargs)
    finally:
        if before is None:
            os.environ.pop(GCS_PORT_VARIABLE, None)
        else:
            os.environ[GCS_PORT_VARIABLE] = before
    return True


def free_port() -> int:
    """A TCP port that no process listens on now (the OS's choice)."""
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])
