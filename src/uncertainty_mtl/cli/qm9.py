"""``umtl reproduce qm9``: eleven regression targets in eleven units, the many-task benchmark."""

from __future__ import annotations

import argparse
import os
from typing import Any

from uncertainty_mtl.cli.common import _add_common, _executor, _positive_int, _workers


def _add_qm9_study(studies: Any) -> None:
    qm9 = studies.add_parser(
        "qm9",
        help="QM9: 11 regression targets in 11 units (the many-task benchmark; "
        "needs the 'qm9' extra)",
        description="Trains the 11 single-task references and every multi-task row on QM9 "
        "(the CSV files of the PyPI package qm9pack), with the targets standardised and in "
        "their raw units; writes qm9.json, qm9.md and qm9.png. The default model is an MLP over "
        "Coulomb-matrix eigenvalues: its numbers are not comparable with the papers' GNNs.",
    )
    qm9.set_defaults(handler=_reproduce_qm9)
    qm9.add_argument("--data-dir", help="directory of qm9_part{1,2,3}.csv (default: qm9pack's)")
    qm9.add_argument("--seeds", type=_positive_int, help="number of seeds (default: 5)")
    qm9.add_argument("--epochs", type=_positive_int, help="override the preset's epochs")
    qm9.add_argument("--units", nargs="+", choices=["standardised", "raw"], help="default: both")
    qm9.add_argument("--methods", nargs="+", metavar="KIND", help="the multi-task rows' kinds")
    qm9.add_argument("--preset", choices=["cpu", "smoke"], default="cpu", help="smoke: seconds")
    qm9.add_argument(
        "--model",
        choices=["mlp", "schnet"],
        help="mlp (default): the CPU's descriptor MLP; schnet: PyG's SchNet, for a GPU",
    )
    qm9.add_argument("--out", default="runs/qm9", help="output directory (default: runs/qm9)")
    qm9.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    _add_common(qm9, workers_help="parallel training processes (default: number of CPUs)")


def _reproduce_qm9(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from uncertainty_mtl.experiments import qm9

    given = {
        "data_dir": args.data_dir,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "units": tuple(args.units) if args.units else None,
        "methods": tuple(args.methods) if args.methods else None,
        "model": args.model,
    }
    config = qm9.PRESETS["cpu"]
    if args.preset == "smoke":
        config = qm9.smoke_config(config)
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    summary = qm9.run_study(
        config,
        args.out,
        executor=_executor(args, args.out, _workers(args)),
        device=args.device,
        progress=not args.quiet,
    )
    with open(os.path.join(args.out, "qm9.md"), encoding="utf-8") as f:
        print(f.read())
    print(f"wrote {args.out}/ in {summary['wall_time_s']:.0f} s")
    return 0
