"""The scene studies' domain: presets, how a row's run becomes a training config, the job that
trains it, and the summaries every scene table shares.

Choices (the approximately optimal weights, the units experiment's best weights) come from
*selection runs*: trained for the preset's ``selection_steps`` and evaluated on the selection
split only, never on the reported one. On the synthetic city the selection split is val and
the reported split test; on Tiny Cityscapes, whose reported split is val (its test labels are
not public), selection runs train on ``train:fit`` and are scored on ``train:holdout``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uncertainty_mtl.config import (
    TrainConfig,
    apply_patch,
    build_config,
    config_to_dict,
    parse_overrides,
    read_config,
)
from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments.benchmark.selection import Halving
from uncertainty_mtl.experiments.executors import Job
from uncertainty_mtl.experiments.runner import Run, train_when_free
from uncertainty_mtl.reporting.tables import format_mean_std, summarise_metrics
from uncertainty_mtl.tasks.registry import SCENE_TASKS

__all__ = [
    "METRIC_KEYS",
    "PRESETS",
    "SEARCHES",
    "Preset",
    "SceneStudy",
    "cell",
    "fixed_run",
    "learned_run",
    "mean_metrics",
    "train_scene_run",
    "trivial_baselines",
]


@dataclass(frozen=True)
class Preset:
    """A base config and what a reproduction changes in it.

    Attributes:
        base: shipped config name.
        patch: keys set in every run.
        selection_steps: steps of a selection run.
        needs_data: the preset needs ``--data`` (no synthetic city).
        select_split / report_split: rows select checkpoints on the first, report the second.
        choose_train / choose_split: selection runs train on the first, are scored on the second.
        figure2_patch: keys set in Figure 2's runs only (the paper's caption gives their lr).
        halving: the successive halving that chooses among a grid's candidates (a selection
            run of a first rung is shorter than ``selection_steps``).
    """

    base: str
    patch: Mapping[str, Any]
    selection_steps: int
    needs_data: bool = False
    select_split: str | None = "val"
    report_split: str = "test"
    choose_train: str = "train"
    choose_split: str = "val"
    figure2_patch: Mapping[str, Any] = field(default_factory=dict)
    halving: Halving = field(default_factory=Halving)


#: ``SceneStudy.search``: how a grid of candidates is searched.
SEARCHES = ("halving", "grid")

PRESETS: dict[str, Preset] = {
    # The small encoder on the synthetic city at 64×128: 1,200 steps a row (~95 s on 2 cores
    # with AVX-512, two runs side by side), full selection runs 600 (a search's first rungs 66
    # and 200).
    "cpu": Preset(
        "cpu/three-task",
        {"optim.steps": 1200, "eval.every": 600, "run.checkpoint_every": 600, "data.workers": 0},
        selection_steps=600,
    ),
    # The cpu preset at a quarter of the pixels: the synthetic city rendered at 32×64 (same
    # frames, same steps, ASPP rates scaled to the 4×8 feature map), about a third of a cpu
    # row's cost. For studies too large for the cpu preset (the methods' tuned protocol); how
    # its ranking of the methods agrees with the cpu preset's is measured in docs/methods.md.
    "cpu-lite": Preset(
        "cpu/three-task",
        {
            "optim.steps": 1200,
            "eval.every": 600,
            "run.checkpoint_every": 600,
            "data.workers": 0,
            "data.root": "data/synth-32x64",
            "data.synthetic": True,
            "data.synth_size": [32, 64],
            "data.cache_dir": "data/cache/synth-32x64",
            "model.aspp_rates": [1, 2, 3],
        },
        selection_steps=600,
    ),
    # The paper's Tiny Cityscapes setting (Appendix A); needs --data and a GPU.
    "paper": Preset(
        "paper/tiny-cityscapes/three-task",
        {},
        selection_steps=25000,
        needs_data=True,
        select_split=None,
        report_split="val",
        choose_train="train:fit",
        choose_split="train:holdout",
        # Figure 2's caption: its sweeps were trained at lr 0.01 (Table 1's rows at 2.5e-3).
        figure2_patch={"optim.lr": 0.01},
    ),
    # Seconds, for the tests.
    "smoke": Preset(
        "smoke",
        {
            "optim.steps": 4,
            "eval.every": 2,
            "run.checkpoint_every": 2,
            "eval.cluster_method": "grid",
        },
        selection_steps=2,
    ),
}

#: Bumped when the same config trains something else (the code changed, not the config), so
#: that a study never reuses a run of an older revision: 2 = the instance task's penalty counts
#: its two event dimensions, and the positive regulariser is Liebel & Körner's formula exactly.
REVISION = 2

#: Scalar metrics summarised over seeds.
METRIC_KEYS = (
    "miou",
    "pixel_accuracy",
    "instance_mean_error_px",
    "instance_ap",
    "instance_ap50",
    "depth_mean_error_px",
    "depth_rms_error_px",
)


def fixed_run(name: str, weights: Mapping[str, float], **kwargs: Any) -> Run:
    """A run with fixed weights; a task of weight 0 is not trained."""
    tasks = [t for t in SCENE_TASKS if weights.get(t, 0) > 0]
    patch = {
        "tasks": tasks,
        "weighting.kind": "fixed",
        "weighting.weights": {t: weights[t] for t in tasks},
    }
    return Run(name, patch, **kwargs)


def learned_run(
    name: str, tasks: Sequence[str], patch: Mapping[str, Any] | None = None, **kwargs: Any
) -> Run:
    """A run with learned uncertainty weights (and ``patch`` on top)."""
    return Run(
        name, {"tasks": list(tasks), "weighting.kind": "uncertainty", **(patch or {})}, **kwargs
    )


def train_scene_run(config: TrainConfig, run_dir: str) -> dict[str, Any]:
    """A job: trains one run, resuming it if it was interrupted (decided when the job starts,
    so that a queued or requeued cluster job finds what an earlier one left), after waiting
    for a job of an earlier invocation that still trains it; returns its ``results.json``."""
    from uncertainty_mtl.engine import train

    return train_when_free(
        Path(run_dir),
        SceneStudy.result_file,
        lambda resume: train(config, run_dir, resume=resume, progress=False),
    )


@dataclass
class SceneStudy:
    """The scene network's runs for one preset.

    Args:
        preset: a key of :data:`PRESETS`.
        data: a Cityscapes-layout root; default: the preset's (the synthetic city, generated on
            first use).
        overrides: ``--set key=value`` strings, applied to every run.
        search: ``"halving"``, the preset's successive halving over a grid's candidates, or
            ``"grid"``: every candidate trained in full.
    """

    preset: str
    data: str | None = None
    overrides: Sequence[str] = ()
    search: str = "halving"
    result_file: str = "results.json"
    _base: dict[str, Any] = field(default_factory=dict)
    _user: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {list(PRESETS)}, got {self.preset!r}")
        if self.search not in SEARCHES:
            raise ConfigError(f"--search must be one of {list(SEARCHES)}, got {self.search!r}")
        if self.spec.needs_data and not self.data:
            raise ConfigError(f"--preset {self.preset} needs --data ROOT (e.g. Tiny Cityscapes)")
        self._base = read_config(self.spec.base)
        self._user = parse_overrides(list(self.overrides))
        self.resolve(Run("check"), parallel=False)  # a bad --set fails here, before any run

    @property
    def smoke(self) -> bool:
        return self.preset == "smoke"

    def settings(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "data": self.data,
            "overrides": list(self.overrides),
            "search": self.search,
        }

    @property
    def spec(self) -> Preset:
        return PRESETS[self.preset]

    @property
    def halving(self) -> Halving:
        """The search's schedule: the full grid is one rung."""
        return self.spec.halving if self.search == "halving" else Halving(rungs=1)

    def resolve(self, run: Run, *, parallel: bool = False) -> TrainConfig:
        spec = self.spec
        patch: dict[str, Any] = {**spec.patch, **self._user, **run.patch, "run.seed": run.seed}
        if self.data:
            patch.update({"data.root": self.data, "data.synthetic": False})
        if run.selection:
            patch.update(
                {
                    # a search's first rungs train shorter than a full selection run
                    "optim.steps": run.patch.get("optim.steps", spec.selection_steps),
                    "data.train_split": spec.choose_train,
                    "eval.select_split": spec.choose_split,
                    "eval.report_split": spec.choose_split,
                    "eval.cluster_method": None,
                }
            )
        else:
            patch.update(
                {"eval.report_split": spec.report_split, "eval.select_split": spec.select_split}
            )
        if parallel:
            patch.update({"run.threads": 1, "data.workers": 0})
        return build_config(apply_patch(self._base, patch))

    def identity(self, config: TrainConfig) -> dict[str, Any]:
        settings = config_to_dict(config)
        # How a run is executed is not what it is; seeds share a directory (seed<k> below it).
        for volatile in ("threads", "device", "seed", "channels_last", "compile", "deterministic"):
            settings["run"].pop(volatile, None)
        settings["data"].pop("workers", None)
        settings["revision"] = REVISION
        return settings

    def job(self, config: TrainConfig, run_dir: Path) -> Job:
        name = f"{run_dir.parent.name}/{run_dir.name}"
        return Job(name, train_scene_run, (config, str(run_dir)))

    def check_data(self) -> None:
        """Refuses a data root that gives no data (one that does not exist, or is not a
        Cityscapes-layout root and does not ask for the synthetic city), before any work.

        Raises:
            DataError: naming the root and what was expected.
        """
        from uncertainty_mtl.data.prepare import check_scene_root

        check_scene_root(self.resolve(Run("check")).data)

    def prepare(self, *, progress: bool = True) -> None:
        """Generates the synthetic city and its cache before runs start side by side."""
        from uncertainty_mtl.data.prepare import ensure_scene_data, scene_frames

        config = self.resolve(Run("prepare"))
        ensure_scene_data(config.data, progress=progress)
        spec = self.spec
        splits = {config.data.train_split, spec.report_split, spec.choose_split, spec.choose_train}
        for split in sorted(s for s in splits if s):
            # builds the cache once
            scene_frames(config.data, config.tasks, split, train=False, progress=progress)


def mean_metrics(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seed summaries (mean, std, n, values) of the scalar metrics the runs have."""
    return summarise_metrics(results, METRIC_KEYS)


def cell(summary: Mapping[str, Any], key: str, digits: int) -> str:
    return format_mean_std(summary.get(key), digits)


def trivial_baselines(study: SceneStudy) -> dict[str, float]:
    """Metrics on the report split of predictors built from training-split statistics only: the
    most frequent class per pixel position, zero offsets, the mean disparity per image row."""
    import torch
    import torch.nn.functional as F

    from uncertainty_mtl.data.cityscapes import CityscapesScenes
    from uncertainty_mtl.metrics import SceneMetrics

    d = study.resolve(Run("trivial")).data
    train = CityscapesScenes(d.root, d.train_split, cache_dir=d.cache_dir, check_values=False)
    test = CityscapesScenes(
        d.root, study.spec.report_split, cache_dir=d.cache_dir, check_values=False
    )
    h, w = train[0][0].shape[-2:]
    counts = torch.zeros(19, h, w)
    depth_sum, depth_n = torch.zeros(h), torch.zeros(h)
    for i in range(0, len(train), max(1, len(train) // 500)):
        _, t = train[i]
        valid = t["semantic"] != 255
        counts.scatter_add_(0, t["semantic"].clamp(max=18)[None], valid[None].float())
        depth_sum += (t["inverse_depth"] * t["depth_mask"]).sum(1)
        depth_n += t["depth_mask"].sum(1)
    prior = F.one_hot(counts.argmax(0), 19).permute(2, 0, 1)[None].float()
    rows = (depth_sum / depth_n.clamp(min=1)).view(1, 1, h, 1).expand(1, 1, h, w)
    metrics = SceneMetrics(list(SCENE_TASKS))
    for i in range(len(test)):
        _, t = test[i]
        if t["semantic"].shape != (h, w):
            raise ValueError("trivial baselines need one frame size for train and test")
        outputs = {"semantic": prior, "instance": torch.zeros(1, 2, h, w), "depth": rows}
        metrics.update(outputs, {k: v[None] for k, v in t.items()})
    result = metrics.compute()
    return {k: result[k] for k in ("miou", "instance_mean_error_px", "depth_mean_error_px")}
