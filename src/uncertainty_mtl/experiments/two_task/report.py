"""The two-task study's report: ``table.md`` beside the reproduction report's numbers, and the
report's Figures 2-4 as ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uncertainty_mtl._io import read_jsonl
from uncertainty_mtl.experiments.runner import Runner
from uncertainty_mtl.experiments.two_task.config import (
    REFERENCE,
    REFERENCE_APPROX_OPTIMAL,
    TASKS,
    StudyConfig,
    learned_run,
)
from uncertainty_mtl.reporting.plots import ema, mean_band, new_figure, save_figure
from uncertainty_mtl.reporting.stats import format_interval
from uncertainty_mtl.reporting.tables import format_mean_std, markdown_table
from uncertainty_mtl.weighting import UncertaintyWeighting
from uncertainty_mtl.weighting.uncertainty import optimal_log_variance

__all__ = [
    "ROW_LABELS",
    "plot_grid",
    "plot_learning_curves",
    "plot_log_variances",
    "plot_test_curves",
    "table",
]

ROW_LABELS = {
    "classification_only": "Classification only",
    "reconstruction_only": "Reconstruction only",
    "unweighted": "Unweighted sum of losses",
    "approx_optimal": "Approx. optimal fixed weights",
    "learned_likelihood": "Learned weights, likelihood convention",
    "learned_paper": "Learned weights, paper convention (ablation)",
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
    if "claims" in summary:
        text += claims_section(summary["claims"], seeds)
    return "\n".join(text)


def _difference_cell(task: dict[str, Any], digits: int) -> str:
    interval = format_interval(task["ci95"], digits)
    return f"{task['mean']:+.{digits}f} {interval} ({task['verdict']})"


def claims_section(claims: dict[str, Any], seeds: int) -> list[str]:
    """The report's claims as tables: paired differences (row − reference, test split) with
    their 95% interval over the seeds, and when the learned ``s`` settle."""
    headers = ["Row", "Against", "Δ accuracy [points]", "Δ recon. L1", "Verdict"]
    lines = []
    for comparison in (*claims["learned_beats_tuned"], *claims["mtl_beats_single_task"]):
        tasks = comparison["tasks"]
        lines.append(
            [
                ROW_LABELS[comparison["row"]],
                ROW_LABELS.get(comparison["against"], comparison["against"]),
                _difference_cell(tasks["classification"], 2) if "classification" in tasks else "–",
                _difference_cell(tasks["reconstruction"], 4) if "reconstruction" in tasks else "–",
                comparison["verdict"],
            ]
        )
    convergence = claims["uncertainties_converge_in_first_epoch"]
    settle = [
        [
            ROW_LABELS[row],
            *(", ".join(f"{e:.1f}" for e in tasks[t]["epochs"]) for t in TASKS),
        ]
        for row, tasks in convergence["rows"].items()
    ]
    return [
        "## The report's claims, paired over seeds",
        "",
        f"Differences are row − reference on the test split, mean over {seeds} seed(s) with "
        "its 95% Student-t interval; a row is better or worse on a task only where the interval "
        "excludes 0, otherwise not separated.",
        "",
        markdown_table(headers, lines),
        f"Epoch from which the learned s stays settled ({convergence['criterion']}), per seed:",
        "",
        markdown_table(["Row", "classification", "reconstruction"], settle),
    ]


def plot_log_variances(path: Path, config: StudyConfig, runner: Runner[Any]) -> None:
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
        # the learned rows on the sweep's seeds, so that lines and points compare like with like
        n = points[0].get("seeds", len(summary["seeds"])) if points else len(summary["seeds"])
        on = "" if n == len(summary["seeds"]) else " (seed 0)" if n == 1 else f" (seeds 0–{n - 1})"
        ax.errorbar(
            xs,
            [g["val"][metric]["mean"] for g in points],
            yerr=[g["val"][metric]["std"] for g in points],
            marker="o",
            capsize=3,
            label="fixed weights" + on,
        )
        for key, style in (("learned_likelihood", "-"), ("learned_paper", ":")):
            row = summary["rows"].get(key)
            if row:
                values = row["val"][metric]["values"][:n]
                ax.axhline(
                    sum(values) / len(values), color="tab:red", ls=style, label=row["label"] + on
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


def plot_learning_curves(path: Path, summary: dict[str, Any]) -> None:
    """The curves that chose the batch size and the epochs: the unweighted row's validation
    metrics after every epoch, one line per batch size, the chosen points marked."""
    fig, axes = new_figure(2)
    panels = (("val/accuracy", "validation accuracy [%] ↑"), ("val/reconstruction_l1", "val L1 ↓"))
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        for batch, curve in summary["curves"].items():
            points = [p for p in curve if p["epoch"] > 0]
            ax.plot(
                [p["epoch"] for p in points], [p[metric] for p in points], label=f"batch {batch}"
            )
        marks = (("chosen", "k*", "chosen"), ("chosen_short", "kD", "short preset's choice"))
        for key, style, name in marks:
            if key in summary:
                choice = summary[key]
                ax.plot(
                    [choice["epochs"]],
                    [choice["val"][metric.removeprefix("val/")]],
                    style,
                    ms=10 if key == "chosen" else 6,
                    label=f"{name}: batch {choice['batch_size']}, {choice['epochs']} epochs",
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
