"""Data generation: Ray producers that render image pairs with ground-truth PBVS labels into shards.

Two producers, each run by Ray actors (`actors`: `HemisphereWorker`, `DAggerWorker`):

- `hemisphere.HemisphereProducer`: offline pose pairs drawn on the upper hemisphere (CNS distributions), a share near
  the goal and on the orbit about the point d* ahead; a shard is a pure function of the run seed and its index.
- `dagger.DaggerProducer`: rollouts in `sim.env.ServoEnv` where the expert (PBVS) or the live policy acts, per step,
  with probability beta (`beta`); new weights arrive from the trainer (push) or are polled from the checkpoints.

Both write through `shards.DatasetWriter` (`producer.open_writer`), so a shard is published whole or not at all.
`runner` starts the actors and the CLI (`python -m datagen`, `make datagen`); `inspect` summarises a root; `bench`
measures render and pair rates.
"""
