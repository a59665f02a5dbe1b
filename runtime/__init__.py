"""What a process needs before it does any work: the Ray cluster to join or start, and the W&B mode.

`runtime.ray_cluster` finds the cluster (`datagen.ray_address` or `$RAY_ADDRESS`), fails within seconds when it is not
there, starts a local Ray otherwise, and refuses a render backend this machine cannot run before Ray starts.
`runtime.tracking` decides whether W&B logs online, offline or not at all. Data generation, training and evaluation
all start this way, so it sits below them (it uses `configs` and `sim` only) and none of them imports another for it.
"""
