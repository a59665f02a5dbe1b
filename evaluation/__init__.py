"""The closed-loop servo benchmark: CNSv2 against classical visual servoing and the oracle, in simulation.

Data flow: `suites` reads the suite files in configs/eval/ and gives each suite its run config; `plan` lists one job
per (suite, controller, seed) and finds the CNSv2 checkpoint; `runner` runs the jobs (in this process or on Ray
actors), each an `episodes.run_episode` of a controller built by name (`policy.registry`; the ground-truth `oracle`
is registered here) in a `sim.ServoEnv`; `metrics` turns episodes into CNS's numbers (success rate with a Wilson
interval, final errors over successes, S/M/L thirds); `report` writes results.md, results.json, episodes.jsonl, the
PNGs and the W&B run (`eval.wandb`). `openloop` scores a policy on the first frames of the same episodes, the fast
proxy before closed loop.

    python -m evaluation                      # `make eval`
    python -m evaluation.openloop --config cpu eval.checkpoint=pretrained:cnsv2-cpu

It uses sim, policy, configs and runtime (Ray start-up, backend checks, the W&B mode), and never training: it
measures checkpoints, whoever wrote them.
"""

# Importing the package registers its own controller, "oracle", with policy.registry (Ray actors included).
from evaluation import oracle as oracle
