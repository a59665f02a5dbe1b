"""Fine-grained CNN features (paper Fig. 2): a few cheap convolutions at 1/4 resolution that see pixel-level error.

The desired image's fine map is warped onto the current one by the coarse flow, and the current map together with
the per-pixel difference is pooled to the patch grid, so the controller sees residual motion smaller than a patch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _fine_stride(patch: int) -> int:
    for s in (4, 2):
        if patch % s == 0:
            return s
    return 1


class FineFeatures(nn.Module):
    """Encode images to (B, dim, H/s, W/s) and fuse current and flow-warped desired maps into (B, dim, h, w)."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.stride = _fine_stride(patch)
        layers: list[nn.Module] = []
        c_in, n_down = 3, self.stride.bit_length() - 1
        for i in range(max(n_down, 1)):
            c_out = dim if i == max(n_down, 1) - 1 else dim // 2
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2 if i < n_down else 1, padding=1), nn.GELU()]
            c_in = c_out
        layers.append(nn.Conv2d(dim, dim, 3, padding=1))
        self.encoder = nn.Sequential(*layers)
        k = patch // self.stride
        self.pool = nn.Sequential(nn.Conv2d(2 * dim, dim, k, stride=k), nn.GELU(), nn.Conv2d(dim, dim, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def encode(self, rgb: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, dim, H/s, W/s)."""
        return self.encoder((rgb - self.mean) / self.std)

    def forward(self, fine_c: Tensor, fine_d: Tensor, flow: Tensor) -> Tensor:
        """Fuse fine maps given the coarse flow (B, 2, h, w) in patch units; returns (B, dim, h, w)."""
        Hf, Wf = fine_c.shape[-2:]
        scale = self.patch / self.stride  # patch units -> fine pixels
        flow_f = F.interpolate(flow.float(), size=(Hf, Wf), mode="bilinear", align_corners=False) * scale
        ys, xs = torch.meshgrid(
            torch.arange(Hf, device=fine_c.device, dtype=torch.float32),
            torch.arange(Wf, device=fine_c.device, dtype=torch.float32),
            indexing="ij",
        )
        gx = (xs + flow_f[:, 0] + 0.5) / Wf * 2.0 - 1.0
        gy = (ys + flow_f[:, 1] + 0.5) / Hf * 2.0 - 1.0
        warped = F.grid_sample(
            fine_d.float(), torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros", align_corners=False
        ).to(fine_c.dtype)
        return self.pool(torch.cat([fine_c, fine_c - warped], dim=1))
