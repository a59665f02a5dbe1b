"""Training: a Ray Train trainer that consumes shards as they appear and pushes checkpoints back to DAgger.

- `dataset`: the sample stream over a root's published shards (split by scene seed, DAgger share, quarter turns,
  augmentation); it reads through `shards.DatasetReader` and re-lists shards while it runs.
- `trainer`: the loop (AdamW, `schedule`'s warm-up and cosine), validation (`validation`: matching accuracy by
  rotation, loss by label norm, a PNG), checkpoints (`policy.checkpoint`), resume, W&B (`dashboard`).
- `push`: new weights to the DAgger actor; `pipeline`: producers and trainer together (`make pipeline`).
- `ship`: package a checkpoint as a pretrained policy with its model card; `bench`: training throughput.

Evaluation lives beside this package (`evaluation`), not in it: neither imports the other.
"""
