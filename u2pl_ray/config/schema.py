"""The one typed configuration of a run. YAML files under configs/ fill it; `--set a.b=c` overrides it.

Each section is a pydantic model that forbids unknown keys, so a typo is an error that names the key.
Values left as `None` where the variant decides them are resolved once, in `Config._resolve_variant`,
so that the saved config of a run shows what was actually used.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Variant = Literal["official", "paper"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(Section):
    """The built-in synthetic benchmark (u2pl_ray.data.synthetic), generated on first use."""

    num_train: int = Field(640, gt=0, description="training images (labelled + unlabelled)")
    num_val: int = Field(96, gt=0, description="validation images")
    image_size: int = Field(96, ge=32, description="side of the square images, pixels")
    num_object_classes: int = Field(5, ge=1, le=10, description="object classes besides background")
    labeled_fractions: list[str] = Field(
        default_factory=lambda: ["1_16", "1_8", "1_4", "full"],
        description="splits written, as 1_N (one in N labelled) or full",
    )
    seed: int = Field(0, description="seed of the generated images and of the labelled subsets")
    fashion_mnist_dir: str | None = Field(
        "/usr/share/datasets/fashion-mnist",
        description="folder of Fashion-MNIST idx files; procedural objects when absent",
    )
    shard_rows: int = Field(256, gt=0, description="rows per parquet shard")
    max_objects: int = Field(3, ge=1, le=8, description="objects per image: 1..max_objects")
    occlusion_prob: float = Field(0.5, ge=0, le=1, description="chance of a background bar occluding objects")
    object_source: Literal["auto", "fashion_mnist", "procedural"] = Field(
        "auto", description="auto = Fashion-MNIST when fashion_mnist_dir has the idx files, else procedural"
    )


class DataConfig(Section):
    root: str | None = Field(None, description="URI of a converted dataset; null = built-in synthetic")
    split: str = Field(
        "1_16", description="labelled/unlabelled split under root/splits/ (a name: 1_16, 732, full, ...)"
    )
    cache_dir: str = Field("~/.cache/u2pl-ray", description="where the synthetic dataset is generated")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    batch_size: int = Field(4, gt=0, description="per worker, labelled and unlabelled alike")
    crop_size: int = Field(513, gt=0, description="square training crop")
    scale_range: list[float] = Field(
        default_factory=lambda: [0.5, 2.0],
        min_length=2,
        max_length=2,
        description="random resize range of the weak augmentation (spec §6.2: drawn in two halves around 1)",
    )
    flip: bool = Field(True, description="random horizontal flip in the weak augmentation")
    mean: list[float] = Field(
        default_factory=lambda: [123.675, 116.28, 103.53],
        min_length=3,
        max_length=3,
        description="per-channel mean subtracted on the device (pixel units, RGB)",
    )
    std: list[float] = Field(
        default_factory=lambda: [58.395, 57.12, 57.375],
        min_length=3,
        max_length=3,
        description="per-channel standard deviation divided on the device (pixel units, RGB)",
    )
    ignore_index: int = Field(
        255, ge=0, le=255, description="label value of pixels without a class (must match the dataset manifest)"
    )
    label_pad_value: int | None = Field(
        None, ge=0, le=255, description="label of crop padding; null = variant default (official 0, paper 255)"
    )
    decode: Literal["worker", "ray"] = Field(
        "worker", description="decode+augment inside the training worker, or in a Ray Data map_batches stage"
    )
    on_bad_sample: Literal["error", "skip"] = Field(
        "error", description="a corrupt or inconsistent row: stop with an error naming it, or skip and count it"
    )
    shuffle_buffer: int = Field(
        64, ge=0, description="rows of local shuffle per worker stream (deterministic: rows per shuffle window)"
    )
    prefetch_batches: int = Field(2, ge=0, description="batches each stream prepares ahead of the training loop")
    deterministic: bool = Field(
        False, description="batches of epoch e are a pure function of (seed, epoch, rank): resume reproduces a run"
    )
    decode_threads: int = Field(2, ge=1, description="decode+augment threads per stream in the worker (decode: worker)")
    ray_task_cpus: float = Field(0.5, gt=0, description="CPUs reserved by each Ray Data read/decode task")
    ray_progress: bool = Field(
        False, description="Ray Data's progress bars and execution logs on the console (always in Ray's session logs)"
    )
    reader: Literal["ray", "local"] = Field(
        "ray",
        description="local: the training process reads its plan's shards itself, without Ray Data "
        "(deterministic mode only: one-process runs and tests)",
    )

    @field_validator("split", mode="before")
    @classmethod
    def _split_name(cls, value: Any) -> Any:
        # `--set data.split=732` and `split: 732` are the split named 732 (bool is an int: leave it to fail)
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check_reader(self) -> DataConfig:
        if self.reader == "local" and not self.deterministic:
            raise ValueError("data.reader='local' reads a worker's own epoch plan: it needs data.deterministic=true")
        return self

    @model_validator(mode="after")
    def _check_scale(self) -> DataConfig:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"data.scale_range must be 0 < low <= high, given {self.scale_range}")
        return self


BACKBONES = ("resnet101_deep", "resnet101", "resnet50", "resnet18", "efficientnet_lite0", "tiny")


class ModelConfig(Section):
    backbone: str = Field(
        "resnet101_deep",
        description="encoder: resnet101_deep (the official deep stem), resnet101 / resnet50 / resnet18 "
        "(torchvision), efficientnet_lite0, timm:<name> (any timm model as a feature extractor, ViTs too), "
        "or tiny (tests)",
    )
    pretrained: str | None = Field(
        None, description="path or URI of backbone weights; 'package:efficientnet_lite0' for the bundled ones"
    )
    num_classes: int | None = Field(None, gt=1, description="null = from the dataset manifest")
    output_stride: Literal[8, 16] = Field(
        8, description="encoder output stride (8: dilated last two stages, as U2PL; 16: last stage)"
    )
    multi_grid: bool = Field(True, description="dilations 1/2/4 in the last stage's blocks (DeepLabv3 multi-grid)")
    aspp_dilations: list[int] = Field(
        default_factory=lambda: [12, 24, 36], min_length=3, max_length=3, description="the three ASPP atrous rates"
    )
    decoder_channels: int = Field(256, gt=0, description="channels of ASPP and of the decoder's fusion convolutions")
    low_level_channels: int = Field(
        256, gt=0, description="channels the stride-4 features are reduced to before fusion"
    )
    rep_head: bool = Field(True, description="the representation head U2PL's contrastive loss reads")
    rep_dim: int = Field(256, gt=0, description="representation (contrastive feature) dimension")
    aux_head: bool = Field(False, description="an auxiliary classifier on the stride-16 features (Cityscapes)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the classifier")
    sync_bn: bool = Field(True, description="SyncBatchNorm across workers (GPU only)")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        if value in BACKBONES or (value.startswith("timm:") and len(value) > 5):
            return value
        raise ValueError(f"model.backbone must be one of {', '.join(BACKBONES)} or timm:<name>, given {value!r}")


class MethodConfig(Section):
    name: Literal["u2pl", "unimatch", "supervised"] = Field(
        "u2pl", description="the method (u2pl_ray.method.registry); supervised = labelled data only (SupOnly)"
    )
    variant: Variant = Field(
        "official", description="u2pl: official = the official code number for number, paper = the paper's equations"
    )
    sup_only_epochs: int = Field(1, ge=0, description="supervised warm-up epochs (official S)")
    criterion: Literal["ce", "ohem"] = Field("ce", description="supervised loss: cross-entropy, or OHEM (Cityscapes)")
    ohem_thresh: float = Field(
        0.7, gt=0, le=1, description="OHEM: keep pixels whose target probability is at most this (or the min_kept-th)"
    )
    ohem_min_kept: int = Field(
        100_000, ge=0, description="OHEM: at least this many pixels per batch (0 = plain cross-entropy)"
    )
    aux_weight: float = Field(0.4, ge=0, description="weight of the aux head's supervised loss")
    # unsupervised loss
    drop_percent: float = Field(80.0, ge=0, le=100, description="entropy percentile kept at epoch 0")
    unsup_weight: float = Field(1.0, ge=0, description="u2pl: weight of the unsupervised loss (lambda_u)")
    strong_aug: Literal["cutmix", "cutout", "classmix", "none"] = Field(
        "cutmix", description="u2pl: strong augmentation of the unlabelled batch"
    )
    strong_aug_prob: float = Field(
        0.5, ge=0, le=1, description="u2pl: chance per iteration that the strong augmentation is applied"
    )
    # contrastive loss
    contrastive: bool = Field(
        True, description="u2pl: the unreliable-pixel contrastive loss (off: the no-contrastive ablation)"
    )
    contra_weight: float | None = Field(None, ge=0, description="null = variant default (official 1, paper 0.1)")
    contra_grad_scale: float = Field(
        0.25, gt=0, le=1, description="official: 1/W of the official launch (VOC 4 GPUs = 0.25)"
    )
    low_entropy_threshold: float = Field(20.0, ge=0, le=100, description="alpha_0, percent")
    negative_high_entropy: bool = Field(
        True, description="u2pl: unlabelled negatives from high-entropy pixels (official)"
    )
    low_rank: int = Field(3, ge=1, description="u2pl: r_l, negatives' classes ranked from here")
    high_rank: int = Field(20, ge=2, description="u2pl: r_h, negatives' classes ranked below this")
    anchor_threshold: float = Field(0.3, ge=0, le=1, description="delta_p")
    negative_threshold: float = Field(
        1.0, ge=0, le=1, description="u2pl: negatives need a probability below this (1 = nearly inert)"
    )
    num_queries: int = Field(256, gt=0, description="anchors per class")
    num_negatives: int = Field(50, gt=0, description="negatives per anchor")
    temperature: float = Field(0.5, gt=0, description="u2pl: temperature of the contrastive loss")
    bank_size_class0: int = Field(50_000, gt=0, description="u2pl: memory bank capacity of class 0 (background)")
    bank_size: int = Field(30_000, gt=0, description="u2pl: memory bank capacity of every other class")
    # teacher
    ema_decay: float = Field(0.99, ge=0, lt=1, description="u2pl: upper bound of the EMA teacher's decay")
    # UniMatch
    conf_thresh: float = Field(0.95, ge=0, le=1, description="unimatch: pseudo-label confidence kept (>=)")
    fp_dropout: float = Field(
        0.5, ge=0, lt=1, description="unimatch: channel dropout of the feature-perturbation stream"
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_mode(cls, data: Any) -> Any:
        # Configs and checkpoints before method.name said `method.mode: u2pl | supervised`.
        if isinstance(data, dict) and "mode" in data and "name" not in data:
            data = {**data, "name": data["mode"]}
            del data["mode"]
        return data

    @model_validator(mode="after")
    def _check_ranks(self) -> MethodConfig:
        if self.low_rank >= self.high_rank:
            raise ValueError(f"method.low_rank ({self.low_rank}) must be < method.high_rank ({self.high_rank})")
        return self


class OptimConfig(Section):
    kind: Literal["sgd", "adamw"] = Field("sgd", description="sgd = official; adamw converges faster at CPU scale")
    lr: float = Field(0.001, gt=0, description="backbone learning rate")
    head_lr_mult: float = Field(10.0, gt=0, description="decoder/aux lr = lr x this")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay (SGD: L2; AdamW: decoupled)")
    nesterov: bool = Field(False, description="SGD Nesterov momentum")


class ScheduleConfig(Section):
    epochs: int = Field(80, gt=0, description="training epochs")
    iters_per_epoch: int | None = Field(None, gt=0, description="null = from the unlabelled stream")
    poly_power: float = Field(0.9, ge=0, description="power of the poly learning-rate decay")


class EvalConfig(Section):
    every_epochs: int = Field(1, ge=0, description="validate every N epochs (0 = off)")
    every_iters: int = Field(0, ge=0, description="validate every N iterations (0 = off)")
    mode: Literal["center", "whole", "slide"] = Field(
        "center", description="inference on validation images: centre crop, whole image, or sliding window"
    )
    crop_size: int | None = Field(None, gt=0, description="null = data.crop_size")
    stride_ratio: float = Field(2 / 3, gt=0, le=1, description="slide: stride = ceil(crop x ratio)")
    scales: list[float] = Field(
        default_factory=lambda: [1.0], min_length=1, description="image scales whose logits are averaged"
    )
    flip: bool = Field(False, description="also average the mirrored image's logits")
    batch_size: int = Field(1, gt=0, description="validation images per forward")
    images_every: int = Field(0, ge=0, description="write a picture grid every N validations (0 = off)")


class ScalingConfig(Section):
    num_workers: int = Field(1, ge=0, description="0 runs the loop in the driver (tests)")
    use_gpu: bool = Field(False, description="one GPU per worker, nccl (else CPU, gloo)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each training worker")
    gpus_per_worker: float = Field(1.0, gt=0, description="GPUs Ray reserves for each training worker")
    amp: Literal["none", "bf16", "fp16"] = Field("none", description="mixed precision on GPU")
    torch_threads: int | None = Field(None, gt=0, description="CPU threads per worker; null = cores / workers")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each worker also reserves (e.g. a node type's resource, to place workers)",
    )
    min_workers: int | None = Field(
        None,
        ge=1,
        description="elastic: go on with as few as this many workers when nodes are lost (null = always num_workers)",
    )

    @model_validator(mode="after")
    def _check_elastic(self) -> ScalingConfig:
        if self.min_workers is not None and not 1 <= self.min_workers <= self.num_workers:
            raise ValueError(
                f"scaling.min_workers ({self.min_workers}) must lie between 1 and scaling.num_workers ({self.num_workers})"
            )
        return self


class StorageConfig(Section):
    path: str = Field("./runs", description="local folder or s3:// URI for checkpoints and results")
    name: str | None = Field(None, description="run name; null = derived from the config and time")
    keep_checkpoints: int = Field(2, ge=1, description="latest K kept besides the best")
    checkpoint_every_iters: int = Field(0, ge=0, description="0 = at each validation only")


class FaultConfig(Section):
    """Fault injection for tests and bench_faults; off by default."""

    fail_at_iter: int | None = Field(None, ge=0, description="the iteration a fault is injected at (null = never)")
    kind: Literal["raise", "exit", "nan", "checkpoint"] = Field(
        "raise", description="the injected fault: raise, exit the process, non-finite loss, die mid-checkpoint"
    )
    once_marker: str | None = Field(None, description="file that makes the fault fire once across restarts")
    nan_steps: int | None = Field(None, gt=0, description="nan: non-finite losses in a row; null = from then on")
    step_delay_s: float = Field(
        0.0,
        ge=0,
        description="sleep before every step: slows a tiny run so a test can stop a server or send a signal mid-run",
    )


class SchedulerConfig(Section):
    kind: Literal["asha", "fifo"] = Field("asha", description="early stopping on validation mIoU (asha) or none")
    grace_period: int = Field(1, gt=0, description="validations a trial runs before it may be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: keep 1 in this many trials at each rung")
    max_t: int | None = Field(None, gt=0, description="validations per trial at most; null = epochs / every_epochs")


class TuneConfig(Section):
    """`python -m u2pl_ray.tune`: a sweep whose trials are full distributed training runs."""

    name: str | None = Field(None, description="sweep name; null = derived from the config name and time")
    search_space: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]
            "method.drop_percent": {"choice": [60, 70, 80, 90]},
            "method.unsup_weight": {"uniform": [0.5, 1.5]},
            "method.contra_weight": {"loguniform": [0.03, 1.0]},
            "method.temperature": {"choice": [0.2, 0.5, 1.0]},
            "optim.lr": {"loguniform": [3e-4, 3e-3]},
        },
        description="config key -> {choice|grid|uniform|loguniform|randint|quniform: values}",
    )
    search: Literal["random", "optuna"] = Field(
        "random", description="random (and grid) sampling, or Bayesian search with Ray Tune's Optuna integration"
    )
    num_samples: int = Field(4, gt=0, description="trials (x the grid points when a key uses grid)")
    max_concurrent: int = Field(2, gt=0, description="trials running at once")
    metric: str = Field("val/miou", description="the reported metric trials are ranked by")
    mode: Literal["max", "min"] = Field("max", description="whether a higher or a lower metric is better")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    seed: int | None = Field(0, description="seed of the search itself")


class MLflowConfig(Section):
    tracking_uri: str = Field(description="MLflow tracking URI: a server (http://...) or a local store (file:///...)")
    experiment_name: str = Field("u2pl-ray", description="MLflow experiment, created when missing")


class WandbConfig(Section):
    project: str = Field("u2pl-ray", description="Weights & Biases project")
    mode: Literal["online", "offline"] = Field("online", description="offline: files under `dir`, synced later")
    dir: str | None = Field(None, description="where W&B writes its files (null = its default)")


class TrackingConfig(Section):
    """Experiment tracking through Ray's own integrations (setup_mlflow / setup_wandb in training,
    their logger callbacks in sweeps): the config, every report's metrics, validation pictures and the
    best checkpoint's location."""

    mlflow: MLflowConfig | None = Field(None, description="log to MLflow (null = off)")
    wandb: WandbConfig | None = Field(None, description="log to Weights & Biases (null = off)")


class Config(Section):
    name: str = Field(
        "u2pl", description="run name prefix (the run folder is <name>-<time> unless storage.name is set)"
    )
    seed: int = Field(2, description="training seed: initial weights, data order, augmentation draws")
    report_every_iters: int = Field(20, gt=0, description="metrics to Ray Train every N iterations")
    max_failures: int = Field(3, ge=0, description="worker-group restarts before the run fails")
    max_nonfinite_steps: int = Field(5, gt=0, description="stop after N non-finite losses in a row")
    tensorboard: bool = Field(True, description="write TensorBoard events under the run folder")
    step_timing: Literal["auto", "on", "off"] = Field(
        "auto", description="per-phase step times in reports; auto = on CPU only (on GPU it synchronises)"
    )
    ray_train_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING",
        description="Ray Train's own console lines (worker group start, each checkpoint and report at "
        "INFO); the trainer's progress lines are printed either way",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    fault: FaultConfig = Field(default_factory=FaultConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("ray_train_log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("step_timing", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `on` / `off` as a boolean.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _resolve_variant(self) -> Config:
        official = self.method.variant == "official"
        if self.method.contra_weight is None:
            self.method.contra_weight = 1.0 if official else 0.1
        if self.data.label_pad_value is None:
            self.data.label_pad_value = 0 if official else self.data.ignore_index
        if self.eval.crop_size is None:
            self.eval.crop_size = self.data.crop_size
        return self
