"""``umtl reproduce two-task``: the reproduction report's study on digits or Fashion-MNIST, and
the methods benchmark on those data sets."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from uncertainty_mtl.cli.common import _add_common, _executor, _positive_int, _workers

_DATA_DIR_HELP = (
    "directory of the Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist, "
    "where `apt-get install dataset-fashion-mnist` puts them)"
)


_CURVES_HELP = (
    "instead of the study, the learning curves that choose its batch size and epochs on val "
    "(default --out: runs/two-task-<dataset>-curves)"
)


_GRID_SEEDS_HELP = "seeds of the sweep's other points (default: all; the chosen one trains all)"


def _add_two_task_study(studies: Any) -> None:
    two_task = studies.add_parser(
        "two-task",
        aliases=["fashion-mnist"],  # its old name (it says the new one)
        help="the two-task study of the reproduction report (classification + reconstruction; "
        "digits by default, or Fashion-MNIST)",
        description="Trains every row of the reproduction report's Table 1 (classification only, "
        "reconstruction only, unweighted, approx. optimal fixed weights, learned weights in both "
        "conventions) for several seeds; writes two_task.json, two_task.md and three figures.",
    )
    two_task.set_defaults(handler=_reproduce_two_task)
    two_task.add_argument(
        "--dataset",
        choices=["digits", "fashion-mnist"],
        default="digits",
        help="digits: scikit-learn's bundled digits (default, no download); "
        "fashion-mnist: IDX files in --data-dir",
    )
    two_task.add_argument("--data-dir", help=_DATA_DIR_HELP)
    two_task.add_argument("--seeds", type=_positive_int, help="number of seeds (default: 3)")
    two_task.add_argument("--epochs", type=_positive_int, help="override the preset's epochs")
    two_task.add_argument("--grid-seeds", type=_positive_int, help=_GRID_SEEDS_HELP)
    two_task.add_argument(
        "--out", default=None, help="output directory (default: runs/two-task-<dataset>)"
    )
    two_task.add_argument(
        "--preset",
        choices=["cpu", "short", "smoke"],
        default="cpu",
        help="cpu: the data set's own preset (default); short: Fashion-MNIST's cheaper one (10 "
        "epochs, the sweep's other points on one seed); smoke: tiny splits, 2 epochs, 3 grid "
        "points, checks the pipeline in seconds (the spelling of every study)",
    )
    two_task.add_argument("--smoke", action="store_true", help="the old spelling of --preset smoke")
    two_task.add_argument("--curves", action="store_true", help=_CURVES_HELP)
    two_task.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    _add_common(two_task, workers_help="parallel training processes (default: number of CPUs)")


def _two_task_config(args: argparse.Namespace) -> Any:
    """The two-task study's config for the flags given (``--smoke``, the old spelling of
    ``--preset smoke``, and the study's old name say so)."""
    from uncertainty_mtl.experiments import two_task as runs

    if getattr(args, "smoke", False):
        print("umtl: --smoke is now spelled --preset smoke, as in every study", file=sys.stderr)
    if getattr(args, "study", None) == "fashion-mnist":
        print(
            "umtl: `reproduce fashion-mnist` is now `reproduce two-task` (the data set is "
            f"--dataset's, here {args.dataset})",
            file=sys.stderr,
        )
    preset = "smoke" if getattr(args, "smoke", False) else getattr(args, "preset", "cpu")
    given = {k: getattr(args, k, None) for k in ("data_dir", "seeds", "epochs", "grid_seeds")}
    return runs.preset_config(args.dataset, preset, **given)


def _reproduce_two_task(args: argparse.Namespace) -> int:
    from uncertainty_mtl.experiments import two_task as study

    suffix = "-curves" if args.curves else "-short" if args.preset == "short" else ""
    out = args.out or f"runs/two-task-{args.dataset}{suffix}"
    config = _two_task_config(args)
    where = {"executor": _executor(args, out, _workers(args)), "device": args.device}
    if args.curves:  # --preset smoke: as short as its study
        horizon = config.epochs if config.max_train is not None else study.HORIZON
        summary = study.learning_curves(
            config, out, horizon=horizon, **where, progress=not args.quiet
        )
    else:
        summary = study.run_study(config, out, **where, progress=not args.quiet)
    if args.curves:
        print(f"chosen on val: {summary['chosen']}  ({summary['rule']})")
    else:
        with open(os.path.join(out, "two_task.md"), encoding="utf-8") as f:
            print(f.read())
    print(f"wrote {out}/ in {summary['wall_time_s']:.0f} s")
    return 0


def _reproduce_two_task_methods(args: argparse.Namespace) -> int:
    from uncertainty_mtl.errors import ConfigError
    from uncertainty_mtl.experiments.benchmark import methods_two_task

    for flag, value in (("--data", args.data), ("--set", args.overrides)):
        if value:
            raise ConfigError(f"{flag} is for the scene study; --dataset {args.dataset} has none")
    if args.optimiser == "sgd":
        raise ConfigError(f"--optimiser sgd: --dataset {args.dataset}'s study trains with adam")
    if args.preset == "paper":
        raise ConfigError(
            f"--preset paper is the scene study's; --dataset {args.dataset} takes cpu (its own "
            "preset) or smoke"
        )
    out = args.out or f"runs/two-task-{args.dataset}"
    summary = methods_two_task.reproduce_two_task_methods(
        _two_task_config(args),
        out,
        executor=_executor(args, out, _workers(args)),
        progress=not args.quiet,
        protocol=args.protocol,
    )
    name = "methods.md" if args.protocol == "fixed-lr" else "methods-tuned.md"
    with open(os.path.join(out, name), encoding="utf-8") as f:
        print(f.read())
    print(
        f"wrote {out}/ in {summary['wall_time_s']:.0f} s, training {summary['runs_trained']} of "
        f"the {summary['runs_used']} runs the table uses (the others were finished on disk)"
    )
    return 0
