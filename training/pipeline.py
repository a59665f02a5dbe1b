"""`python -m training.pipeline`: the whole loop in one Ray job — both producers and the trainer, with checkpoints
pushed live to the DAgger actor. Hemisphere data runs to its target; DAgger collects `datagen.dagger.samples` per round
(round 0: the expert; then one round per pushed policy) until training ends and it has published data from a pushed
policy. Ends with a one-line summary.
"""

from __future__ import annotations

import argparse
import sys
import time

from configs import add_config_arguments, config_from_args, with_absolute_paths
from configs.schema import Config


def run_pipeline(cfg: Config, settle_timeout: float = 300.0, show_progress: bool = False) -> dict[str, object]:
    """Run producers and trainer together; returns counts per producer and of DAgger samples from pushed policies.

    `show_progress`: the trainer's progress bar (see `training.progress`)."""
    from datagen.dagger import weights_by_push
    from datagen.producer import open_writer
    from datagen.runner import preflight, requested_cpus, start_producers
    from policy.checkpoint import resume_point
    from runtime.ray_cluster import init_ray
    from runtime.tracking import wandb_env
    from shards import DatasetReader
    from training.trainer import check_input_size, run_training

    preflight(cfg)  # backend, Ray address and asset folders, before anything is written
    check_input_size(cfg)
    cfg = with_absolute_paths(cfg)
    resume_point(cfg.train.checkpoints, cfg.policy)  # a checkpoint that cannot be resumed stops us before any work
    open_writer(cfg)
    import ray

    env = wandb_env(cfg.train.wandb)
    started = init_ray(cfg, env, min_cpus=requested_cpus(cfg, trainer=True))
    try:
        actors = start_producers(cfg)
        hemi_runs = [a.run.remote() for a in actors["hemisphere"]]
        # DAgger collects datagen.dagger.samples per round, i.e. per pushed policy, until training ends.
        dagger_runs = [a.run.remote(per_round=True) for a in actors["dagger"]]
        run_training(cfg, show_progress=show_progress)  # blocks; DAgger gets weights every train.push_every steps
        reader = DatasetReader(cfg.datagen.root)
        deadline = time.time() + settle_timeout
        # Let DAgger finish at least one shard with a pushed policy before stopping it.
        while actors["dagger"] and not any(
            s.key.producer == "dagger" and max(s.sidecar.get("policy_versions", [-1])) > 0 for s in reader.refresh()
        ):
            if time.time() > deadline:
                break
            time.sleep(1.0)
        if weights_by_push(cfg):
            for a in actors["dagger"]:
                a.stop.remote()
            ray.get(hemi_runs + dagger_runs)
        else:  # a synchronous actor cannot take stop() while it runs; its unpublished shard is simply dropped
            for a in actors["dagger"]:
                ray.kill(a)
            ray.get(hemi_runs)
    finally:
        if started:
            ray.shutdown()
    counts = {"hemisphere": 0, "dagger": 0, "dagger_from_policy": 0}
    for s in DatasetReader(cfg.datagen.root).refresh():
        counts[s.key.producer] += s.n
        if s.key.producer == "dagger" and max(s.sidecar.get("policy_versions", [-1])) > 0:
            counts["dagger_from_policy"] += s.n
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline and print a one-line summary."""
    parser = argparse.ArgumentParser(prog="python -m training.pipeline", description=__doc__)
    add_config_arguments(parser)
    cfg = config_from_args(parser, parser.parse_args(argv))
    from shards import ShardError
    from sim.asset_catalogue import AssetFolderError
    from sim.isaac_backend import IsaacUnavailable
    from training.__main__ import at_target, summary_line

    if at_target(parser, cfg, "pipeline"):
        return 0
    t0 = time.time()
    try:
        counts = run_pipeline(cfg, show_progress=True)
    except (IsaacUnavailable, AssetFolderError, ConnectionError, ShardError) as err:  # the checks before Ray starts
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(
        f"pipeline: hemisphere {counts['hemisphere']} + dagger {counts['dagger']} samples "
        f"({counts['dagger_from_policy']} from pushed policies) in {cfg.datagen.root}; "
        + summary_line(cfg, time.time() - t0)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
