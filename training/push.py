"""Send the trainer's weights to the DAgger actors, without ever waiting on them or failing when they are gone."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from datagen.actors import dagger_name
from runtime.ray_cluster import NAMESPACE


class WeightPusher:
    """Looks up the named DAgger actors and pushes numpy state_dicts (zero-copy through Ray's object store)."""

    def __init__(self, n_actors: int) -> None:
        self.names = [dagger_name(i) for i in range(max(n_actors, 1))]
        self._inflight: list[Any] = []
        self.pushed = 0
        self.failed = 0

    def push(self, model: torch.nn.Module, version: int) -> int:
        """Queue the weights on every reachable actor; returns how many actors were reached."""
        import ray

        self._reap()
        state = state_dict_numpy(model)
        ref = None
        reached = 0
        for name in self.names:
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue  # absent or restarting: the trainer carries on
            ref = ref if ref is not None else ray.put(state)
            self._inflight.append(actor.set_weights.remote(ref, int(version)))
            reached += 1
        self.pushed += reached
        return reached

    def _reap(self) -> None:
        import ray

        if not self._inflight:
            return
        done, self._inflight = ray.wait(self._inflight, num_returns=len(self._inflight), timeout=0)
        for ref in done:
            try:
                ray.get(ref)
            except Exception:  # an actor that died while receiving: DAgger reloads the newest checkpoint on restart
                self.failed += 1


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """CPU numpy copies of a module's state_dict (what `set_weights` takes)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
