"""The training configuration's sections: one dataclass each, their defaults and comments
(the config reference is generated from them), and :class:`TrainConfig`'s validation."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.weighting.options import (
    CagradConfig,
    DbMtlConfig,
    DwaConfig,
    FairGradConfig,
    FamoConfig,
    GradNormConfig,
    GradVacConfig,
    UwSoConfig,
)
from uncertainty_mtl.weighting.registry import AGGREGATOR, METHODS

__all__ = [
    "OPTIMIZERS",
    "WEIGHTING_KINDS",
    "CagradConfig",
    "DataConfig",
    "DbMtlConfig",
    "DwaConfig",
    "EvalConfig",
    "FairGradConfig",
    "FamoConfig",
    "GradNormConfig",
    "GradVacConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "UwSoConfig",
    "WeightingConfig",
]


#: ``weighting.kind``: every method of :data:`uncertainty_mtl.weighting.registry.METHODS`.
WEIGHTING_KINDS = tuple(METHODS)


@dataclass
class ModelConfig:
    """The network."""

    backbone: str = "resnet101"  # resnet18/34/50/101, or "small" (a CPU encoder, not the paper's)
    pretrained: bool = False  # ImageNet weights via torchvision (downloaded on first use)
    aspp_rates: list[int] = field(default_factory=lambda: [12, 24, 36])  # ASPP dilation rates
    aspp_channels: int = 256  # channels of the ASPP output
    decoder_channels: int = 256  # channels of each task decoder's 3×3 convolution
    aspp_dropout: float = 0.0  # dropout after the ASPP projection (torchvision uses 0.5)
    small_width: int = 32  # first-stage width of the small encoder
    sync_bn: bool = False  # SyncBatchNorm under DDP (CUDA only)


@dataclass
class DataConfig:
    """Where the frames come from and how they are augmented."""

    root: str = "data/synth"  # a Cityscapes-layout root
    synthetic: bool = False  # generate the synthetic city at root if it is not there; only
    # where asked beside the root: a layer (file or --set) that names data.root alone means data
    synth_size: list[int] = field(default_factory=lambda: [256, 512])  # [height, width]
    synth_split_sizes: dict[str, int] = field(
        default_factory=lambda: {"train": 2975, "val": 500, "test": 500}
    )  # frames per split of the generated city
    synth_seed: int = 0  # seed of the generated city
    size: list[int] | None = None  # resize every frame to [height, width]
    flip: bool = True  # random horizontal flip (the paper's augmentation on Tiny Cityscapes)
    scale: list[float] | None = None  # random scale range [min, max] (paper, full size: 0.7–2.0)
    crop: list[int] | None = None  # random crop [height, width] (paper, full size: 512×512)
    cache_dir: str | None = None  # memory-mapped decoded frames
    depth_scale: float = 1.0  # train on inverse depth × this (other units); metrics stay in pixels
    workers: int = 2  # DataLoader worker processes
    train_split: str = "train"  # the split trained on

    def __post_init__(self) -> None:
        # "~/city" in a YAML file or after --set is the user's home, as in a shell.
        self.root = os.path.expanduser(self.root)
        if self.cache_dir is not None:
            self.cache_dir = os.path.expanduser(self.cache_dir)


#: ``optim.optimizer``: the paper's SGD, or Adam (what most users would pick).
OPTIMIZERS = ("sgd", "adam")


@dataclass
class WeightingConfig:
    """How the task losses are combined."""

    kind: str = "uncertainty"  # "uncertainty" (learned), "fixed", or another method of
    # weighting.registry.METHODS: "equal", "gls", "rlw", "imtl-l", "dwa", "gradnorm", and the
    # gradient aggregators (torchjd; one process): "mgda", "pcgrad", "cagrad", ...
    weights: dict[str, float] = field(default_factory=dict)  # fixed: task -> weight
    convention: str = "likelihood"  # or "paper" (Gaussian term for every regression task)
    regulariser: str = "log"  # or "positive" (log(1 + σ²))
    likelihoods: dict[str, str] = field(default_factory=dict)  # per-task override, e.g.
    # {semantic: tempered_softmax}; default: softmax, laplace, laplace
    init_log_var: float | dict[str, float] | str = 0.0  # initial s: for every task, task -> s,
    # or "auto" (each task's optimum for its first loss)
    lr: float | None = None  # learning rate of the log-variances, IMTL-L's scales and
    # GradNorm's weights (default: optim.lr)
    dwa: DwaConfig = field(default_factory=DwaConfig)
    gradnorm: GradNormConfig = field(default_factory=GradNormConfig)
    cagrad: CagradConfig = field(default_factory=CagradConfig)
    uw_so: UwSoConfig = field(default_factory=UwSoConfig)
    famo: FamoConfig = field(default_factory=FamoConfig)
    fairgrad: FairGradConfig = field(default_factory=FairGradConfig)
    gradvac: GradVacConfig = field(default_factory=GradVacConfig)
    db_mtl: DbMtlConfig = field(default_factory=DbMtlConfig)

    def rate(self, lr: float) -> float:
        """The learning rate of the weighting's own parameters: ``lr`` (the network's) unless
        ``weighting.lr`` sets one (the one place this default is applied)."""
        return lr if self.lr is None else self.lr


@dataclass
class OptimConfig:
    """SGD with Nesterov momentum and polynomial decay (paper, Appendix A)."""

    optimizer: str = "sgd"  # or "adam" (torch.optim.Adam; momentum and nesterov unused)
    lr: float = 2.5e-3  # base learning rate, decayed polynomially to 0
    momentum: float = 0.9  # SGD only
    nesterov: bool = True  # SGD only
    weight_decay: float = 1e-4  # never applied to the log-variances
    poly_power: float = 0.9  # lr × (1 − step / steps) ** poly_power
    steps: int = 50000  # optimiser steps
    batch_size: int = 8  # over all processes
    amp: bool = False  # autocast: bfloat16 (CPU, GPUs that support it), else float16 + scaling


@dataclass
class EvalConfig:
    """Validation during training and the final evaluation."""

    every: int = 1000  # steps between validations
    select_split: str | None = "val"  # split that picks the best checkpoint (None: keep the last)
    report_split: str = "test"  # split of results.json, never looked at during training
    batch_size: int = 8  # frames per evaluation batch
    max_frames: int | None = None  # evaluate the first frames only (smoke runs)
    cluster_method: str | None = "grid"  # instances for AP in the final evaluation (None: no AP)


@dataclass
class RunConfig:
    seed: int = 0  # initialisation, batch order and augmentation
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"; under torchrun each rank takes its own GPU
    log_every: int = 20  # steps between records in metrics.jsonl and TensorBoard
    checkpoint_every: int = 500  # steps between saves of checkpoints/last.pt
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    channels_last: bool = False  # NHWC memory format (faster convolutions on tensor cores)
    compile: bool = False  # torch.compile the network (the first steps compile it)
    deterministic: bool = False  # deterministic kernels: exact resume on CUDA too (slower)


@dataclass
class TrainConfig:
    """Everything a training run depends on."""

    tasks: list[str] = field(default_factory=lambda: ["semantic", "instance", "depth"])  # a subset
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def trained_tasks(self) -> list[str]:
        """The tasks with a decoder: all of ``tasks``, minus those a fixed weight of 0 turns off."""
        if self.weighting.kind == "fixed":
            return [t for t in self.tasks if self.weighting.weights.get(t, 0.0) > 0]
        return list(self.tasks)

    def validate(self) -> None:
        """Checks that span several keys; raises :class:`ConfigError`."""
        from uncertainty_mtl.inference.clustering import METHODS
        from uncertainty_mtl.models.encoder import BACKBONES
        from uncertainty_mtl.tasks.registry import SCENE_TASKS, TASKS

        choices = {
            "model.backbone": (self.model.backbone, BACKBONES),
            "weighting.kind": (self.weighting.kind, WEIGHTING_KINDS),
            "weighting.convention": (self.weighting.convention, ("likelihood", "paper")),
            "weighting.regulariser": (self.weighting.regulariser, ("log", "positive")),
            "optim.optimizer": (self.optim.optimizer, OPTIMIZERS),
            "eval.cluster_method": (self.eval.cluster_method or "grid", METHODS),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
        if not self.tasks or any(t not in SCENE_TASKS for t in self.tasks):
            raise ConfigError(f"tasks: {self.tasks} must be a non-empty subset of {SCENE_TASKS}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks: {self.tasks} lists a task twice")
        if self.weighting.kind == "fixed":
            missing = [t for t in self.tasks if t not in self.weighting.weights]
            extra = [t for t in self.weighting.weights if t not in self.tasks]
            if missing or extra:
                raise ConfigError(
                    f"weighting.weights must give a weight for each of tasks {self.tasks}; "
                    f"missing {missing}, not in tasks {extra}"
                )
            if any(w < 0 for w in self.weighting.weights.values()) or not self.trained_tasks:
                raise ConfigError("weighting.weights must be >= 0 with at least one > 0")
        elif self.weighting.weights:
            raise ConfigError("weighting.weights is for kind 'fixed' only")
        self._validate_method_keys()
        self._validate_aggregation()
        per_task = {t: TASKS[t].likelihoods for t in SCENE_TASKS}
        for task, likelihood in self.weighting.likelihoods.items():
            if task not in self.tasks or likelihood not in per_task[task]:
                raise ConfigError(
                    f"weighting.likelihoods: {task}: {likelihood!r}; allowed for the trained "
                    f"tasks: { {t: per_task[t] for t in self.tasks} }"
                )
        inits = self.weighting.init_log_var
        if isinstance(inits, str) and inits != "auto":
            raise ConfigError(
                f"weighting.init_log_var must be a number, task -> number or 'auto', got {inits!r}"
            )
        if inits == "auto" and self.weighting.regulariser != "log":
            raise ConfigError("weighting.init_log_var: 'auto' needs weighting.regulariser 'log'")
        values = list(inits.values()) if isinstance(inits, dict) else [inits]
        values = [0.0 if v == "auto" else float(v) for v in values]
        if isinstance(inits, dict) and not set(inits) <= set(self.tasks):
            raise ConfigError(
                f"weighting.init_log_var names {sorted(set(inits) - set(self.tasks))}, "
                f"which are not in tasks {self.tasks}"
            )
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"weighting.init_log_var must be finite, got {inits}")
        if not self.data.depth_scale > 0:
            raise ConfigError(f"data.depth_scale must be > 0, got {self.data.depth_scale}")
        positive: dict[str, float] = {
            "optim.lr": self.optim.lr,
            "optim.steps": self.optim.steps,
            "optim.batch_size": self.optim.batch_size,
            "eval.every": self.eval.every,
            "eval.batch_size": self.eval.batch_size,
            "run.log_every": self.run.log_every,
            "run.checkpoint_every": self.run.checkpoint_every,
        }
        for key, number in positive.items():
            if not number > 0:
                raise ConfigError(f"{key} must be > 0, got {number}")
        pairs: dict[str, list[int] | list[float] | None] = {
            "data.size": self.data.size,
            "data.crop": self.data.crop,
            "data.scale": self.data.scale,
            "data.synth_size": self.data.synth_size,
        }
        for key, pair in pairs.items():
            if pair is not None and (len(pair) != 2 or min(pair) <= 0):
                raise ConfigError(f"{key} must be 2 positive numbers, got {pair}")
        if self.model.sync_bn and not self.run.device.startswith("cuda"):
            raise ConfigError("model.sync_bn needs run.device cuda (SyncBatchNorm refuses CPU)")
        self._validate_ranges()

    def _validate_method_keys(self) -> None:
        """Each method's own keys (:attr:`Method.options`): set only for its kind, and in
        range."""
        w = self.weighting
        for name, spec in METHODS.items():
            if not spec.options:
                continue
            section = getattr(w, spec.section)
            if section != type(section)() and w.kind != name:
                raise ConfigError(
                    f"weighting.{name} is for kind {name!r} only (weighting.kind is {w.kind!r})"
                )
            for option in spec.options:
                value = getattr(section, option.key)
                bound, inclusive = option.bound, option.inclusive
                if not (math.isfinite(value) and (value >= bound if inclusive else value > bound)):
                    raise ConfigError(
                        f"weighting.{name}.{option.key} must be a finite number "
                        f"{'>=' if inclusive else '>'} {bound:g}, got {value}"
                    )

    def _validate_aggregation(self) -> None:
        """What a gradient aggregator cannot train with, refused before anything is written:
        torchjd differentiates each task's loss under ``vmap``, which a compiled backward
        refuses, and its Jacobian meets bfloat16 losses and float32 parameters under autocast
        (and a float16 scaler would scale the rows it compares)."""
        kind = self.weighting.kind
        if METHODS[kind].family != AGGREGATOR:
            return
        if self.run.compile:
            raise ConfigError(
                f"weighting.kind {kind!r}: gradient aggregators need run.compile false (torchjd "
                "differentiates each task's loss under vmap, which a compiled backward refuses)"
            )
        if self.optim.amp:
            raise ConfigError(
                f"weighting.kind {kind!r}: gradient aggregators need optim.amp false (torchjd's "
                "Jacobian of the task losses does not run under autocast)"
            )

    def _validate_ranges(self) -> None:
        """Numbers that would fail (or silently misbehave) only later, mid-run."""
        import torch

        o, w = self.optim, self.weighting
        if not all(math.isfinite(x) for x in (o.lr, o.momentum, o.weight_decay, o.poly_power)):
            raise ConfigError(
                "optim.lr, optim.momentum, optim.weight_decay and optim.poly_power must be "
                f"finite, got {o.lr}, {o.momentum}, {o.weight_decay}, {o.poly_power}"
            )
        if w.lr is not None and not (math.isfinite(w.lr) and w.lr > 0):
            raise ConfigError(f"weighting.lr must be a finite number > 0 (or null), got {w.lr}")
        if o.poly_power < 0:
            raise ConfigError(f"optim.poly_power must be >= 0, got {o.poly_power}")
        if not 0 <= o.momentum < 1:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {o.momentum}")
        if o.optimizer == "sgd" and o.nesterov and o.momentum == 0:
            raise ConfigError("optim.nesterov needs optim.momentum > 0 (or optim.nesterov: false)")
        if o.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
        if self.eval.max_frames is not None and self.eval.max_frames < 1:
            raise ConfigError(
                f"eval.max_frames must be >= 1 (or null: every frame), got {self.eval.max_frames}"
            )
        if self.data.workers < 0:
            raise ConfigError(f"data.workers must be >= 0, got {self.data.workers}")
        if self.run.threads is not None and self.run.threads < 1:
            raise ConfigError(f"run.threads must be >= 1 (or null), got {self.run.threads}")
        if not 0 <= self.model.aspp_dropout < 1:
            raise ConfigError(
                f"model.aspp_dropout must be in [0, 1), got {self.model.aspp_dropout}"
            )
        widths = {
            "model.aspp_channels": self.model.aspp_channels,
            "model.decoder_channels": self.model.decoder_channels,
            "model.small_width": self.model.small_width,
        }
        for key, width in widths.items():
            if width < 1:
                raise ConfigError(f"{key} must be >= 1, got {width}")
        if not self.model.aspp_rates or min(self.model.aspp_rates) < 1:
            raise ConfigError(
                f"model.aspp_rates must be positive integers, got {self.model.aspp_rates}"
            )
        if self.model.pretrained and self.model.backbone == "small":
            raise ConfigError("model.pretrained: the small encoder has no pretrained weights")
        sizes = self.data.synth_split_sizes
        unknown = sorted(set(sizes) - {"train", "val", "test"})
        if unknown or any(n < 0 for n in sizes.values()):
            raise ConfigError(
                f"data.synth_split_sizes: splits are train, val, test with counts >= 0, got {sizes}"
            )
        try:
            torch.device(self.run.device)
        except RuntimeError as err:
            raise ConfigError(
                f"run.device: {self.run.device!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
            ) from err
