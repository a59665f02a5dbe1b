"""The simulated world: geometry, cameras, pose sampling, scenes, render backends and the servo environment.

`sim.seeds` names every random stream of an episode seed; the producers and the benchmark draw from it too.

`from sim import ServoEnv, Frame` works without importing a render backend until an environment is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.env import ServoEnv
    from sim.render import Frame

__all__ = ["Frame", "ServoEnv"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import sim` stays light (no mujoco, no assets) for code that only needs geometry.
    if name == "ServoEnv":
        from sim.env import ServoEnv

        return ServoEnv
    if name == "Frame":
        from sim.render import Frame

        return Frame
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
