"""The ``umtl`` command. Parses nothing at import; heavy modules load inside the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umtl",
        description="Multi-task learning using uncertainty to weigh losses (Kendall et al. 2018).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    reproduce = commands.add_parser("reproduce", help="rerun an experiment of the paper or report")
    studies = reproduce.add_subparsers(dest="study", required=True, metavar="STUDY")
    two_task = studies.add_parser(
        "fashion-mnist",
        help="the two-task study of the reproduction report (classification + reconstruction)",
        description="Trains every row of the reproduction report's Table 1 (classification only, "
        "reconstruction only, unweighted, approx. optimal fixed weights, learned weights in both "
        "conventions) for several seeds; writes results.json, table.md and three figures.",
    )
    two_task.add_argument(
        "--dataset",
        choices=["digits", "fashion-mnist"],
        default="digits",
        help="digits: scikit-learn's bundled digits (default, no download); "
        "fashion-mnist: IDX files in --data-dir",
    )
    two_task.add_argument("--data-dir", help="directory of the Fashion-MNIST IDX files")
    two_task.add_argument("--seeds", type=_positive_int, help="number of seeds (default: 3)")
    two_task.add_argument("--epochs", type=_positive_int, help="override the preset's epochs")
    two_task.add_argument(
        "--out", default=None, help="output directory (default: runs/two-task-<dataset>)"
    )
    two_task.add_argument(
        "--smoke",
        action="store_true",
        help="tiny splits, 2 epochs, 3 grid points: checks the pipeline in seconds",
    )
    two_task.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="parallel training processes (default: number of CPUs)",
    )
    two_task.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    two_task.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _reproduce_two_task(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from uncertainty_mtl.experiments import fashion_mnist as study

    config = study.PRESETS[args.dataset]
    overrides = {
        "data_dir": args.data_dir,
        "seeds": args.seeds,
        "epochs": args.epochs,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.smoke:
        config = study.smoke_config(config)
    out = args.out or f"runs/two-task-{args.dataset}"
    workers = args.workers or (os.cpu_count() or 1)
    summary = study.run_study(
        config, out, workers=workers, device=args.device, progress=not args.quiet
    )
    with open(os.path.join(out, "table.md"), encoding="utf-8") as f:
        print(f.read())
    print(f"wrote {out}/ in {summary['wall_time_s']:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "reproduce" and args.study == "fashion-mnist":
            return _reproduce_two_task(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"umtl: error: {err}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args}")
