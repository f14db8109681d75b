"""``umtl reproduce table1|figure2|appendix-b|units|ablations|methods``: the paper's studies on
the scene network (and the methods benchmark, whose other data sets go to the two-task study's
command)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uncertainty_mtl.cli.common import _add_common, _executor, _positive_int
from uncertainty_mtl.cli.two_task import _DATA_DIR_HELP, _reproduce_two_task_methods

__all__ = ["SCENE_STUDIES", "add_scene_studies"]

SCENE_STUDIES = {
    "table1": "Table 1: single tasks, fixed weightings, 2- and 3-task learned weightings",
    "figure2": "Figure 2: fixed-weight sweeps for (semantic, depth) and (instance, depth)",
    "appendix-b": "Appendix B: the learned log-variances from initial s in {-2, 0, 2, 5}",
    "units": "fixed vs learned weights when the depth labels change units (×100)",
    "ablations": "likelihood vs paper convention, positive regulariser, tempered softmax",
    "methods": "every loss weighting and gradient aggregator on Table 1's protocol",
}


def add_scene_studies(studies: Any) -> None:
    """One ``reproduce`` subcommand per study of :data:`SCENE_STUDIES`."""
    for name, text in SCENE_STUDIES.items():
        _add_scene_study(studies, name, text)


def _add_scene_study(studies: Any, name: str, text: str) -> None:
    description = (
        f"{text}. Runs are shared between the reproduce commands that use the same --out; "
        "finished runs are skipped, interrupted ones resumed."
    )
    sub = studies.add_parser(name, help=text, description=description)
    sub.set_defaults(handler=_reproduce_scene)
    sub.add_argument(
        "--preset",
        choices=["cpu", "cpu-lite", "paper", "smoke"],
        default="cpu",
        help="cpu: small encoder on the synthetic city (default); cpu-lite: the same at 32×64, "
        "about a third of the cost; paper: the paper's Tiny Cityscapes setting, needs --data "
        "and a GPU; smoke: seconds",
    )
    sub.add_argument(
        "--data",
        default=None,
        metavar="ROOT",
        help="a Cityscapes-layout root (default: the synthetic city, generated on first use)",
    )
    if name == "methods":
        sub.add_argument(
            "--dataset",
            choices=["city", "digits", "fashion-mnist"],
            default="city",
            help="city: the 3-task scene protocol of Table 1 (default); digits, "
            "fashion-mnist: the two-task study of the reproduction report (its preset; "
            "--preset smoke shrinks it), output by default in runs/two-task-<dataset>",
        )
        sub.add_argument("--data-dir", help=_DATA_DIR_HELP)
        sub.add_argument(
            "--protocol",
            choices=["fixed-lr", "tuned"],
            default="fixed-lr",
            help="fixed-lr: every row at the preset's learning rate (default; it ranks step "
            "sizes as much as methods); tuned: every row, the single-task references included, "
            "first chooses its rate on the selection split by the same search (use --seeds 5; "
            "on the city --preset cpu-lite fits a 2-core machine)",
        )
        sub.add_argument(
            "--optimiser",
            choices=["sgd", "adam"],
            default=None,
            help="the tuned protocol's arm on the city: sgd (default, the preset's) or adam "
            "(grid centred on 1e-3); the two-task study trains with adam only",
        )
    if name != "appendix-b":
        sub.add_argument("--seeds", type=_positive_int, default=1)
    if name in ("table1", "methods"):
        sub.add_argument(
            "--search",
            choices=["halving", "grid"],
            default="halving",
            help="how the approx. optimal weights are chosen among the 24 candidates: halving "
            "(default: all at 1/9 of a selection run, the best third at 1/3, the best three in "
            "full; about a third of the steps) or grid (every candidate in full)",
        )
    if name == "table1":
        sub.add_argument(
            "--only",
            default=None,
            metavar="ROW",
            help="train one row only (e.g. for a job array); rerun without it to write the table",
        )
    sub.add_argument(
        "--out", default=None, help="output directory (default: runs/reproduce-<preset>)"
    )
    sub.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of every run's config",
    )
    _add_common(
        sub, workers_help="runs trained side by side (default: CPUs, or 1 for --preset paper)"
    )


def _reproduce_scene(args: argparse.Namespace) -> int:
    from uncertainty_mtl.errors import ConfigError
    from uncertainty_mtl.experiments.benchmark import methods
    from uncertainty_mtl.experiments.paper import ablations, appendix_b, figure2, table1, units
    from uncertainty_mtl.experiments.paper.scene import SceneStudy
    from uncertainty_mtl.experiments.runner import Runner

    if args.study == "methods" and args.dataset != "city":
        return _reproduce_two_task_methods(args)
    seeds = getattr(args, "seeds", 1)
    tuned = getattr(args, "protocol", "fixed-lr") == "tuned"
    optimiser = getattr(args, "optimiser", None) or "sgd"
    if getattr(args, "optimiser", None) and not tuned:
        raise ConfigError(
            "--optimiser picks an arm of --protocol tuned; fixed-lr uses the preset's"
        )
    if tuned:
        methods.check_tuned_preset(args.preset)
    # study -> (its reproduction, given the runner; the markdown file it writes)
    studies: dict[str, tuple[Callable[[Runner[SceneStudy]], dict[str, Any]], str]] = {
        "table1": (lambda r: table1.reproduce_table1(r, seeds=seeds, only=args.only), "table1"),
        "figure2": (lambda r: figure2.reproduce_figure2(r, seeds=seeds), "figure2"),
        "appendix-b": (appendix_b.reproduce_appendix_b, "appendix_b"),
        "units": (lambda r: units.reproduce_units(r, seeds=seeds), "units"),
        "ablations": (lambda r: ablations.reproduce_ablations(r, seeds=seeds), "ablations"),
        "methods": (lambda r: methods.reproduce_methods(r, seeds=seeds), "methods"),
    }
    if tuned:
        studies["methods"] = (
            lambda r: methods.reproduce_methods_tuned(r, seeds=seeds, optimiser=optimiser),
            f"methods-tuned-{optimiser}",
        )
    reproduce, name = studies[args.study]
    workers = args.workers or (1 if args.preset == "paper" else os.cpu_count() or 1)
    out = args.out or f"runs/reproduce-{args.preset}"
    study = SceneStudy(
        args.preset,
        data=args.data,
        overrides=tuple(args.overrides),
        search=getattr(args, "search", "halving"),
    )
    study.check_data()  # before the study directory is made
    with Runner(
        study, Path(out), _executor(args, out, workers), progress=not args.quiet
    ) as reproduction:
        summary = reproduce(reproduction)
    if getattr(args, "only", None):
        print(f"row {args.only}: {len(summary['runs'])} run(s) under {out}/runs")
        return 0
    with open(os.path.join(out, f"{name}.md"), encoding="utf-8") as f:
        print(f.read())
    timing = reproduction.timing()
    print(
        f"wrote {out}/ in {timing['wall_time_s']:.0f} s, training {timing['runs_trained']} of "
        f"the {timing['runs_used']} runs it uses (the others were finished on disk)"
    )
    return 0
