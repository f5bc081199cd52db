"""The one schema of params.yaml: pydantic models, one per section, that reject unknown keys.

Each stage loads the whole file through :func:`load_params` (so a typo anywhere fails before any
work) and then uses only its own section(s). Models are frozen: config is a value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from onceflow.errors import ConfigError
from onceflow.params_file import (
    format_validation_error,
    one_line,
    read_params_yaml,
)
from onceflow.uri import check_endpoint_url, parse_registry_uri


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, instances are immutable, and no
    number is NaN or infinite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Target names become DVC stage names (latency_table@<name>), file names and registry keys.
TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
TARGET_NAME_RULE = "lower-case letters, digits and '-', starting with a letter or digit, <= 40"
# Image side length and class count of the sources whose files fix them.
KNOWN_SOURCES: dict[str, tuple[int, int]] = {"fashion-mnist": (28, 10), "cifar10": (32, 10)}


def _plain_path(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    if any(ord(ch) < 32 for ch in v):
        raise ValueError("must not contain control characters (a NUL byte or a newline?)")
    return v


# --------------------------------------------------------------------------------------- base
class BaseConfig(StrictModel):
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0  # one seed every stage derives RNGs from
    threads: Annotated[int, Field(ge=1, le=256)] = 2  # torch / ORT intra-op threads
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # where torch work runs; auto = cuda if present


# --------------------------------------------------------------------------------------- data
DataSource = Literal["fashion-mnist", "cifar10", "imagefolder"]


class DataConfig(StrictModel):
    source: DataSource = "fashion-mnist"
    # fashion-mnist: dir of gzipped IDX files; cifar10: the cifar-10-batches-py dir;
    # imagefolder: a dir holding train/ and test/, each with one sub-folder per class.
    path: str = "/usr/share/datasets/fashion-mnist"
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1  # stratified, from train
    max_train: Annotated[int, Field(ge=1)] | None = (
        None  # stratified subset of train for quick runs
    )
    max_test: Annotated[int, Field(ge=1)] | None = None  # stratified subset of test
    image_size: Annotated[int, Field(ge=8)] | None = None  # imagefolder: resize to this square
    channels: Literal[1, 3] | None = None  # imagefolder: force grayscale (1) or RGB (3)
    # imagefolder: larger images are refused before decoding (decompression bombs); PIL's own
    # limit (89478485) caps it.
    max_image_pixels: Annotated[int, Field(ge=64, le=89_478_485)] = 4096 * 4096
    # Validation gate.
    min_images_per_class: Annotated[int, Field(ge=1)] = 1  # per split (train, val and test)
    class_balance_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5  # |n_c/mean - 1| bound
    # Val images whose content also appears in train (exact duplicates) inflate val accuracy
    # and the predictor's labels; the gate fails above this count.
    max_train_val_duplicates: Annotated[int, Field(ge=0)] = 0

    _path = field_validator("path")(_plain_path)

    @model_validator(mode="after")
    def _source_rules(self) -> DataConfig:
        if self.source != "imagefolder":
            for key in ("image_size", "channels"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"data.{key} applies to data.source imagefolder only; remove it or "
                        f"set it to null for {self.source}"
                    )
        known = KNOWN_SOURCES.get(self.source)
        if known is not None:
            n_classes, per = known[1], self.min_images_per_class
            # Necessary (not sufficient): every class needs `per` images in train and in val.
            if self.max_train is not None and self.max_train < 2 * per * n_classes:
                raise ValueError(
                    f"data.max_train: {self.max_train} cannot give each of the {n_classes} "
                    f"{self.source} classes {per} image(s) in both train and val; use at "
                    f"least {2 * per * n_classes}"
                )
            if self.max_test is not None and self.max_test < n_classes * per:
                raise ValueError(
                    f"data.max_test: {self.max_test} cannot give each of the {n_classes} "
                    f"{self.source} classes {per} test image(s); use at least {n_classes * per}"
                )
        return self


# ------------------------------------------------------------------------ supernet (issue 3)
Activation = Literal["relu", "hswish"]
ElasticDim = Literal["resolution", "kernel", "depth", "expand", "width"]


def _sorted_unique(name: str, values: list) -> list:
    if not values:
        raise ValueError(f"{name} must list at least one choice")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has duplicate choices: {values}")
    return sorted(values)


class StageConfig(StrictModel):
    """One backbone stage: a run of MBConv blocks sharing an output width."""

    channels: Annotated[int, Field(ge=1)]  # block output channels at width multiplier 1.0
    stride: Literal[1, 2] = 1  # stride of the stage's first block
    se: bool = False  # squeeze-and-excitation in every block of the stage
    act: Activation = "relu"
    depths: list[Annotated[int, Field(ge=1)]] | None = None  # overrides supernet.depths here

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int] | None) -> list[int] | None:
        return None if v is None else _sorted_unique("depths", v)


def _default_stages() -> list[StageConfig]:
    return [
        StageConfig(channels=16, stride=2, se=False, act="relu"),
        StageConfig(channels=32, stride=1, se=True, act="relu"),
        StageConfig(channels=48, stride=2, se=False, act="hswish"),
        StageConfig(channels=64, stride=1, se=True, act="hswish"),
    ]


class SupernetConfig(StrictModel):
    """The search space: a MobileNetV3-style backbone with elastic choices (sorted ascending)."""

    resolutions: list[Annotated[int, Field(ge=8)]] = [20, 24, 28]  # input side lengths
    kernels: list[Annotated[int, Field(ge=1)]] = [3, 5, 7]  # depthwise kernel sizes (odd)
    expands: list[Annotated[float, Field(gt=0)]] = [2.0, 3.0, 4.0]  # MBConv expand ratios
    depths: list[Annotated[int, Field(ge=1)]] = [1, 2, 3]  # blocks per stage
    widths: list[Annotated[float, Field(gt=0, le=1.0)]] = [0.75, 1.0]  # per-stage width mult.
    stem_channels: Annotated[int, Field(ge=1)] = 12
    stem_stride: Literal[1, 2] = 2
    stem_act: Activation = "hswish"
    stages: list[StageConfig] = Field(default_factory=_default_stages, min_length=1)
    head_channels: Annotated[int, Field(ge=1)] = 192  # 1x1 conv before pooling
    head_act: Activation = "hswish"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # before the classifier, training only
    channel_divisor: Annotated[int, Field(ge=1)] = 4  # channel counts are multiples of this
    se_reduction: Annotated[int, Field(ge=1)] = 4  # SE squeeze channels = mid / this

    @field_validator("resolutions", "kernels", "expands", "depths", "widths")
    @classmethod
    def _choices(cls, v: list, info: ValidationInfo) -> list:
        v = _sorted_unique(str(info.field_name), v)
        if info.field_name == "kernels" and any(k % 2 == 0 for k in v):
            raise ValueError(f"kernels must be odd, got {v}")
        return v

    @model_validator(mode="after")
    def _widths_top(self) -> SupernetConfig:
        if self.widths[-1] != 1.0:
            raise ValueError(f"widths must include 1.0 (the full network), got {self.widths}")
        return self


# --------------------------------------------------------------------------- train (issue 3)
class PhaseConfig(StrictModel):
    """One progressive-shrinking phase: which dimensions are elastic, for how long, at what lr.

    Dimensions not listed stay at their maximum. Phases run in list order on shared weights.
    """

    name: str
    epochs: Annotated[float, Field(gt=0)]  # may be fractional (quick runs)
    lr: Annotated[float, Field(gt=0)]  # peak learning rate (after warmup) at batch_size
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0  # linear warmup, then cosine to 0
    elastic: list[ElasticDim] = ["resolution", "kernel", "depth", "expand", "width"]
    reorder_channels: bool = False  # sort channels by importance before the phase starts


def _default_phases() -> list[PhaseConfig]:
    return [PhaseConfig(name="full", epochs=10, lr=0.15, warmup_epochs=0.2)]


class TrainConfig(StrictModel):
    """Supernet training: sandwich rule, in-place distillation, progressive-shrinking phases."""

    phases: list[PhaseConfig] = Field(default_factory=_default_phases, min_length=1)
    batch_size: Annotated[int, Field(ge=1)] = 256  # global (split across DDP ranks)
    n_random: Annotated[int, Field(ge=0)] = 3  # random subnets per step besides max and min
    distill: Literal["none", "kl", "alpha"] = "kl"  # loss of non-max subnets vs max's soft labels
    # Weight of the (label-smoothed) label cross-entropy added to the distillation loss of the
    # non-max subnets (Once-for-All: 1; 0: distillation alone). Ignored with distill "none".
    student_ce: Annotated[float, Field(ge=0.0)] = 1.0
    alpha_min: float = -1.0  # alpha-divergence range (AlphaNet)
    alpha_max: float = 1.0
    alpha_clip: Annotated[float, Field(gt=0)] = 5.0  # importance-ratio clip of the alpha loss
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1  # max subnet's hard-label loss
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9  # SGD with Nesterov
    weight_decay: Annotated[float, Field(ge=0.0)] = 4e-5  # not applied to BN and biases
    grad_clip: Annotated[float, Field(gt=0)] | None = 5.0  # max grad norm; null = off
    # Recipe options against the weight-sharing gap (issue 30; benchmarks/bench_weight_sharing.py).
    # BigNAS: the last BN of each residual block starts at gamma 0 (the block starts as identity).
    zero_init_last_bn: bool = True
    # AttentiveNAS: each of the n_random subnets is the best or worst (attentive_pick; best_worst
    # alternates by step) of this many uniform candidates by attentive_proxy (flops: MACs, more
    # is better; loss: the batch's label CE, lower is better). 0 or 1: uniform sampling.
    attentive_pool: Annotated[int, Field(ge=0)] = 0
    attentive_pick: Literal["best", "worst", "best_worst"] = "best_worst"
    attentive_proxy: Literal["flops", "loss"] = "flops"
    # BigNAS: label smoothing and the head's dropout only on the max subnet (the others' label
    # loss is plain CE). Weight decay is already max-only in effect: the max subnet spans every
    # weight and the step sums all subnets' gradients.
    regularize_max_only: bool = False
    hflip: bool = True  # augmentation: random horizontal flip
    crop_padding: Annotated[int, Field(ge=0)] = 0  # augmentation: pad-and-random-crop pixels
    channels_last: bool = True  # memory format of activations
    eval_batch_size: Annotated[int, Field(ge=1)] = 500
    epoch_eval_images: Annotated[int, Field(ge=0)] = 2000  # val images for per-epoch metrics
    bn_calib_images: Annotated[int, Field(ge=1)] = 2000  # train images for BN recalibration
    checkpoint_every_steps: Annotated[int, Field(ge=1)] = 50  # also at every epoch end
    keep_checkpoints: Annotated[int, Field(ge=2)] = 3  # newest kept; older ones deleted
    ddp_backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on cuda, else gloo
    # Local data-parallel ranks the stage launches itself (like torchrun --standalone); each
    # gets base.threads // processes threads. On CPU 2 single-thread ranks beat 1 two-thread
    # process (small ops scale poorly across threads). Ignored when run under torchrun.
    processes: Annotated[int, Field(ge=1, le=64)] = 1
    # Machines of the job (torch's elastic launcher, c10d rendezvous): a count, or "MIN:MAX"
    # (quoted) for an elastic job that runs on MIN to MAX machines. The DVC stage is the first
    # node; each other machine runs `onceflow train join --endpoint HOST:PORT`.
    nodes: Annotated[int, Field(ge=1, le=1024)] | str = 1
    # HOST:PORT where the first node hosts the rendezvous (ONCEFLOW_RDZV_ENDPOINT wins).
    rdzv_endpoint: str | None = None
    # Restarts of a node's ranks after a failure or a lost node, each resuming from the last
    # checkpoint (0: a failed rank ends the stage). Joining nodes do not use one up.
    max_restarts: Annotated[int, Field(ge=0, le=100)] = 0
    rdzv_timeout_s: Annotated[int, Field(ge=1)] = 600  # wait for the minimum number of nodes
    rdzv_last_call_s: Annotated[int, Field(ge=0)] = 15  # then this long for more (up to MAX)

    @property
    def node_range(self) -> tuple[int, int]:
        """(min, max) machines of the job."""
        return _node_range(self.nodes)

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, v: int | str) -> int | str:
        _node_range(v)
        return v

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None:
            check_rdzv_endpoint(v)
        return v

    @model_validator(mode="after")
    def _alpha(self) -> TrainConfig:
        if self.alpha_min > self.alpha_max:
            raise ValueError(
                f"alpha_min ({self.alpha_min}) must be <= alpha_max ({self.alpha_max})"
            )
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"train.phases: phase names must be unique, got {names}")
        for p in self.phases:
            if len(set(p.elastic)) != len(p.elastic):
                raise ValueError(f"train.phases.{p.name}.elastic lists a dimension twice")
        if self.batch_size < self.processes:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) cannot be split over train.processes "
                f"({self.processes}) ranks; use a batch_size >= processes"
            )
        ranks = self.processes * self.node_range[1]
        if self.batch_size < ranks:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) cannot be split over the {ranks} ranks "
                f"of train.nodes {self.nodes} x train.processes {self.processes}"
            )
        return self


_NODE_RANGE = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")


def _node_range(v: int | str) -> tuple[int, int]:
    """train.nodes as (min, max): a count N is (N, N); "MIN:MAX" a range."""
    if isinstance(v, int):
        return v, v
    m = _NODE_RANGE.match(v)
    if m is None:
        raise ValueError("neither a node count nor a 'MIN:MAX' range like '1:4' (quoted)")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 1 <= lo <= hi <= 1024:
        raise ValueError("a 'MIN:MAX' range needs 1 <= MIN <= MAX <= 1024")
    return lo, hi


def check_rdzv_endpoint(v: str) -> tuple[str, int]:
    """HOST:PORT of a rendezvous, as (host, port); ValueError naming what is wrong."""
    host, sep, port = v.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{v!r} is not HOST:PORT (e.g. 10.0.0.5:29400; port 1-65535)")
    if any(ch.isspace() or not ch.isprintable() for ch in host):
        raise ValueError(f"{v!r}: the host must not contain spaces or control characters")
    return host, int(port)


# ------------------------------------------------------------------------- latency (issue 4)
class TargetOptions(StrictModel):
    """Backend-specific knobs of a latency target; each backend reads only its own."""

    # onnxruntime: let idle worker threads spin (fast hand-off, but burns shared cores).
    allow_spinning: bool = False
    # onnxruntime: extra SessionOptions config entries (add_session_config_entry key -> value).
    session_config: dict[str, str] = {}
    # tensorrt: builder workspace pool limit in MiB.
    workspace_mb: Annotated[int, Field(ge=16)] = 1024
    # int8 (tensorrt entropy calibrator, onnxruntime static quantization): prepared train
    # images each model is calibrated on -- table entries, validation subnets and packages.
    int8_calibration_images: Annotated[int, Field(ge=1)] = 64
    # tensorrt: directory of serialized engines keyed by content hash (outside DVC outs).
    engine_cache_dir: str = ".cache/onceflow/tensorrt"
    _engine_cache_dir = field_validator("engine_cache_dir")(_plain_path)
    # torch on CUDA: replay each model as a captured CUDA graph (removes launch overhead).
    cuda_graphs: bool = False
    # pin the measuring process to these CPU ids while timing (Linux); null = no pinning.
    cpu_affinity: tuple[Annotated[int, Field(ge=0)], ...] | None = None


class BudgetConfig(StrictModel):
    """Latency budgets of one target: milliseconds, or fractions of the reachable latency range
    (0 = the fastest subnet, 1 = the slowest)."""

    unit: Literal["ms", "fraction"] = "fraction"
    values: list[Annotated[float, Field(ge=0)]] = Field(default=[0.25, 0.5, 0.75], min_length=1)

    @model_validator(mode="after")
    def _fractions(self) -> BudgetConfig:
        if self.unit == "fraction" and any(v > 1 for v in self.values):
            raise ValueError(f"fraction budgets must be in [0, 1], got {self.values}")
        if self.unit == "ms" and any(v <= 0 for v in self.values):
            raise ValueError(f"ms budgets must be > 0, got {self.values}")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"budget values must be distinct, got {self.values}")
        return self


class LatencyTarget(StrictModel):
    """One hardware/runtime target that gets its own latency table (`latency_table@<name>`)."""

    backend: Literal["onnxruntime", "tensorrt", "torch"] = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    threads: Annotated[int, Field(ge=1, le=256)] = 1  # intra-op threads (CPU), fixed
    inter_op_threads: Annotated[int, Field(ge=1, le=256)] = 1
    # onnxruntime execution providers in priority order.
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    batch_size: Annotated[int, Field(ge=1)] = 1
    work_pool: str | None = None  # Prefect work pool that runs this target's stage
    options: TargetOptions = TargetOptions()
    # Latency budgets of this target's search; null: search.default_budgets. Kept here (not in
    # the search section) so that editing one target's budgets reruns only that target's stages.
    budgets: BudgetConfig | None = None
    # attached: timed on a machine that runs this target's stage. imported: a device that runs
    # no worker (phone, NPU): `onceflow latency export` writes sample subnets, the user times
    # them there, `onceflow latency import` writes `results`, and the table is fit on those.
    timings: Literal["attached", "imported"] = "attached"
    # The whole-subnet timings of an imported target (CSV: arch,latency_ms), relative to the
    # repo root; a DVC dependency of device_results@<name>. null: devices/<name>.csv.
    results: str | None = None
    _results = field_validator("results")(lambda v: v if v is None else _plain_path(v))
    # lut: per-layer table + calibration. measured: a model fit on whole measured subnets
    # (features of the arch). auto: the one with the better cross-validated error on the
    # measured subnets (the table's details say why). Imported targets always use measured.
    estimator: Literal["lut", "measured", "auto"] = "lut"
    # Whole subnets timed (attached) or required (imported) to fit the measured estimator;
    # the validation subnets stay held out.
    measured_subnets: Annotated[int, Field(ge=10)] = 100
    # This target's latency.protocol.repeats / .sessions (null: the protocol's): a slow runtime
    # fit on whole subnets (torch eager) needs fewer samples than a LUT's tiny layers, and one
    # torch module timed as three "sessions" is the same module three times.
    protocol_repeats: Annotated[int, Field(ge=1)] | None = None
    protocol_sessions: Annotated[int, Field(ge=1)] | None = None

    def results_path(self, name: str) -> str:
        """Where this (imported) target's results file lives, relative to the repo root."""
        return self.results or f"devices/{name}.csv"

    @property
    def single_threaded_cpu(self) -> bool:
        """Inference runs entirely on the calling thread (so its CPU time is its latency)."""
        return self.device == "cpu" and self.threads == 1 and self.inter_op_threads == 1


class MeasureProtocolConfig(StrictModel):
    """The timing protocol shared by LUT entries and end-to-end validation subnets."""

    warmup: Annotated[int, Field(ge=0)] = 10  # untimed runs per item
    # Many short samples + median: a sample hit by another process is an outlier the median
    # ignores, whereas long samples (number >> 1) average the interference in.
    repeats: Annotated[int, Field(ge=1)] = 150  # timed rounds (samples per item)
    number: Annotated[int, Field(ge=1)] = 1  # back-to-back runs per sample
    interleave: bool = True  # rounds cycle over all items in shuffled order
    # Untimed runs right before each sample. Interleaving hundreds of items evicts a model's
    # weights from cache between its samples: prime 0 measures cold-cache latency (~2x the
    # warm latency of a small model timed alone, as packages are); 2 measures the warm steady
    # state a deployed model runs in, within ~5% of timing it alone.
    prime: Annotated[int, Field(ge=0)] = 2
    # Independent sessions per model, samples split over them: a session's buffer addresses
    # shift its latency by a few percent; pooling several averages that out.
    sessions: Annotated[int, Field(ge=1)] = 3
    # wall: wall time (CUDA events on GPU). thread_cpu: CPU time of the measuring thread, equal
    # to wall latency for single-threaded CPU inference but immune to other processes' time
    # slices on a shared machine. auto: thread_cpu for 1-thread CPU targets, else wall.
    clock: Literal["auto", "wall", "thread_cpu"] = "auto"


class LatencyConfig(StrictModel):
    targets: dict[str, LatencyTarget] = {"ort-cpu": LatencyTarget()}
    protocol: MeasureProtocolConfig = MeasureProtocolConfig()
    calibration_subnets: Annotated[int, Field(ge=3)] = 30  # K measured subnets for the fit
    validation_subnets: Annotated[int, Field(ge=2)] = 50  # M held-out measured subnets
    # auto: the fit (affine / count / per_kind) with the lowest leave-one-out error; or force one.
    calibration: Literal["auto", "none", "affine", "count", "per_kind"] = "auto"

    @model_validator(mode="after")
    def _check_targets(self) -> LatencyConfig:
        if not self.targets:
            raise ValueError("latency.targets is empty: define at least one target")
        for name, t in self.targets.items():
            if not TARGET_NAME.fullmatch(name):
                raise ValueError(
                    f"latency.targets: name {name!r} must be {TARGET_NAME_RULE} characters "
                    "(it names DVC stages, files and registry keys)"
                )
            if t.backend == "tensorrt" and t.device != "cuda":
                raise ValueError(f"latency.targets.{name}: tensorrt needs device: cuda")
            if t.precision == "int8" and t.backend == "torch":
                raise ValueError(
                    f"latency.targets.{name}: int8 needs backend tensorrt or onnxruntime"
                )
            if t.backend == "onnxruntime" and t.precision == "fp16":
                raise ValueError(
                    f"latency.targets.{name}: onnxruntime targets run fp32 or int8 (fp16: tensorrt)"
                )
            if t.timings == "imported" and t.estimator == "lut":
                raise ValueError(
                    f"latency.targets.{name}: an imported target has no per-layer table; "
                    "set estimator: measured (or auto)"
                )
            if self.protocol.clock == "thread_cpu" and not t.single_threaded_cpu:
                raise ValueError(
                    f"latency.protocol.clock: thread_cpu only measures latency for CPU targets "
                    f"with threads: 1 and inter_op_threads: 1 ({name} is not); use auto or wall"
                )
        return self


# ----------------------------------------------------------------------- predictor (issue 5)
PredictorModel = Literal["mlp", "ridge", "gbm", "ensemble"]


class PredictorConfig(StrictModel):
    """Accuracy predictor: dataset of measured subnets, encoding, models and their selection."""

    # Measurement noise, not sample count, limits tau first: fewer subnets each measured on
    # more images beat many noisy ones at equal cost (n_samples x (calib + eval) forwards).
    n_samples: Annotated[int, Field(ge=12)] = 150  # subnets measured (always incl. min and max)
    calib_images: Annotated[int, Field(ge=1)] = 1000  # train images to recalibrate BN per subnet
    eval_images: Annotated[int, Field(ge=1)] | None = None  # val images per subnet (None: all)
    batch_size: Annotated[int, Field(ge=1)] = 250  # evaluation batch
    # BN statistics from batches of this many calibration images (null: one batch of all).
    calib_batch_size: Annotated[int, Field(ge=1)] | None = None
    # Subnets measured twice, after BN calibration on two disjoint train subsets: the reported
    # label noise and tau ceiling then include the calibration's noise.
    retest: Annotated[int, Field(ge=0)] = 10
    # What the predictor learns: measured accuracy, or "loss": accuracy predicted from the
    # subnet's mean val cross-entropy by a linear fit over the measured subnets (less noisy).
    target: Literal["accuracy", "loss"] = "loss"
    derived_features: bool = True  # add log MACs and log params to the one-hot encoding
    per_resolution_features: bool = True  # also every feature crossed with the resolution
    # Candidates, chosen by k-fold tau; "ensemble" is the mean of the other three.
    models: list[PredictorModel] = Field(default=["mlp", "ridge", "gbm", "ensemble"], min_length=1)
    k_folds: Annotated[int, Field(ge=2, le=20)] = 5  # model selection by k-fold Kendall tau
    # Models within this k-fold tau of the best count as tied; the fastest to evaluate wins.
    tie_tolerance: Annotated[float, Field(ge=0.0, le=0.2)] = 0.0
    holdout_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2  # reported metrics
    curve_points: Annotated[int, Field(ge=0, le=20)] = 0  # learning-curve sizes (0: no curve)
    ridge_alphas: list[Annotated[float, Field(gt=0)]] = [0.01, 0.1, 1.0, 10.0, 100.0]
    mlp_hidden: Annotated[int, Field(ge=4)] = 128
    mlp_layers: Annotated[int, Field(ge=1, le=6)] = 2
    mlp_epochs: Annotated[int, Field(ge=1)] = 400  # full-batch Adam steps
    mlp_lr: Annotated[float, Field(gt=0)] = 3e-3
    mlp_weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    gbm_iterations: Annotated[int, Field(ge=1)] = 150
    gbm_learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.1
    gbm_max_leaf_nodes: Annotated[int, Field(ge=2, le=65536)] = 15
    gbm_min_samples_leaf: Annotated[int, Field(ge=1)] = 5

    def n_holdout(self, n: int) -> int:
        """Subnets of ``n`` the selection holds out for the reported metrics."""
        return int(round(self.holdout_fraction * n))

    def fits_samples(self, n: int) -> bool:
        """The one sample-size rule: ``n`` subnets hold out >= 3 and leave >= max(2 k, 6) to
        k-fold (checked here before hours of measuring, and by the fit on the rows it got)."""
        hold = self.n_holdout(n)
        return hold >= 3 and n - hold >= max(2 * self.k_folds, 6)

    def min_samples(self) -> int:
        """The fewest subnets :meth:`fits_samples` accepts."""
        return next(n for n in range(1, 100_000) if self.fits_samples(n))

    @model_validator(mode="after")
    def _enough_samples(self) -> PredictorConfig:
        if not self.fits_samples(self.n_samples):
            raise ValueError(
                f"predictor.n_samples: {self.n_samples} subnets are too few for "
                f"{self.k_folds}-fold selection with holdout_fraction {self.holdout_fraction}; "
                f"use n_samples >= {self.min_samples()} (or a larger holdout_fraction / fewer "
                "k_folds)"
            )
        return self


# -------------------------------------------------------------------------- search (issue 5)
class NsgaConfig(StrictModel):
    pop_size: Annotated[int, Field(ge=4)] = 100  # at most; a budget caps it (see below)
    generations: Annotated[int, Field(ge=1)] = 100
    polish_sweeps: Annotated[int, Field(ge=0)] = 5  # local search rounds on the final front
    # A polish round that leaves the front unchanged widens to one more non-dominated layer
    # of the archive, up to this many (1: the front only; 3 was tried on issue 26's
    # landscapes: fewer failing cells, a worse worst one -- not the default).
    polish_layers: Annotated[int, Field(ge=1)] = 1
    time_limit_s: Annotated[float, Field(gt=0)] = 60.0
    max_evaluations: Annotated[int, Field(ge=1)] | None = None  # distinct candidates
    mutation_prob: Annotated[float, Field(ge=0, le=1)] | None = None  # per index (null: 1/D)
    crossover_prob: Annotated[float, Field(ge=0, le=1)] = 0.5
    # Share of crossovers at two points (a contiguous run of dimensions from one parent, so
    # blocks of linked neighbouring dimensions survive); the rest uniform (1.0 was tried on
    # issue 26's landscapes with polish_layers 3: not better at the worst cell).
    two_point_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    # Under an evaluation budget: the share kept for the polish (what it leaves goes back to
    # the generations), and the population at most budget / evaluations_per_member (>= 16).
    polish_share: Annotated[float, Field(ge=0, lt=1)] = 0.25
    evaluations_per_member: Annotated[int, Field(ge=1)] = 60
    # Restart from the front's spread plus fresh spread rows after this share of the
    # generations the budget allows without a change of the front (at least 3; 0: never).
    restart_after: Annotated[float, Field(ge=0, le=1)] = 0.15


class EvolutionConfig(StrictModel):
    population: Annotated[int, Field(ge=4)] = 100  # members alive at once (aging evolution)
    children: Annotated[int, Field(ge=1)] = 25  # bred per generation; as many oldest die
    tournament: Annotated[int, Field(ge=1)] = 10  # members per parent tournament
    mutation_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5  # children by mutation
    mutation_prob: Annotated[float, Field(ge=0, le=1)] = 0.1  # per dimension
    generations: Annotated[int, Field(ge=1)] = 200
    max_evaluations: Annotated[int, Field(ge=1)] | None = None  # distinct candidates per budget
    time_limit_s: Annotated[float, Field(gt=0)] = 10.0
    # Share of the run's evaluations spent first on uniform feasible samples: their best is a
    # floor the result never falls below, their best members the first population.
    random_share: Annotated[float, Field(ge=0, lt=1)] = 0.3
    # Restart around fresh uniform samples after this share of the generations the budget
    # allows without a gain (at least 3 generations; 0: never).
    restart_after: Annotated[float, Field(ge=0, le=1)] = 0.15
    # The most of a generation's brood given to fresh uniform feasible samples, taken when
    # children are no better than uniform rows or breeding's drought outlasts what sampling
    # would (0: breeding only).
    uniform_share_max: Annotated[float, Field(ge=0, le=1)] = 0.8
    feasible_only: bool = True  # latency is cheap: infeasible children are never evaluated
    init: Literal["uniform", "spread"] = "spread"  # initial population sampling
    polish_sweeps: Annotated[int, Field(ge=0)] = 2
    seed_from_front: bool = True  # seed with the best NSGA-II front points under the budget


class SearchConfig(StrictModel):
    """Predictor-guided search per latency target: Pareto front and one subnet per budget."""

    @model_validator(mode="before")
    @classmethod
    def _budgets_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "budgets" in data:
            raise ValueError(
                "search.budgets moved: set each target's budgets under "
                "latency.targets.<name>.budgets (search.default_budgets covers the others)"
            )
        return data

    # Budgets of targets that set none (latency.targets.<name>.budgets overrides per target).
    default_budgets: BudgetConfig = BudgetConfig()
    nsga: NsgaConfig = NsgaConfig()
    evolution: EvolutionConfig = EvolutionConfig()
    random_samples: Annotated[int, Field(ge=1)] = 20000  # uniform baseline (and plotted, thinned)
    # Distinct candidates the whole search may evaluate (accuracy lookups). null: a share of
    # the space, at least min_evaluations (never most of a small space; the supernet's ~1e13
    # is bounded by the generations first).
    max_evaluations: Annotated[int, Field(ge=1)] | None = None
    evaluations_share: Annotated[float, Field(gt=0, le=1)] = 0.05
    min_evaluations: Annotated[int, Field(ge=1)] = 300
    extra_objectives: list[Literal["macs", "params"]] = []  # further NSGA-II objectives
    evaluate_selected: bool = True  # measure each pick on the supernet (BN recalibrated, val)


# ------------------------------------------------------------------------- package (issue 6)
class PackageConfig(StrictModel):
    """Turning each selected subnet into a deployable, verified package."""

    bn_calibration_images: Annotated[int, Field(ge=1)] = 2000  # train images to re-estimate BN
    batch_size: Annotated[int, Field(ge=1)] = 256  # calibration / evaluation batch
    finetune_epochs: Annotated[int, Field(ge=0)] = 0  # distillation fine-tune from the supernet
    finetune_lr: Annotated[float, Field(gt=0.0)] = 0.005  # SGD (momentum 0.9), cosine to 0
    finetune_batch_size: Annotated[int, Field(ge=1)] = 128
    kd_ratio: Annotated[float, Field(ge=0.0)] = 1.0  # loss = CE + kd_ratio * KL(teacher || student)
    opset: Annotated[int, Field(ge=17)] = 17  # ONNX opset
    # Parity ONNX Runtime vs torch; thresholds may only be made stricter than the defaults.
    parity_images: Annotated[int, Field(ge=256)] = 256  # test images (topped up from train)
    parity_atol: Annotated[float, Field(gt=0.0, le=1e-4)] = 1e-4  # max |logit difference|
    parity_min_agreement: Annotated[float, Field(ge=0.999, le=1.0)] = 0.999  # top-1 agreement
    # int8 targets: the shipped int8 model's top-1 agreement with the fp32 subnet on the
    # parity images (int8 rounding flips a few borderline images by design).
    int8_min_agreement: Annotated[float, Field(ge=0.5, le=1.0)] = 0.97
    max_models: Annotated[int, Field(ge=1)] | None = None  # package only the first N selected


# ------------------------------------------------------------------------- publish (issue 6)
class PublishConfig(StrictModel):
    """Where packages are published. Credentials never go here: use the AWS chain (env, profile)."""

    uri: str = "file://registry"  # file://<dir> (relative to the repo root) or s3://bucket/prefix
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO); default AWS_ENDPOINT_URL
    region: str | None = None  # default AWS_REGION / AWS_DEFAULT_REGION / us-east-1
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5  # per S3 request, with backoff
    conflict_retries: Annotated[int, Field(ge=0, le=100)] = 10  # index compare-and-swap retries
    connect_timeout_s: Annotated[float, Field(gt=0.0)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0.0)] = 60.0

    @model_validator(mode="after")
    def _check_uri(self) -> PublishConfig:

        parse_registry_uri(self.uri)  # a URIError is a ValueError: reported under its key
        if self.endpoint_url is not None:
            check_endpoint_url(self.endpoint_url)
        return self


# --------------------------------------------------------------------------------- the file
class Params(StrictModel):
    base: BaseConfig = BaseConfig()
    data: DataConfig = DataConfig()
    supernet: SupernetConfig = SupernetConfig()
    train: TrainConfig = TrainConfig()
    latency: LatencyConfig = LatencyConfig()
    predictor: PredictorConfig = PredictorConfig()
    search: SearchConfig = SearchConfig()
    package: PackageConfig = PackageConfig()
    publish: PublishConfig = PublishConfig()

    @model_validator(mode="before")
    @classmethod
    def _none_sections_are_empty(cls, data: Any) -> Any:
        # `section:` with nothing under it parses as None in YAML; treat it as {}.
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _cross_section(self) -> Params:
        """Rules that span sections, so a mistake fails at load, not in a later stage."""
        side = None
        if self.data.source in KNOWN_SOURCES:
            side = KNOWN_SOURCES[self.data.source][0]
        elif self.data.image_size is not None:
            side = self.data.image_size
        if side is not None and self.supernet.resolutions[-1] > side:
            raise ValueError(
                f"supernet.resolutions: {self.supernet.resolutions[-1]} exceeds the "
                f"{side}x{side} images of data ({self.data.source}); use resolutions <= {side}"
            )
        if self.train.ddp_backend == "nccl" and self.base.device == "cpu":
            raise ValueError("train.ddp_backend: nccl needs base.device cuda (or auto); use gloo")
        return self


# ----------------------------------------------------------------------------------- loader
def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping; raise ConfigError with a one-line message."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: top level must be a mapping of sections, got {type(raw).__name__}"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(one_line(format_validation_error(source, err))) from None


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate params.yaml. Every error is a ConfigError naming the file and key."""
    return parse_params(read_params_yaml(path), str(Path(path)))
