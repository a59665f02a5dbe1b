"""A real learning check: the smoke model fits a handful of fixed simulated pairs on CPU (about 40 s)."""

from __future__ import annotations

import numpy as np
import torch

from configs import load_config
from policy import build_policy
from policy.control import normalize_velocity, pbvs
from policy.losses import velocity_losses
from policy.network import images_to_tensor
from sim import ServoEnv

PAIRS, STEPS = 6, 160


def test_smoke_model_drives_the_loss_near_zero_on_fixed_pairs() -> None:
    cfg = load_config("smoke", ["sim.scene.effects.prob=0"])
    cur, des, labels = [], [], []
    with ServoEnv(cfg.sim) as env:
        for seed in range(PAIRS):
            cur.append(env.reset(seed).rgb)
            des.append(env.desired_frame().rgb)
            labels.append(normalize_velocity(pbvs(env.dTc), env.scene_scale))
    cur_t, des_t = images_to_tensor(np.stack(cur)), images_to_tensor(np.stack(des))
    target = torch.tensor(np.stack(labels), dtype=torch.float32)

    torch.manual_seed(0)
    policy = build_policy(cfg.policy).train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=STEPS, pct_start=0.1)
    losses = []
    for _ in range(STEPS):
        out = policy(cur_t, des_t)
        norm, direction = velocity_losses(out.log_norm, out.direction, target)
        loss = norm + direction
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    # Measured: 2.96 -> 0.005 after 160 steps (0.0013 after 200), 6 pairs at 256 px, 2 CPU threads.
    assert losses[0] > 1.0
    assert min(losses[-10:]) < 0.02 and min(losses[-10:]) < 0.01 * losses[0]
    with torch.no_grad():
        pred = policy.eval()(cur_t, des_t).vel
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1)
    assert float(cos.min()) > 0.95
