"""The two-task study of the reproduction report (Key 2019, §3), as one command: its runs
(``two_task_runs``) through the common runner, then its summary over seeds, ``table.md`` and
three figures (the report's Figures 2-4)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from uncertainty_mtl._io import read_jsonl, write_json, write_text
from uncertainty_mtl.data.mnist_like import ImageSplits
from uncertainty_mtl.experiments.executors import Executor, LocalExecutor
from uncertainty_mtl.experiments.runner import Runner
from uncertainty_mtl.experiments.selection import CANDIDATE_CRITERION, choose
from uncertainty_mtl.experiments.two_task_runs import (
    REFERENCE,
    REFERENCE_APPROX_OPTIMAL,
    TASKS,
    StudyConfig,
    TwoTaskStudy,
    config_dict,
    fixed_run,
    learned_run,
    load_splits,
)
from uncertainty_mtl.reporting.plots import ema, mean_band, new_figure, save_figure
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table, summarise
from uncertainty_mtl.weighting import UncertaintyWeighting
from uncertainty_mtl.weighting.uncertainty import optimal_log_variance

__all__ = [
    "plot_grid",
    "plot_log_variances",
    "plot_test_curves",
    "run_study",
    "select_weight",
    "split_summaries",
    "summarise_study",
    "table",
]


def run_study(
    config: StudyConfig,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    executor: Executor | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Trains every row for every seed (skipping finished runs) and writes the study's outputs.

    Writes into ``out``: ``config.yaml``, ``results.json``, ``table.md``,
    ``fig_log_variances.png``, ``fig_grid_search.png``, ``fig_test_curves.png`` and one directory
    per run under ``runs/<row>-<config hash>/seed<k>/``.

    Args:
        workers: runs trained side by side here (when no ``executor`` is given).
        executor: where the runs train (raises ``Submitted`` for a cluster).

    Returns:
        The content of ``results.json``.
    """
    start = time.perf_counter()
    splits = load_splits(config)  # bad data fails here, before anything is written
    with Runner(
        TwoTaskStudy(config, device), Path(out), executor or LocalExecutor(workers), progress
    ) as runner:
        return _run_study(config, splits, runner, start)


def _run_study(
    config: StudyConfig, splits: ImageSplits, runner: Runner[TwoTaskStudy], start: float
) -> dict[str, Any]:
    """:func:`run_study`'s work, in the directory ``runner`` holds."""
    out = runner.out  # claimed and locked (SPEC §10): absent, empty or a study of ours
    write_text(out / "config.yaml", yaml.safe_dump(config_dict(config), sort_keys=False))
    runs = [
        *(fixed_run(w, seed) for seed in range(config.seeds) for w in config.fixed_weights),
        *(learned_run(c, seed) for seed in range(config.seeds) for c in ("likelihood", "paper")),
    ]
    done = runner.results(runs)
    results = {(run.name, run.seed): done[run] for run in runs}
    summary = summarise_study(config, splits, results)
    timing = runner.timing()
    summary["wall_time_s"] = time.perf_counter() - start
    summary["trained_runs"] = timing["runs_trained"]
    summary["training_time_s"] = timing["training_time_s"]
    write_json(out / "results.json", summary)
    write_text(out / "table.md", table(summary))
    plot_log_variances(out / "fig_log_variances.png", config, runner)
    plot_grid(out / "fig_grid_search.png", summary)
    plot_test_curves(out / "fig_test_curves.png", config, summary, results)
    return summary


def split_summaries(results: Sequence[Mapping[str, Any]], split: str) -> dict[str, Any]:
    """Each final metric of ``split`` over the runs' results (mean, std, values)."""
    finals = [r["final"][split] for r in results]
    return {m: summarise([f[m] for f in finals]) for m in finals[0]}


def _metric_summaries(
    results: Mapping[tuple[str, int], dict[str, Any]], run_id: str, seeds: int, split: str
) -> dict[str, Any]:
    return split_summaries([results[run_id, s] for s in range(seeds)], split)


def select_weight(grid: Sequence[dict[str, Any]]) -> tuple[float | None, dict[str, float]]:
    """The grid's multi-task point (0 < w < 1) that :func:`~uncertainty_mtl.experiments.
    selection.choose` picks from the validation means over seeds, and every point's score."""
    points = {
        g["weights"]["classification"]: {m: v["mean"] for m, v in g["val"].items()}
        for g in grid
        if 0 < g["weights"]["classification"] < 1
    }
    if not points:
        return None, {}
    chosen, scores = choose(points, TASKS)
    return chosen, {f"{w:.2f}": score for w, score in scores.items()}


ROW_LABELS = {
    "classification_only": "Classification only",
    "reconstruction_only": "Reconstruction only",
    "unweighted": "Unweighted sum of losses",
    "approx_optimal": "Approx. optimal fixed weights",
    "learned_likelihood": "Learned weights, likelihood convention",
    "learned_paper": "Learned weights, paper convention (ablation)",
}


def summarise_study(
    config: StudyConfig,
    splits: ImageSplits,
    results: Mapping[tuple[str, int], dict[str, Any]],
) -> dict[str, Any]:
    seeds = config.seeds
    grid = [
        {
            "weights": run.patch["weights"],
            "run_id": run.name,
            "val": _metric_summaries(results, run.name, seeds, "val"),
            "test": _metric_summaries(results, run.name, seeds, "test"),
        }
        for run in map(fixed_run, config.fixed_weights)
    ]
    chosen, scores = select_weight(grid)
    row_runs = {
        "classification_only": fixed_run(1.0).name,
        "reconstruction_only": fixed_run(0.0).name,
        "unweighted": fixed_run(0.5).name,
        "learned_likelihood": learned_run("likelihood").name,
        "learned_paper": learned_run("paper").name,
    }
    if chosen is not None:
        row_runs["approx_optimal"] = fixed_run(chosen).name
    rows: dict[str, Any] = {}
    for row in ROW_LABELS:
        if row not in row_runs:
            continue
        run_id = row_runs[row]
        first = results[run_id, 0]
        entry: dict[str, Any] = {
            "label": ROW_LABELS[row],
            "run_id": run_id,
            "weights": first["weights"],
            "convention": first["convention"],
            "test": _metric_summaries(results, run_id, seeds, "test"),
            "val": _metric_summaries(results, run_id, seeds, "val"),
        }
        if first["log_variances"]:
            entry["final_log_variances"] = {
                t: summarise([results[run_id, s]["log_variances"][t] for s in range(seeds)])
                for t in TASKS
            }
            entry["final_effective_weights"] = {
                t: summarise([results[run_id, s]["effective_weights"][t] for s in range(seeds)])
                for t in TASKS
            }
        rows[row] = entry
    return {
        "study": "two-task",
        "dataset": config.dataset,
        "split_sizes": {s: len(getattr(splits, s)[1]) for s in ("train", "val", "test")},
        "image_size": splits.image_size,
        "seeds": list(range(seeds)),
        "config": config_dict(config),
        "rows": rows,
        "grid": grid,
        "approx_optimal": {
            "weights": None if chosen is None else fixed_run(chosen).patch["weights"],
            "criterion": "among the grid's multi-task points (0 < w < 1), with the validation "
            "means over seeds: " + CANDIDATE_CRITERION,
            "scores": scores,
        },
        "reference": {
            "source": "Key (2019), AML reproduction report, Table 1 (Fashion-MNIST, test split)",
            "rows": REFERENCE,
            "approx_optimal_weights": REFERENCE_APPROX_OPTIMAL,
        },
    }


def _weights_cell(row: dict[str, Any]) -> str:
    if row["weights"] is not None:
        return ", ".join(f"{row['weights'][t]:.2g}" for t in TASKS)
    ws = row.get("final_effective_weights")
    if not ws:
        return "learned"
    return "learned → " + ", ".join(f"{ws[t]['mean']:.3g}" for t in TASKS)


def table(summary: dict[str, Any]) -> str:
    seeds = len(summary["seeds"])
    sizes = summary["split_sizes"]
    headers = [
        "Loss",
        "Task weights (class., recon.)",
        "Accuracy [%] ↑",
        "Recon. L1 ↓",
        "Report: accuracy [%]",
        "Report: recon. L1",
    ]
    lines = []
    for key, row in summary["rows"].items():
        ref = REFERENCE.get(key, {})
        test = row["test"]
        lines.append(
            [
                row["label"],
                _weights_cell(row),
                format_mean_std(test.get("accuracy"), 2),
                format_mean_std(test.get("reconstruction_l1"), 4),
                f"{ref['accuracy']:.1f}" if "accuracy" in ref else "–",
                f"{ref['reconstruction_l1']:.4f}" if "reconstruction_l1" in ref else "–",
            ]
        )
    chosen = summary["approx_optimal"]["weights"]
    dataset = summary["dataset"]
    text = [
        f"# Two-task study on {dataset}: classification + reconstruction",
        "",
        f"Test split, mean ± sample std over {seeds} seed(s); {sizes['train']} train / "
        f"{sizes['val']} val / {sizes['test']} test images of "
        f"{summary['image_size']}×{summary['image_size']}. "
        "Reconstruction L1 is the mean absolute pixel error with pixels in [0, 1]. For learned "
        "rows the weights column gives the final effective weights (on the losses) averaged over "
        "seeds.",
        "",
        markdown_table(headers, lines),
        "The report's numbers are Key (2019), Table 1, on Fashion-MNIST"
        + (
            ", so on digits only the ordering of the rows can be compared, not the values. "
            if dataset != "fashion-mnist"
            else ". "
        )
        + "The report's learned row used the Gaussian term for its L1 loss (its eq. 32); it is "
        "listed beside our paper-convention row. Its approximately optimal weights were "
        f"{REFERENCE_APPROX_OPTIMAL['classification']}, "
        f"{REFERENCE_APPROX_OPTIMAL['reconstruction']}.",
        "",
        "Approx. optimal weights chosen on the validation split: "
        + (
            "none (the grid has no multi-task point)"
            if chosen is None
            else f"classification {chosen['classification']:.2f}, "
            f"reconstruction {chosen['reconstruction']:.2f}"
        )
        + f". Criterion: {summary['approx_optimal']['criterion']}",
        "",
    ]
    return "\n".join(text)


def plot_log_variances(path: Path, config: StudyConfig, runner: Runner[TwoTaskStudy]) -> None:
    """Report Figure 4: learned ``s`` per task over training, with the closed-form optimum of
    each task's term for the current (smoothed) training loss dashed."""
    fig, axes = new_figure(2)
    colours = {"classification": "tab:blue", "reconstruction": "tab:orange"}
    for ax, convention in zip(axes, ("likelihood", "paper"), strict=True):
        weighting = runner.config(learned_run(convention)).make_weighting()
        assert isinstance(weighting, UncertaintyWeighting)
        for seed in range(config.seeds):
            run_dir = runner.run_dir(learned_run(convention, seed))
            records = read_jsonl(run_dir / "metrics.jsonl")
            steps = [r["step"] for r in records]
            for task in TASKS:
                label = task if seed == 0 else None
                ax.plot(
                    steps,
                    [r[f"log_var/{task}"] for r in records],
                    color=colours[task],
                    lw=1.2,
                    label=label,
                )
                likelihood = weighting.term_likelihood(task)
                optimum = [
                    optimal_log_variance(likelihood, max(v, 1e-12))
                    for v in ema([r[f"loss/{task}"] for r in records])
                ]
                ax.plot(
                    steps,
                    optimum,
                    color=colours[task],
                    lw=0.8,
                    ls="--",
                    label=f"optimum for current {task} loss" if seed == 0 else None,
                )
        ax.set_title(f"learned s = log σ², {convention} convention")
        ax.set_xlabel("step")
        ax.set_ylabel("s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_grid(path: Path, summary: dict[str, Any]) -> None:
    """Report Figure 3: validation metrics over the fixed-weight grid, learned rows as lines."""
    fig, axes = new_figure(2)
    panels = (("accuracy", "validation accuracy [%] ↑"), ("reconstruction_l1", "validation L1 ↓"))
    chosen = summary["approx_optimal"]["weights"]
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        points = [g for g in summary["grid"] if metric in g["val"]]
        xs = [g["weights"]["classification"] for g in points]
        ax.errorbar(
            xs,
            [g["val"][metric]["mean"] for g in points],
            yerr=[g["val"][metric]["std"] for g in points],
            marker="o",
            capsize=3,
            label="fixed weights",
        )
        for key, style in (("learned_likelihood", "-"), ("learned_paper", ":")):
            row = summary["rows"].get(key)
            if row:
                ax.axhline(
                    row["val"][metric]["mean"], color="tab:red", ls=style, label=row["label"]
                )
        if chosen is not None:
            ax.axvline(
                chosen["classification"],
                color="grey",
                ls="--",
                lw=0.8,
                label="chosen (approx. optimal)",
            )
        ax.set_xlabel("classification weight w (reconstruction 1 − w)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_test_curves(
    path: Path,
    config: StudyConfig,
    summary: dict[str, Any],
    results: dict[tuple[str, int], dict[str, Any]],
) -> None:
    """Report Figure 2: test metrics of each row over training (mean ± std over seeds)."""
    fig, axes = new_figure(2)
    panels = (("test/accuracy", "test accuracy [%] ↑"), ("test/reconstruction_l1", "test L1 ↓"))
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        for row in summary["rows"].values():
            histories = [results[row["run_id"], s]["history"] for s in range(config.seeds)]
            if metric not in histories[0][-1]:
                continue
            steps = [h["step"] for h in histories[0]]
            # The step-0 point (untrained) would squash the interesting range.
            mean_band(
                ax,
                steps[1:],
                [[h[metric] for h in hist[1:]] for hist in histories],
                label=row["label"],
                lw=1.2,
            )
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
