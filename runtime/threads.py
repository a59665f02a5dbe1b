"""Thread counts chosen, not inherited: how many intra-op threads torch uses in each kind of process.

Torch's default is one thread per core for every process. Beside other busy processes on the same cores that
oversubscribes the machine: each parallel region waits at a barrier for a thread the kernel has descheduled, and
`Servo.step` beside two busy torch processes was 6.9x slower than idle at 2 threads (2.8x at 1). So every process
that runs torch sets its count from config (`policy.servo.threads`, `datagen.<producer>.threads`, `data.threads`,
`train.threads`); 0 or null there means the automatic share computed here:

- a process's share of this node: the CPUs it may run on (`os.sched_getaffinity`, which honours taskset and
  cgroup cpusets) or the CPUs it reserved from Ray, whichever is smaller, less those its helpers use, divided by the
  processes that share them. A producer actor: its `num_cpus`. A trainer worker: `train.cpus_per_worker` less one
  CPU per data-loader worker (`data.workers`). A loader worker: 1 (it works on one sample at a time);
- a `Servo` (inference on a robot computer, evaluation): `SERVO_AUTO_THREADS`, one thread. Batch-1 inference gains
  little from a second thread when idle and loses most under load (`python -m policy.bench`).

torch is imported only by `set_torch_threads`, so reading a count stays light.
"""

from __future__ import annotations

import math
import os

__all__ = ["SERVO_AUTO_THREADS", "auto_threads", "resolve_threads", "set_torch_threads", "usable_cpus"]

SERVO_AUTO_THREADS = 1


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; `os.cpu_count()` where there is none), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity masks
        return max(1, os.cpu_count() or 1)


def auto_threads(cpus: float | None = None, processes: int = 1, reserved: int = 0) -> int:
    """One process's share of this node: `min(cpus, usable_cpus())` (all usable CPUs when `cpus` is None or 0),
    floored, less `reserved` CPUs that other processes in the same reservation use, divided among `processes`
    processes; at least 1.

    Raises ValueError for a negative `cpus` or `reserved`, or `processes` < 1.
    """
    if processes < 1 or reserved < 0:
        raise ValueError(f"need processes >= 1 and reserved >= 0, got {processes} and {reserved}")
    if cpus is not None and not cpus >= 0:
        raise ValueError(f"cpus must be >= 0, got {cpus}")
    usable = usable_cpus()
    share = min(math.floor(cpus), usable) if cpus else usable
    return max(1, (share - reserved) // processes)


def resolve_threads(
    requested: int | None,
    *,
    default: int | None = None,
    cpus: float | None = None,
    processes: int = 1,
    reserved: int = 0,
) -> int:
    """The thread count to use: `requested` when it is > 0; otherwise (0 or None: automatic) `default` when given,
    else `auto_threads(cpus, processes, reserved)`.

    Raises ValueError for a negative or non-integer `requested`, naming it.
    """
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 0):
        raise ValueError(f"threads must be an integer >= 0 (0 or null: automatic), got {requested!r}")
    if requested:
        return requested
    return default if default else auto_threads(cpus, processes, reserved)


def set_torch_threads(threads: int) -> int:
    """Set torch's intra-op thread count for this process (a process-wide setting) and return it.

    Raises ValueError for a count < 1.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
