"""Table 1 of the paper: single tasks, fixed weightings and learned uncertainty weightings.

Nine rows: the three single-task models (one-hot fixed weights), the unweighted sum (1/3 each),
approximately optimal fixed weights, the three 2-task learned weightings and the 3-task learned
weighting. The approximately optimal weights are chosen among :data:`GRID` at each of
:data:`GRID_SCALES` on the selection split (by
:data:`~uncertainty_mtl.experiments.benchmark.selection.CANDIDATE_CRITERION`), from selection runs
of seed 0: by successive halving (the default: every candidate trained for a ninth of a selection
run, the best third for a third, the best three in full) or, with ``search="grid"``, every candidate
trained in full.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from uncertainty_mtl.errors import ConfigError
from uncertainty_mtl.experiments.benchmark.selection import (
    CANDIDATE_CRITERION,
    Rung,
    successive_halving,
)
from uncertainty_mtl.experiments.paper.scene import (
    SceneStudy,
    cell,
    fixed_run,
    learned_run,
    mean_metrics,
    trivial_baselines,
)
from uncertainty_mtl.experiments.runner import Run, Runner
from uncertainty_mtl.reporting.tables import markdown_table, summarise
from uncertainty_mtl.tasks.registry import SCENE_TASKS as TASKS

__all__ = ["GRID", "GRID_SCALES", "PAPER", "ROWS", "approx_optimal", "reproduce_table1"]

#: row key -> (label, task weights or None for learned, tasks)
ROWS: dict[str, tuple[str, tuple[float, float, float] | None, tuple[str, ...]]] = {
    "semantic-only": ("Segmentation only", (1.0, 0.0, 0.0), ("semantic",)),
    "instance-only": ("Instance only", (0.0, 1.0, 0.0), ("instance",)),
    "depth-only": ("Depth only", (0.0, 0.0, 1.0), ("depth",)),
    "unweighted": ("Unweighted sum of losses", (0.333, 0.333, 0.333), TASKS),
    "approx-optimal": ("Approx. optimal weights", None, TASKS),  # chosen on the grid
    "uw-semantic-instance": ("2 task uncertainty weighting", None, ("semantic", "instance")),
    "uw-semantic-depth": ("2 task uncertainty weighting", None, ("semantic", "depth")),
    "uw-instance-depth": ("2 task uncertainty weighting", None, ("instance", "depth")),
    "uw-three": ("3 task uncertainty weighting", None, TASKS),
}
#: Candidate (semantic, instance, depth) weights for the approximately optimal row: the paper's
#: choice, the corners and edges of a coarse simplex, and its centre.
GRID: tuple[tuple[float, float, float], ...] = (
    (0.89, 0.01, 0.1),
    (0.8, 0.1, 0.1),
    (0.1, 0.8, 0.1),
    (0.1, 0.1, 0.8),
    (0.45, 0.45, 0.1),
    (0.45, 0.1, 0.45),
    (0.1, 0.45, 0.45),
    (0.333, 0.333, 0.333),
)
#: Overall scales the candidates are tried at. Under SGD the sum of the weights acts as a step
#: size, and the learned weights grow to a sum of about 7 while a fixed row sums to 1: the search
#: must be free to pick a larger step too, or "learned beats tuned" may only be "a larger step
#: beats a smaller one".
GRID_SCALES: tuple[float, ...] = (1.0, 3.0, 7.0)
#: The paper's Table 1 (Tiny Cityscapes val): IoU %, instance error px, inverse depth error px.
PAPER: dict[str, tuple[float | None, float | None, float | None]] = {
    "semantic-only": (59.4, None, None),
    "instance-only": (None, 4.61, None),
    "depth-only": (None, None, 0.640),
    "unweighted": (50.1, 3.79, 0.592),
    "approx-optimal": (62.8, 3.61, 0.549),
    "uw-semantic-instance": (61.0, 3.42, None),
    "uw-semantic-depth": (62.7, None, 0.533),
    "uw-instance-depth": (None, 3.54, 0.539),
    "uw-three": (63.4, 3.50, 0.522),
}


def _weights(triple: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip(TASKS, triple, strict=True))


def row_run(key: str, seed: int, chosen: tuple[float, float, float] | None = None) -> Run:
    """The run of a row; ``chosen`` are the approximately optimal row's weights."""
    _, fixed, tasks = ROWS[key]
    if key == "approx-optimal":
        if chosen is None:
            raise ValueError("the approx-optimal row needs the weights the grid chose")
        return fixed_run(key, _weights(chosen), seed=seed)
    if fixed is not None:
        return fixed_run(key, _weights(fixed), seed=seed)
    return learned_run(key, tasks, seed=seed)


def grid_candidates() -> list[tuple[float, float, float]]:
    """Every candidate of :data:`GRID` at every scale of :data:`GRID_SCALES`."""
    return [
        (round(a * scale, 6), round(b * scale, 6), round(c * scale, 6))
        for scale in GRID_SCALES
        for a, b, c in GRID
    ]


def grid_run(triple: tuple[float, float, float], steps: int | None = None) -> Run:
    """The selection run of one candidate; ``steps``: shorter than a full selection run (a
    first rung of the search), else the preset's ``selection_steps``."""
    name = "grid-" + "-".join(f"{w:g}" for w in triple)
    patch = {} if steps is None else {"optim.steps": steps}
    run = fixed_run(name, _weights(triple), selection=True)
    return run.with_patch(f"{name}-steps{steps}", **patch) if steps is not None else run


def grid_runs() -> list[Run]:
    """The full-length selection run of every candidate (the full grid's runs)."""
    return [grid_run(triple) for triple in grid_candidates()]


Triple = tuple[float, float, float]


def approx_optimal(
    runner: Runner[SceneStudy], beside: Sequence[Run] = (), beside_last: Sequence[Run] = ()
) -> tuple[Triple, dict[str, Any], dict[Run, dict[str, Any]]]:
    """The approximately optimal fixed weights, by the study's search over the candidates
    (their runs read when finished, else trained).

    Args:
        runner: the study's runner.
        beside: runs trained beside the search's first rung (a study's rows), so that its
            workers are never idle waiting for a rung.
        beside_last: runs trained beside its last rung, when it reaches it (a rung of few
            runs leaves workers idle otherwise).

    Returns:
        The chosen weights, the search's record (``search``, ``rungs``, ``candidates``: every
        candidate's score at the last rung it reached, ``steps``: the search's training steps),
        and the results of every run it trained or read, ``beside`` included.
    """
    study = runner.study
    full = study.spec.selection_steps
    done: dict[Run, dict[str, Any]] = {}
    halving = study.halving
    schedule = halving.steps(full)
    waiting = list(beside)

    def train(candidates: Sequence[Triple], steps: int) -> dict[Triple, Any]:
        runs = [grid_run(c, None if steps == full else steps) for c in candidates]
        # longer runs first: a worker that finishes early takes the short ones
        last = list(beside_last) if steps == schedule[-1] else []
        done.update(runner.results([*waiting, *last, *runs]))
        waiting.clear()
        return {c: done[r]["metrics"] for c, r in zip(candidates, runs, strict=True)}

    chosen, rungs = successive_halving(grid_candidates(), train, TASKS, steps=full, halving=halving)
    reached: dict[Triple, Rung[Triple]] = {}
    for rung in rungs:
        reached.update({c: rung for c in rung.scores})
    search = {
        "search": study.search,
        "eta": halving.eta,
        # each run once: rungs of equal steps (a short preset's) share their runs
        "steps": sum(steps for _, steps in {(c, r.steps) for r in rungs for c in r.scores}),
        "full_grid_steps": full * len(reached),
        "rungs": [
            {
                "steps": r.steps,
                "candidates": len(r.scores),
                "scores": [{"weights": _weights(c), "score": v} for c, v in r.scores.items()],
                "kept": [_weights(c) for c in r.kept],
            }
            for r in rungs
        ],
        "candidates": [
            {"weights": _weights(c), "score": rung.scores[c], "steps": rung.steps}
            for c, rung in reached.items()
        ],
    }
    return chosen, search, done


def _held_back(runner: Runner[SceneStudy], seeds: int) -> tuple[int, int]:
    """How many rows to train beside the search's last rung and beside the approximately
    optimal row's ``seeds`` runs: enough to fill the local workers (a row is as long as two
    selection runs), none on a cluster."""
    slots = runner.executor.slots
    if slots < 2:
        return 0, 0
    last = runner.study.halving.sizes(len(grid_candidates()))[-1]
    return (-last) % slots, (-seeds) % slots


def reproduce_table1(
    runner: Runner[SceneStudy], *, seeds: int = 1, only: str | None = None
) -> dict[str, Any]:
    """Trains what is missing and writes ``table1.md`` and ``table1.json`` into the output
    directory (with ``only``: trains that row's runs and writes nothing else)."""
    if only is not None and only not in ROWS:
        raise ConfigError(f"--only: unknown row {only!r}; rows are {list(ROWS)}")
    wanted = [only] if only else list(ROWS)
    first = [row_run(k, s) for k in wanted if k != "approx-optimal" for s in range(seeds)]
    chosen = None
    search: dict[str, Any] = {}
    if "approx-optimal" in wanted:
        # rows held back to train beside the search's last rung and beside the rows that
        # wait for its choice, so that no batch leaves a worker idle
        last, final = _held_back(runner, seeds)
        held = [first.pop() for _ in range(min(len(first), last + final))]
        chosen, search, done = approx_optimal(runner, beside=first, beside_last=held[:last])
        rest = [r for r in held if r not in done]
        done.update(
            runner.results([*rest, *(row_run("approx-optimal", s, chosen) for s in range(seeds))])
        )
    else:
        done = runner.results(first)
    if only:
        return {"row": only, "runs": [str(runner.run_dir(r)) for r in done]}
    rows: dict[str, Any] = {}
    for key in ROWS:
        runs = [row_run(key, s, chosen) for s in range(seeds)]
        results = [done[r] for r in runs]
        label, fixed, tasks = ROWS[key]
        entry: dict[str, Any] = {
            "label": label,
            "tasks": list(tasks),
            "weights": None if key.startswith("uw-") else _weights(fixed or chosen),  # type: ignore[arg-type]
            "metrics": mean_metrics(results),
            "paper": dict(
                zip(
                    ("miou", "instance_mean_error_px", "depth_mean_error_px"),
                    PAPER[key],
                    strict=True,
                )
            ),
            "runs": [str(runner.run_dir(r)) for r in runs],
        }
        if key.startswith("uw-"):
            entry["final_effective_weights"] = {
                t: summarise(
                    [r["training"]["weighting_at_kept_checkpoint"][f"weight/{t}"] for r in results]
                )
                for t in tasks
            }
            entry["final_log_variances"] = {
                t: summarise(
                    [r["training"]["weighting_at_kept_checkpoint"][f"log_var/{t}"] for r in results]
                )
                for t in tasks
            }
        rows[key] = entry
    summary: dict[str, Any] = {
        "experiment": "table1",
        "preset": runner.study.preset,
        "data": runner.config(Run("x")).data.root,
        "report_split": runner.study.spec.report_split,
        "seeds": list(range(seeds)),
        "rows": rows,
        "approx_optimal": {
            "chosen": _weights(chosen) if chosen else None,
            "criterion": CANDIDATE_CRITERION,
            "scales": list(GRID_SCALES),
            "selection_split": runner.study.spec.choose_split,
            **search,
        },
        "paper": "Kendall et al. 2018, Table 1 (Tiny Cityscapes, val)",
    }
    study = runner.study
    if study.spec.report_split == "test":
        summary["trivial_baselines"] = trivial_baselines(study)
    summary.update(runner.timing())
    runner.write_outputs("table1", summary, table_markdown(summary))
    return summary


def _weights_cell(row: dict[str, Any]) -> str:
    if row["weights"] is not None:
        return ", ".join(f"{row['weights'][t]:g}" for t in TASKS)
    learned = row.get("final_effective_weights", {})
    parts = [f"{learned[t]['mean']:.3g}" if t in learned else "–" for t in TASKS]
    return "learned → " + " : ".join(parts)


def _paper_cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _search_words(search: Mapping[str, Any]) -> str:
    """How the candidates were trained, in words (a summary of an older revision has no
    rungs: every candidate trained in full)."""
    rungs = search.get("rungs")
    if not rungs or len(rungs) == 1:
        return "each candidate trained in full"
    path = " → ".join(f"{r['candidates']} at {r['steps']} steps" for r in rungs)
    return (
        f"by successive halving ({path}: {search['steps']:,} training steps against "
        f"{search['full_grid_steps']:,} for every candidate in full)"
    )


def table_markdown(summary: dict[str, Any]) -> str:
    seeds = len(summary["seeds"])
    headers = [
        "Loss",
        "Weights (sem., inst., depth)",
        "IoU [%] ↑",
        "Instance err. [px] ↓",
        "Inv. depth err. [px] ↓",
        "Instance AP [%] ↑",
        "Paper: IoU",
        "Paper: inst.",
        "Paper: depth",
    ]
    lines = []
    for row in summary["rows"].values():
        m, paper = row["metrics"], row["paper"]
        lines.append(
            [
                row["label"],
                _weights_cell(row),
                cell(m, "miou", 1),
                cell(m, "instance_mean_error_px", 2),
                cell(m, "depth_mean_error_px", 3),
                cell(m, "instance_ap", 1),
                _paper_cell(paper["miou"], 1),
                _paper_cell(paper["instance_mean_error_px"], 2),
                _paper_cell(paper["depth_mean_error_px"], 3),
            ]
        )
    trivial = summary.get("trivial_baselines")
    if trivial:
        lines.append(
            [
                "Trivial predictor (training-split statistics)",
                "–",
                f"{trivial['miou']:.1f}",
                f"{trivial['instance_mean_error_px']:.2f}",
                f"{trivial['depth_mean_error_px']:.3f}",
                "–",
                "–",
                "–",
                "–",
            ]
        )
    chosen = summary["approx_optimal"]["chosen"]
    text = [
        f"# Table 1 ({summary['preset']} preset)",
        "",
        f"Data: `{summary['data']}`, reported split: {summary['report_split']}; mean ± sample "
        f"std over {seeds} seed(s). Paper: Tiny Cityscapes val, ResNet-101. Learned rows give the "
        "final effective weights on the losses (mean over seeds).",
        "",
        markdown_table(headers, lines),
    ]
    if chosen:
        search = summary["approx_optimal"]
        text += [
            f"Approx. optimal weights chosen on the {search['selection_split']} split from "
            f"{len(search['candidates'])} candidates (8 weightings summing to "
            + " / ".join(f"{s:g}" for s in search.get("scales", [1]))
            + "): "
            + ", ".join(f"{t} {w:g}" for t, w in chosen.items())
            + f" (the paper's: 0.89, 0.01, 0.1), {_search_words(search)}. Criterion: "
            + f"{search['criterion']}.",
            "",
        ]
    if trivial:
        text += [
            "Trivial predictor: the most frequent class at each pixel position, zero offsets and "
            "the mean disparity of each image row, all from the training split.",
            "",
        ]
    return "\n".join(text)
