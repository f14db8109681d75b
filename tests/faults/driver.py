"""A training run that dies on cue, for tests/test_faults.py (run as a script).

``python driver.py '<json>'`` with ``overrides`` (``--set`` strings on the smoke config),
``out``, ``resume``, and at most one fault: ``kill_at_step`` (SIGKILL itself after that step),
``kill_in_save`` (SIGKILL itself halfway through writing its n-th checkpoint file), or
``pause_at_step`` + ``release`` (after that step, wait until the file ``release`` exists, writing
``paused`` beside it first). ``step_sleep`` seconds after every step widen the window for a
kill from outside on a fast machine.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(spec: dict) -> None:
    import uncertainty_mtl.engine.checkpoint as checkpoint
    from uncertainty_mtl.config import load_config
    from uncertainty_mtl.engine import train

    if spec.get("kill_in_save"):
        real = checkpoint.atomic_write
        calls = {"n": 0}

        def dying_write(path, write):
            calls["n"] += 1
            if calls["n"] != spec["kill_in_save"]:
                return real(path, write)

            def half(f):
                buffer = io.BytesIO()
                write(buffer)
                data = buffer.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                _die()

            return real(path, half)

        checkpoint.atomic_write = dying_write

    def on_step(step: int) -> None:
        time.sleep(spec.get("step_sleep", 0.0))
        if step == spec.get("kill_at_step"):
            _die()
        if step == spec.get("pause_at_step"):
            release = Path(spec["release"])
            (release.parent / "paused").write_text(str(os.getpid()))
            while not release.exists():
                time.sleep(0.05)

    config = load_config("smoke", spec["overrides"])
    train(config, spec["out"], resume=spec.get("resume", False), progress=False, on_step=on_step)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
