"""A two-task or QM9 run that dies on cue, for the kill -9 tests of the studies' runs (run as a
script): ``python study_run.py '<json>'`` with ``study`` (``two-task`` or ``qm9``), ``settings``
(the run's dataclass fields), ``out``, ``cwd`` and ``kill_at_step`` (SIGKILL itself after that
step)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def main(spec: dict) -> None:
    os.chdir(spec["cwd"])  # QM9's descriptor cache is relative to it
    from uncertainty_mtl.config import weighting_config

    settings = {**spec["settings"], "weighting": weighting_config(spec["settings"]["weighting"])}
    if spec["study"] == "qm9":
        from uncertainty_mtl.experiments.qm9 import QM9Run
        from uncertainty_mtl.experiments.qm9.training import train_run

        tuples = {k: tuple(v) for k, v in settings.items() if isinstance(v, list)}
        run = QM9Run(**{**settings, **tuples})
    else:
        from uncertainty_mtl.experiments.two_task import TwoTaskRun
        from uncertainty_mtl.experiments.two_task.training import train_run  # type: ignore[assignment]

        run = TwoTaskRun(**settings)  # type: ignore[assignment]

    def on_step(step: int) -> None:
        if step == spec["kill_at_step"]:
            os.kill(os.getpid(), signal.SIGKILL)

    train_run(run, Path(spec["out"]), on_step=on_step)  # type: ignore[arg-type]


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
