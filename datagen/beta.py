"""DAgger's beta schedule: the probability, per step, that the expert's action is executed in round r."""

from __future__ import annotations

from configs.schema import BetaConfig


def beta_for_round(cfg: BetaConfig, round_: int) -> float:
    """Round 0 is pure expert (1.0); later rounds follow the configured schedule, never below `min`."""
    if round_ < 0:
        raise ValueError(f"round must be >= 0, got {round_}")
    if round_ == 0:
        return 1.0
    if cfg.kind == "linear":
        beta = 1.0 - (1.0 - cfg.min) * min(round_, cfg.rounds) / cfg.rounds
    elif cfg.kind == "exponential":
        beta = cfg.decay**round_
    else:
        beta = cfg.value
    return max(cfg.min, float(beta))
