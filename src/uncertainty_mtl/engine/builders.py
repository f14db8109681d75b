"""What a run is made of, built from its config: network, weighting, optimiser, schedule,
mixed precision."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from uncertainty_mtl.config import ConfigError, TrainConfig, WeightingConfig
from uncertainty_mtl.models.multitask import MultiTaskNet
from uncertainty_mtl.tasks.registry import TASKS, scene_losses
from uncertainty_mtl.weighting import UncertaintyWeighting, Weighting, parameter_groups
from uncertainty_mtl.weighting.registry import (
    BuildArgs,
    UnknownMethodError,
    build_method,
    method,
)

__all__ = [
    "NetWithLoss",
    "amp_dtype",
    "autocast",
    "build_model",
    "build_optimiser",
    "build_scheduler",
    "build_weighting",
    "deterministic",
    "grad_scaler",
    "scales_gradients",
    "weighting_from",
]


def build_model(config: TrainConfig) -> MultiTaskNet:
    m = config.model
    return MultiTaskNet(
        config.trained_tasks,
        backbone=m.backbone,
        pretrained=m.pretrained,
        aspp_rates=m.aspp_rates,
        aspp_channels=m.aspp_channels,
        decoder_channels=m.decoder_channels,
        aspp_dropout=m.aspp_dropout,
        small_width=m.small_width,
    )


def build_weighting(config: TrainConfig) -> Weighting:
    """The configured weighting. Its own per-call finiteness check is off: the training loop
    checks the total (without a device synchronisation on every step, see ``engine.loop``)."""
    lr = config.weighting.rate(config.optim.lr)
    return weighting_from(
        config.weighting, config.trained_tasks, seed=config.run.seed, lr=lr, check_finite=False
    )


def weighting_from(
    w: WeightingConfig,
    tasks: Sequence[str],
    *,
    seed: int,
    lr: float,
    check_finite: bool = True,
) -> Weighting:
    """The weighting ``w`` describes for ``tasks`` (any tasks of the registry): ``seed`` seeds
    RLW's draws, ``lr`` is GradNorm's step on its weights; likelihoods and event dimensions of
    the uncertainty weighting come from the registry unless ``w`` overrides them."""
    tasks = list(tasks)
    try:
        spec = method(w.kind)
    except UnknownMethodError as err:  # never a silent fall-back to another method
        raise ConfigError(str(err)) from None
    section = getattr(w, spec.section, None)
    options = {o.key: getattr(section, o.key) for o in spec.options}
    args = BuildArgs(
        tasks,
        seed=seed,
        lr=lr,
        check_finite=check_finite,
        options=options,
        weights=w.weights,
        # a task outside the registry (QM9's targets) names its likelihood in the config
        likelihoods={t: w.likelihoods.get(t) or TASKS[t].likelihood for t in tasks},
        event_dims={t: TASKS[t].event_dims if t in TASKS else 1 for t in tasks},
        init_log_var=w.init_log_var,
        convention=w.convention,
        regulariser=w.regulariser,
    )
    return build_method(spec.name, args)


def build_optimiser(
    config: TrainConfig, model: nn.Module, weighting: Weighting
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (paper, Appendix A), or Adam (``optim.optimizer``); the
    weighting's parameters in their own group without weight decay."""
    o = config.optim
    groups = parameter_groups(
        model,
        weighting,
        lr=o.lr,
        weight_decay=o.weight_decay,
        weighting_lr=config.weighting.rate(o.lr),
    )
    if o.optimizer == "adam":
        return torch.optim.Adam(groups, lr=o.lr)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def build_scheduler(
    config: TrainConfig, optimiser: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LambdaLR:
    """Polynomial decay ``(1 - step/steps)^power`` to 0 at the last step."""
    steps, power = config.optim.steps, config.optim.poly_power
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: max(0.0, 1.0 - s / steps) ** power
    )


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of ``optim.amp``: bfloat16 where the device supports it (every CPU,
    CUDA GPUs from Ampere on), float16 otherwise (older GPUs; then with a gradient scaler)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(config: TrainConfig, device: torch.device) -> AbstractContextManager[Any]:
    if not config.optim.amp:
        return nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype(device))


def scales_gradients(config: TrainConfig, device: torch.device) -> bool:
    """Whether the run scales its loss before backward: float16 autocast only (bfloat16 has
    float32's range)."""
    return config.optim.amp and amp_dtype(device) == torch.float16


def grad_scaler(config: TrainConfig, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled where :func:`scales_gradients`."""
    return torch.amp.GradScaler(device.type, enabled=scales_gradients(config, device))


class NetWithLoss(nn.Module):
    """The network and the weighting in one module, so that DDP all-reduces the log-variances'
    gradients with the network's (the one right way; see the README).

    Args:
        model: the network.
        weighting: the loss weighting.
        depth_scale: the network learns inverse depth in units of ``depth_scale`` pixels.
    """

    def __init__(self, model: MultiTaskNet, weighting: Weighting, *, depth_scale: float = 1.0):
        super().__init__()
        self.model = model
        self.weighting = weighting
        self.depth_scale = depth_scale
        self.tempered = isinstance(weighting, UncertaintyWeighting) and (
            weighting.likelihoods.get("semantic") == "tempered_softmax"
        )

    def forward(
        self, images: Tensor, targets: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """The weighted total, the task losses, and the shared features where the weighting
        needs them (a gradient aggregator: ``None`` otherwise)."""
        features = self.model.features(images)
        outputs = self.model.heads(features, images.shape[-2:])
        if self.depth_scale != 1.0 and "inverse_depth" in targets:
            targets = {**targets, "inverse_depth": targets["inverse_depth"] * self.depth_scale}
        if self.tempered:
            assert isinstance(self.weighting, UncertaintyWeighting)
            scale = self.weighting.logit_scale("semantic")
            outputs = {**outputs, "semantic": outputs["semantic"] * scale}
        losses = scene_losses(outputs, targets, self.model.tasks)
        return self.weighting(losses), losses, features if self.weighting.needs_features else None


@contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """With ``enabled`` (``run.deterministic``), deterministic kernels for the run:
    ``torch.use_deterministic_algorithms``, cuDNN without autotuning, and the cuBLAS workspace
    setting it needs (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set; it takes effect only if
    CUDA is not initialised yet, as in a fresh ``umtl train``). On the CPU our kernels are
    deterministic already. The previous settings are restored afterwards."""
    if not enabled:
        yield
        return
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[1:]
