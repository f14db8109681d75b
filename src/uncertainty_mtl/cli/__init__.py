"""The ``umtl`` command. Parses nothing at import; heavy modules load inside the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uncertainty_mtl
from uncertainty_mtl._install import install_command
from uncertainty_mtl.cli.common import _positive_int, _workers
from uncertainty_mtl.cli.paper import add_scene_studies
from uncertainty_mtl.cli.qm9 import _add_qm9_study
from uncertainty_mtl.cli.two_task import (
    _add_two_task_study,
    _two_task_config,  # noqa: F401 (the tests reach it here)
)

__all__ = ["main"]

# Spelled out, so that building the parser imports nothing heavy (see inference.clustering).
CLUSTER_METHODS = ["grid", "dbscan", "hdbscan", "optics"]
#: Optional modules -> the extra that installs them (``pip install 'uncertainty-mtl[EXTRA]'``).
EXTRAS = {
    "torchvision": "scene",
    "sklearn": "scene",
    "cityscapesscripts": "scene",
    "PIL": "scene",
    "matplotlib": "report",
    "tensorboard": "report",
    "tqdm": "report",
    "yaml": "scene",
    "submitit": "slurm",
    "torchjd": "methods",
}


def _split_sizes(text: str) -> dict[str, int]:
    sizes = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"expected name=count[,name=count...] such as train=10,val=4, got {text!r}"
            )
        sizes[name.strip()] = int(value)
    return sizes


def _image_size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 256x512, got {text!r}")
    return int(height), int(width)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umtl",
        description="Multi-task learning using uncertainty to weigh losses (Kendall et al. 2018).",
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    parser.add_argument(
        "--version", action="version", version=f"umtl {uncertainty_mtl.__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (_add_reproduce, _add_data, _add_train, _add_evaluate, _add_predict):
        add_command(commands)
    _add_debug_to_leaves(parser)
    return parser


#: ``umtl reproduce`` of the scene network: study -> its help line.


def _add_reproduce(commands: Any) -> None:
    reproduce = commands.add_parser("reproduce", help="rerun an experiment of the paper or report")
    studies = reproduce.add_subparsers(dest="study", required=True, metavar="STUDY")
    _add_two_task_study(studies)
    _add_qm9_study(studies)
    add_scene_studies(studies)


def _add_data(commands: Any) -> None:
    data = commands.add_parser("data", help="make and inspect scene data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    tiny = data_commands.add_parser(
        "tiny",
        help="write Tiny Cityscapes (downsampled copy of a Cityscapes-layout tree)",
        description="Images area-resampled, labels nearest, disparity divided by the factor, "
        "camera intrinsics divided by the factor. Interrupt and rerun at will: finished files "
        "are skipped.",
    )
    tiny.set_defaults(handler=_data_tiny)
    tiny.add_argument("src", help="Cityscapes root (leftImg8bit/, gtFine/, disparity/, camera/)")
    tiny.add_argument("dst", help="output root")
    tiny.add_argument(
        "--factor", type=_positive_int, default=8, help="default 8: 1024×2048 -> 128×256"
    )
    tiny.add_argument("--workers", type=_positive_int, default=None, help="default: number of CPUs")
    tiny.add_argument("--quiet", action="store_true", help="no progress bar")
    synth = data_commands.add_parser(
        "synth",
        help="generate the procedural synthetic city (no download)",
        description="Writes train/val/test splits of road scenes in the Cityscapes layout; the "
        "same seed gives the same bytes. Interrupt and rerun at will.",
    )
    synth.set_defaults(handler=_data_synth)
    synth.add_argument("dst", help="output root")
    synth.add_argument(
        "--split-sizes",
        type=_split_sizes,
        default="train=2975,val=500,test=500",
        help="frames per split (default: train=2975,val=500,test=500)",
    )
    synth.add_argument(
        "--size", type=_image_size, default="256x512", help="HEIGHTxWIDTH (default 256x512)"
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--workers", type=_positive_int, default=None, help="default: number of CPUs"
    )
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    show = data_commands.add_parser(
        "show", help="a PNG of samples: image, labels, instances, depth"
    )
    show.set_defaults(handler=_data_show)
    show.add_argument("root", help="Cityscapes-layout root")
    show.add_argument("--split", default="val")
    show.add_argument("--n", type=_positive_int, default=4, help="frames to show (default 4)")
    show.add_argument("--out", required=True, help="output PNG")


def _add_train(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train the scene network from a config",
        description="Writes config.yaml, metrics.jsonl, results.json, checkpoints/ and TensorBoard "
        "events into --out. Under torchrun, one process per rank (gloo on CPU, NCCL on GPU).",
    )
    train.set_defaults(handler=_train)
    train.add_argument(
        "--config",
        required=True,
        help="a YAML file or a shipped config name (e.g. smoke, cpu/three-task)",
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set optim.lr=0.01 (repeatable)",
    )
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument(
        "--device", default=None, help="torch device, e.g. cpu or cuda:0 (sets run.device)"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_evaluate(commands: Any) -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate a trained run on a split")
    evaluate.set_defaults(handler=_evaluate)
    evaluate.add_argument("run_dir", help="a run directory of umtl train")
    evaluate.add_argument("--split", default=None, help="default: the config's report split")
    evaluate.add_argument("--checkpoint", choices=["auto", "best", "last"], default="auto")
    evaluate.add_argument(
        "--data",
        default=None,
        metavar="ROOT",
        help="another Cityscapes-layout root (e.g. full-resolution Cityscapes "
        "for a model trained on Tiny Cityscapes)",
    )
    evaluate.add_argument(
        "--cluster",
        default=None,
        choices=CLUSTER_METHODS,
        help="instance clustering for AP (default: the run's eval.cluster_method)",
    )
    evaluate.add_argument(
        "--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: the run's)"
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_predict(commands: Any) -> None:
    predict = commands.add_parser(
        "predict",
        help="predict on images: panels and Cityscapes-encoded outputs",
        description="For each image: <stem>_panel.png and, in Cityscapes encodings, "
        "<stem>_labelIds.png, <stem>_instanceIds.png, <stem>_disparity.png, at the image's size.",
    )
    predict.set_defaults(handler=_predict)
    predict.add_argument("run_dir", help="a run directory of umtl train")
    predict.add_argument("images", nargs="+", help="image files or directories of images")
    predict.add_argument("--out", required=True, help="output directory")
    predict.add_argument("--checkpoint", choices=["auto", "best", "last"], default="auto")
    predict.add_argument("--cluster", default="grid", choices=CLUSTER_METHODS)
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--quiet", action="store_true", help="print errors only")


_DEBUG_HELP = "show the traceback of a user error too (for a bug report)"


def _add_debug_to_leaves(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (``umtl train ... --debug``)."""
    children = [
        child
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for child in dict.fromkeys(action.choices.values())
    ]
    if not children and parser.prog != "umtl":
        parser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    for child in children:
        _add_debug_to_leaves(child)


def _train(args: argparse.Namespace) -> int:
    from uncertainty_mtl.config import load_config
    from uncertainty_mtl.engine import train

    overrides = [*args.overrides, *([f"run.device={args.device}"] if args.device else [])]
    config = load_config(args.config, overrides)
    results = train(config, args.out, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_summary(results)
    return 0


def _print_summary(results: dict[str, object]) -> None:
    from uncertainty_mtl.reporting.tables import metrics_summary

    print(metrics_summary(results))


def _evaluate(args: argparse.Namespace) -> int:
    from uncertainty_mtl.engine import evaluate_run

    _print_summary(
        evaluate_run(
            args.run_dir,
            split=args.split,
            checkpoint=args.checkpoint,
            data_root=args.data,
            cluster_method=args.cluster,
            progress=not args.quiet,
            device=args.device,
        )
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from uncertainty_mtl.engine import predictor
    from uncertainty_mtl.inference.predict import predict_files

    model = predictor(
        args.run_dir, checkpoint=args.checkpoint, device=args.device, cluster_method=args.cluster
    )
    done, errors, notices = predict_files(model, args.images, args.out, source=str(args.run_dir))
    for message in errors:
        print(f"umtl: error: {message}", file=sys.stderr)
    for message in notices if not args.quiet else ():
        print(f"umtl: note: {message}", file=sys.stderr)
    if not args.quiet:
        print(f"{len(done)} image(s) predicted into {args.out}")
    return 1 if errors else 0


def _data_tiny(args: argparse.Namespace) -> int:
    from uncertainty_mtl.data.tiny import convert_tiny

    report = convert_tiny(
        args.src, args.dst, factor=args.factor, workers=_workers(args), progress=not args.quiet
    )
    print(
        f"{report.frames} frames in {list(report.splits)}: {report.written} files written, "
        f"{report.skipped} already there; {args.dst} validated"
    )
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from uncertainty_mtl.data.synthetic import SynthConfig, generate_city

    height, width = args.size
    config = SynthConfig(height=height, width=width, seed=args.seed, split_sizes=args.split_sizes)
    written = generate_city(args.dst, config, workers=_workers(args), progress=not args.quiet)
    print(f"{written} frames written to {args.dst} ({sum(config.split_sizes.values())} in all)")
    return 0


def _data_show(args: argparse.Namespace) -> int:
    from uncertainty_mtl.reporting.visualise import show_scenes

    print(f"wrote {show_scenes(args.root, args.split, n=args.n, out=args.out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``umtl``; returns the exit status: 0, 1 (some inputs failed, e.g. ``predict``), 2 (a
    user error: one line on stderr naming the file or key; ``--debug`` shows its traceback),
    130 (interrupted). Any other exception is a bug and keeps its traceback."""
    args = _build_parser().parse_args(argv)
    code = 1
    try:
        code = _dispatch(args)
        return code
    except KeyboardInterrupt:
        if args.debug:
            raise
        _close_progress_bars()  # a bar left open would take the message onto its line
        print(f"umtl: interrupted{_how_to_go_on(args)}", file=sys.stderr)
        code = 130
        return code
    finally:
        # Only a command that got as far as the engine can have joined a process group.
        if args.command in ("train", "evaluate") and "uncertainty_mtl.engine" in sys.modules:
            from uncertainty_mtl.engine import shutdown_distributed

            shutdown_distributed(wait=code == 0)


def _close_progress_bars() -> None:
    """Closes the progress bars an interruption left open, each ending its line as it does
    when finished, so what is printed next starts a line of its own."""
    if "tqdm" not in sys.modules:
        return
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _how_to_go_on(args: argparse.Namespace) -> str:
    """After Ctrl-C: what was kept and the command that goes on from it."""
    if args.command == "train":
        if (Path(args.out) / "checkpoints" / "last.pt").is_file():
            return "; the last checkpoint is kept: rerun the same command with --resume"
        return "; no checkpoint was saved yet: rerun the same command to start again"
    if args.command == "reproduce":
        return (
            "; finished runs are kept: rerun the same command to go on (interrupted runs "
            "resume from their last checkpoint)"
        )
    if args.command == "data":
        return "; finished files are kept: rerun the same command to go on"
    return ""


def _user_error(message: str) -> int:
    """Prints a user error as one line on stderr; returns the exit status 2."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    print(f"umtl: error: {'; '.join(lines)}", file=sys.stderr)
    return 2


def _dispatch(args: argparse.Namespace) -> int:
    from uncertainty_mtl._io import is_disk_error
    from uncertainty_mtl.errors import UmtlError
    from uncertainty_mtl.experiments.executors import Submitted

    try:
        code: int = args.handler(args)
        return code
    except Submitted as submitted:  # runs submitted to a cluster: the tables come later
        print(f"umtl: {submitted}")
        return 0
    except UmtlError as err:
        if args.debug:
            raise
        return _user_error(str(err))
    except ModuleNotFoundError as err:
        root = (err.name or "").partition(".")[0]
        if root not in EXTRAS or args.debug:
            raise
        return _user_error(
            f"`umtl {args.command}` needs the '{EXTRAS[root]}' extra (module {root} is "
            f"missing): {install_command(EXTRAS[root])}"
        )
    except OSError as err:
        # A full, read-only or forbidden place to write is the machine's, not a bug of ours.
        if not is_disk_error(err) or args.debug:
            raise
        return _user_error(f"{err.filename or 'a file'}: cannot write ({err.strerror})")
