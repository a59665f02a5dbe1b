"""Controllers: the controller contract (`interface`) and the registry that builds them by name (`registry`), the
control laws (`control`) and the classical matcher controllers (`classical`), the CNSv2 network (backbone, matching
representation, `velocity_head`), checkpoints, the closed-loop Servo API and the policies shipped as package data.

`from policy import p2g, Servo, build_policy, save_checkpoint, load_checkpoint` imports torch only when one of the
network names is first used, so code that needs the control laws alone stays light; `Servo` and `OnnxPolicy` (an
exported policy on onnxruntime, `policy.export`) import neither torch nor onnxruntime until a policy is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "p2g": "policy.representation",
    "CNSv2Policy": "policy.network",
    "PolicyOutput": "policy.network",
    "Servo": "policy.servo",
    "OnnxPolicy": "policy.onnx_policy",
    "ServoOutput": "policy.servo",
    "build_policy": "policy.checkpoint",
    "save_checkpoint": "policy.checkpoint",
    "load_checkpoint": "policy.checkpoint",
    "load_pretrained": "policy.pretrained",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'policy' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
