"""Fault injection (SPEC §10): kills at random moments, corrupt and odd files, bad configs,
numerical blow-ups, two runs at once, a full or read-only disk.

What each case checks: a user error is one line on stderr naming the file or key (exit 2), found
before any work; nothing of the user's or already written is lost or half-overwritten; a killed
run resumes to the bits of an uninterrupted one; no worker outlives its parent.

The kills draw their moment from ``random.Random(UMTL_FAULT_SEED)`` (default 0): set the variable
to try other moments; a failure prints the moment it used.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uncertainty_mtl.cli import main
from uncertainty_mtl.config import load_config
from uncertainty_mtl.data.cityscapes import CityscapesScenes
from uncertainty_mtl.data.layout import write_png
from uncertainty_mtl.data.synthetic import is_complete
from uncertainty_mtl.engine import train
from uncertainty_mtl.engine.rundir import MARKER as RUN_MARKER
from uncertainty_mtl.errors import ConfigError, DataError, RunDirectoryError

DRIVER = Path(__file__).parent / "faults" / "driver.py"
SEED = int(os.environ.get("UMTL_FAULT_SEED", "0"))
STEPS = 8
#: The smoke config made for faults: checkpoints every 2 steps, validation every 4, no AP (slow
#: and not what is tested), one thread (the same arithmetic here and in a subprocess).
FAULT_SET = [
    f"optim.steps={STEPS}",
    "run.checkpoint_every=2",
    "eval.every=4",
    "eval.cluster_method=null",
    "run.threads=1",
]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def overrides(root, *extra):
    return [f"data.root={root}", "data.synthetic=false", *FAULT_SET, *extra]


def train_args(root, out, *extra):
    args = ["train", "--config", "smoke", "--out", str(out), "--quiet"]
    for item in overrides(root, *extra):
        args += ["--set", item]
    return args


def one_line_error(capsys, *needles):
    """The stderr of a user error: exactly one line, ``umtl: error: ...``, holding ``needles``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("umtl: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in err
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but TensorBoard's (its writer thread flushes when it likes)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "tensorboard" not in p.parts
    }


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    """A child process whose stderr goes to ``log`` (a pipe would stay open as long as any
    grandchild that inherited it, and a test could wait on it for ever)."""
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=err)


def driver(spec: dict) -> subprocess.Popen:
    return spawn([str(DRIVER), json.dumps(spec)], Path(spec["out"]).with_suffix(".log"))


def stderr_of(spec: dict) -> str:
    return Path(spec["out"]).with_suffix(".log").read_text()


def killed_run(spec: dict) -> None:
    proc = driver(spec)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"{spec}: exit {proc.returncode}\n{stderr_of(spec)}"


def assert_same_run(a: Path, b: Path) -> None:
    """Tensor by tensor: the last checkpoint (model, weighting, optimiser, scheduler, RNG), every
    record of metrics.jsonl, and the final metrics."""
    sa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    sb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert sa["step"] == sb["step"] == STEPS

    def same(x, y, where):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), where
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                same(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list | tuple):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                same(u, v, f"{where}[{i}]")
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y), where
        else:
            assert x == y, where

    for key in ("model", "weighting", "optimizer", "scheduler", "best"):
        same(sa[key], sb[key], key)
    # The generator training draws from (NumPy's and Python's global ones are never seeded
    # nor used by a run; they are saved only for code that a user adds).
    same(sa["rng"]["torch"], sb["rng"]["torch"], "rng.torch")
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    ra = json.loads((a / "results.json").read_text())
    rb = json.loads((b / "results.json").read_text())
    assert ra["metrics"] == rb["metrics"]
    assert not list(b.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def reference(city, tmp_path_factory):
    """Uninterrupted runs: plain, and with dropout (data workers give the same bits)."""
    threads = torch.get_num_threads()
    runs = {}
    for name, extra in {"plain": [], "dropout": ["model.aspp_dropout=0.5"]}.items():
        out = tmp_path_factory.mktemp("reference") / name
        train(load_config("smoke", overrides(city, *extra)), out, progress=False)
        runs[name] = out
    torch.set_num_threads(threads)
    return runs


# -- kill -9, then --resume -----------------------------------------------------------------------

KILLS = {
    # case: (reference, extra overrides, fault)
    "at-a-random-step": ("plain", [], "step"),
    "with-dropout": ("dropout", ["model.aspp_dropout=0.5"], "step"),
    "with-data-workers": ("dropout", ["model.aspp_dropout=0.5", "data.workers=2"], "step"),
    "while-a-checkpoint-is-written": ("plain", [], "save"),
    "from-outside-at-a-random-time": ("plain", [], "outside"),
    "after-the-last-checkpoint": ("plain", [], "last"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(KILLS))
def test_kill_9_then_resume_gives_the_uninterrupted_run(case, city, reference, tmp_path):
    base, extra, fault = KILLS[case]
    rng = random.Random(f"{SEED}-{case}")
    out = tmp_path / "run"
    spec = {"overrides": overrides(city, *extra), "out": str(out)}
    if fault == "step":
        spec["kill_at_step"] = rng.randint(1, STEPS - 1)
    elif fault == "save":
        spec["kill_in_save"] = rng.randint(2, 5)  # last.pt and best.pt writes both count
    elif fault == "last":
        spec["kill_at_step"] = STEPS  # after the last checkpoint, before results.json
    if fault == "outside":
        lines = rng.randint(2, STEPS - 2)
        proc = driver({**spec, "step_sleep": 0.2})  # the run must not end before the kill
        log = out / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if log.is_file() and len(log.read_text().splitlines()) >= lines:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before the kill: {stderr_of(spec)}"
        proc.kill()
        proc.wait()
        spec["after_log_lines"] = lines
    else:
        killed_run(spec)
    assert not (out / "results.json").exists(), spec
    if fault == "save":
        assert list(out.rglob(".*.tmp")), "the kill should leave a partial temporary file"
    if fault == "step":  # a kill while appending leaves a partial last line
        with open(out / "metrics.jsonl", "a") as f:
            f.write('{"step": 99, "loss/sema')
    if not (out / "checkpoints" / "last.pt").exists():
        # Killed before the first checkpoint: --resume says so; a plain rerun starts over.
        assert main([*train_args(city, out, *extra), "--resume"]) == 2
        train(load_config("smoke", overrides(city, *extra)), out, progress=False)
    else:
        # The dead process's lock is no obstacle; the run goes on from its last checkpoint.
        train(load_config("smoke", overrides(city, *extra)), out, resume=True, progress=False)
    try:
        assert_same_run(reference[base], out)
    except AssertionError as err:  # name the moment, to replay it
        raise AssertionError(f"{spec} (UMTL_FAULT_SEED={SEED}): {err}") from err


# -- the run directory ----------------------------------------------------------------------------


def test_an_out_directory_of_the_users_is_refused_untouched(city, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my: config\n")
    (out / "metrics.jsonl").write_text('{"my": 1}\n')
    before = snapshot(out)
    assert main(train_args(city, out)) == 2
    one_line_error(capsys, str(out), "not a umtl run")
    assert snapshot(out) == before


def test_an_out_that_is_a_file_is_refused(city, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(train_args(city, tmp_path / "file")) == 2
    one_line_error(capsys, "not a directory")
    assert (tmp_path / "file").read_text() == "x"


def test_a_second_process_on_the_same_directory_is_refused(city, tmp_path, capsys):
    out = tmp_path / "run"
    release = tmp_path / "release"
    spec = {"overrides": overrides(city), "out": str(out), "pause_at_step": 3}
    holder = driver({**spec, "release": str(release)})
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "paused").exists():
            assert holder.poll() is None and time.monotonic() < deadline, stderr_of(spec)
            time.sleep(0.02)
        before = snapshot(out)
        assert main(train_args(city, out)) == 2
        one_line_error(capsys, f"process {holder.pid}", "trains into it")
        assert main([*train_args(city, out), "--resume"]) == 2
        one_line_error(capsys, f"process {holder.pid}")
        assert snapshot(out) == before
    finally:
        release.write_text("go")
        holder.wait(timeout=300)
    assert holder.returncode == 0, stderr_of(spec)
    assert json.loads((out / "results.json").read_text())["split"] == "test"


@pytest.fixture(scope="module")
def finished(reference):
    """A finished fault run (8 steps; the plain reference), copied by the cases that damage it."""
    return reference["plain"]


def test_resume_of_a_directory_that_is_no_run_is_refused(city, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*train_args(city, out), "--resume"]) == 2
    one_line_error(capsys, str(out), "not a run directory")
    assert not out.exists()


def test_a_finished_run_is_not_trained_again(city, finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = snapshot(out)
    assert main(train_args(city, out)) == 2
    one_line_error(capsys, "already holds a run")
    assert snapshot(out) == before


def test_resume_with_another_config_is_refused(city, finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "results.json").unlink()
    before = snapshot(out)
    assert main([*train_args(city, out, "optim.lr=1"), "--resume"]) == 2
    one_line_error(capsys, "optim.lr")
    assert snapshot(out) == before


def _truncated_best(out: Path) -> tuple[list[str], Path]:
    best = out / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    return ["evaluate", str(out), "--checkpoint", "best", "--quiet"], best


def _garbage_last(out: Path) -> tuple[list[str], Path]:
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(b"not a checkpoint")
    (out / "results.json").unlink()
    return ["resume"], last


def _broken_config(out: Path) -> tuple[list[str], Path]:
    (out / "config.yaml").write_text("optim: [unclosed\n")
    return ["evaluate", str(out), "--quiet"], out / "config.yaml"


DAMAGED_RUNS = {
    "truncated best.pt, evaluate": _truncated_best,
    "garbage last.pt, resume": _garbage_last,
    "broken config.yaml, evaluate": _broken_config,
}


@pytest.mark.parametrize("case", list(DAMAGED_RUNS))
def test_a_damaged_run_directory_is_named(case, city, finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    args, damaged = DAMAGED_RUNS[case](out)
    if args == ["resume"]:
        args = [*train_args(city, out), "--resume"]
    assert main(args) == 2
    one_line_error(capsys, str(damaged))


class _MakesADirectory:
    """Unpickled, creates the directory ``path``: what a shared checkpoint could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def _poisoned(checkpoint: Path, marker: Path) -> None:
    """``checkpoint`` rewritten with one value that runs code when unpickled."""
    state = torch.load(checkpoint, weights_only=True)
    state["step_note"] = _MakesADirectory(marker)
    torch.save(state, checkpoint)


LOADERS = {
    "evaluate": lambda out, city: ["evaluate", str(out), "--quiet"],
    "predict": lambda out, city: [
        "predict",
        str(out),
        str(_frame(city, "test", "leftImg8bit.png")),
        "--out",
        str(out.parent / "pred"),
    ],
    "resume": lambda out, city: [*train_args(city, out), "--resume"],
}


@pytest.mark.parametrize("command", list(LOADERS))
def test_a_checkpoint_that_would_run_code_is_refused_unopened(
    command, city, finished, tmp_path, capsys
):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    marker = tmp_path / "created-by-the-checkpoint"
    name = "last.pt" if command == "resume" else "best.pt"
    checkpoint = out / "checkpoints" / name
    _poisoned(checkpoint, marker)
    # The file does what the test says when loaded the unsafe way (so this test can fail) ...
    torch.load(checkpoint, weights_only=False)
    assert marker.is_dir()
    marker.rmdir()
    if command == "resume":
        (out / "results.json").unlink()
    # ... and every command of ours refuses it, in one line naming it, before it runs anything.
    assert main(LOADERS[command](out, city)) == 2
    one_line_error(capsys, str(checkpoint), "refused", "mkdir")
    assert not marker.exists()
    assert not (tmp_path / "pred").exists()


def test_a_checkpoint_from_before_plain_rng_states_still_resumes(city, finished, tmp_path):
    """Checkpoints written before this version stored NumPy's state as an array; they resume."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    last = out / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    np.random.seed(7)
    state["rng"]["numpy"] = np.random.get_state()  # the legacy tuple with its uint32 array
    torch.save(state, last)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(last)  # not plain: legacy
    (out / "results.json").unlink()
    assert main([*train_args(city, out), "--resume"]) == 0
    assert (
        json.loads((out / "results.json").read_text())["metrics"]
        == json.loads((finished / "results.json").read_text())["metrics"]
    )


def _two_images(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    for path in (a, b):
        path.parent.mkdir()
        write_png(path, np.zeros((32, 64, 3), np.uint8))
    return a, b


def test_predict_refuses_two_inputs_with_one_stem(finished, tmp_path, capsys):
    a, b = _two_images(tmp_path)
    out = tmp_path / "pred"
    assert main(["predict", str(finished), str(a), str(b), "--out", str(out)]) == 2
    one_line_error(capsys, "x_*.png", "different --out")
    assert not out.exists()


def test_predict_refuses_a_foreign_out_and_reuses_its_own(finished, tmp_path, capsys):
    a, _ = _two_images(tmp_path)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "x_panel.png").write_bytes(b"my photo")
    assert main(["predict", str(finished), str(a), "--out", str(foreign)]) == 2
    one_line_error(capsys, "not a umtl predict output")
    assert (foreign / "x_panel.png").read_bytes() == b"my photo"
    out = tmp_path / "pred"
    assert main(["predict", str(finished), str(a), "--out", str(out)]) == 0
    assert main(["predict", str(finished), str(a), "--out", str(out)]) == 0  # ours: again


FOREIGN = {
    "data synth": (
        ["data", "synth", "{out}", "--size", "32x64", "--split-sizes", "train=1"],
        "not a synthetic city",
    ),
    "data tiny": (
        ["data", "tiny", "{city}", "{out}", "--factor", "2", "--quiet"],
        "not a Tiny Cityscapes conversion",
    ),
    "reproduce": (
        ["reproduce", "table1", "--preset", "smoke", "--out", "{out}"],
        "not a umtl study output",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_data_and_study_outputs_refuse_a_foreign_directory(case, city, tmp_path, capsys):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    template, needle = FOREIGN[case]
    assert main([a.format(out=foreign, city=city) for a in template]) == 2
    one_line_error(capsys, needle)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


# -- corrupt and odd files ------------------------------------------------------------------------


def _frame(root: Path, split: str, suffix: str) -> Path:
    return sorted(root.glob(f"*/{split}/*/*{suffix}"))[0]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))


def _eight_bit(path: Path) -> None:
    Image.fromarray((np.array(Image.open(path)) // 256).astype(np.uint8)).save(path)


def _no_instances(path: Path) -> None:
    for file in path.parents[1].glob("*/*_instanceIds.png"):
        ids = np.array(Image.open(file)).astype(np.int64)
        write_png(file, np.where(ids >= 1000, ids // 1000, ids).astype(np.uint16))


def _unlabelled(path: Path) -> None:
    for file in path.parents[1].glob("*/*_labelIds.png"):
        write_png(file, np.zeros(np.array(Image.open(file)).shape, np.uint8))


CORRUPT = {
    # case: (split, file suffix, damage, what the message must hold)
    "truncated image (train)": ("train", "_leftImg8bit.png", _truncate, "not a readable PNG"),
    "corrupt label PNG (val)": ("val", "_labelIds.png", _garbage, "not a readable PNG"),
    "truncated disparity (test)": ("test", "_disparity.png", _truncate, "not a readable PNG"),
    "8-bit disparity PNG": ("train", "_disparity.png", _eight_bit, "16-bit disparity"),
    "select split without instances": ("val", "_instanceIds.png", _no_instances, "instance"),
    "report split without labels": ("test", "_labelIds.png", _unlabelled, "eval.report_split"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_a_damaged_data_set_is_named_before_the_first_step(case, city, tmp_path, capsys):
    split, suffix, damage, needle = CORRUPT[case]
    root = tmp_path / "city"
    shutil.copytree(city, root)
    path = _frame(root, split, suffix)
    damage(path)
    out = tmp_path / "run"
    assert main(train_args(root, out)) == 2
    line = one_line_error(capsys, needle)
    if "readable" in needle or "16-bit" in needle:
        assert str(path) in line
    assert not out.exists()


def test_tiny_names_a_damaged_source_file(city, tmp_path, capsys):
    root = tmp_path / "city"
    shutil.copytree(city, root)
    image = _frame(root, "val", "_leftImg8bit.png")
    _truncate(image)
    assert main(["data", "tiny", str(root), str(tmp_path / "t1"), "--factor", "2", "--quiet"]) == 2
    one_line_error(capsys, str(image))
    shutil.copy(_frame(city, "val", "_leftImg8bit.png"), image)
    camera = _frame(root, "train", "_camera.json")
    camera.write_text("{ not json")
    assert main(["data", "tiny", str(root), str(tmp_path / "t2"), "--factor", "2", "--quiet"]) == 2
    one_line_error(capsys, str(camera), "camera JSON")
    with pytest.raises(DataError, match="incomplete"):  # the interrupted conversion is not used
        CityscapesScenes(tmp_path / "t2", "train")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _assert_workers_die(workers: list[int]) -> None:
    deadline = time.monotonic() + 10
    try:
        while any(_alive(w) for w in workers):
            assert time.monotonic() < deadline, "a worker outlived its parent"
            time.sleep(0.05)
    finally:  # never leave one behind, even when the test fails
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)


def _kill_while_writing(args: list[str], watch: Path, files: int) -> list[int]:
    """Starts ``umtl ARGS``, SIGKILLs it once ``watch`` holds ``files`` PNGs; returns the pids
    of its workers at that moment."""
    log = watch.with_suffix(".log")
    proc = spawn(["-m", "uncertainty_mtl", *args], log)
    deadline = time.monotonic() + 120
    while len(list(watch.rglob("*.png"))) < files:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.01)
    workers = _children(proc.pid)
    proc.kill()
    proc.wait()
    return workers


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_killing_data_synth_stops_its_workers_and_the_city_is_finished_before_use(tmp_path):
    root = tmp_path / "city"
    size = ["--size", "32x64", "--split-sizes", "train=120,val=8,test=8"]
    workers = _kill_while_writing(
        ["data", "synth", str(root), *size, "--workers", "2", "--quiet"], root, 20
    )
    assert workers, "the generator should have had worker processes"
    _assert_workers_die(workers)
    count = len(list(root.rglob("*.png")))
    time.sleep(0.5)
    assert len(list(root.rglob("*.png"))) == count  # nobody writes any more
    assert not is_complete(root)
    with pytest.raises(DataError, match="incomplete"):
        CityscapesScenes(root, "train")
    # A training config that names this city finishes it before using it.
    from uncertainty_mtl.data.prepare import ensure_scene_data

    config = load_config(
        "smoke",
        [
            f"data.root={root}",
            "data.synthetic=true",
            "data.synth_size=[32, 64]",
            "data.synth_split_sizes={train: 120, val: 8, test: 8}",
        ],
    )
    ensure_scene_data(config.data, progress=False)
    assert is_complete(root) and not list(root.rglob(".*.tmp"))
    assert len(CityscapesScenes(root, "train", tasks=["semantic"], check_values=False)) == 120


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_killing_data_tiny_stops_its_workers(city, tmp_path):
    source = tmp_path / "source"  # 300 frames: the city's 16 training frames over and over
    frames = sorted(city.glob("leftImg8bit/train/*/*_leftImg8bit.png"))
    for i in range(300):
        stem = frames[i % len(frames)].name.removesuffix("_leftImg8bit.png")
        for top in ("leftImg8bit", "gtFine", "disparity", "camera"):
            for file in city.glob(f"{top}/train/*/{stem}_*"):
                name = file.name.replace(stem, f"copy_{i:06d}_000019")
                (source / top / "train" / "copy").mkdir(parents=True, exist_ok=True)
                shutil.copy(file, source / top / "train" / "copy" / name)
    dst = tmp_path / "tiny"
    workers = _kill_while_writing(
        ["data", "tiny", str(source), str(dst), "--factor", "2", "--workers", "2", "--quiet"],
        dst,
        20,
    )
    assert workers
    _assert_workers_die(workers)
    with pytest.raises(DataError, match="incomplete"):
        CityscapesScenes(dst, "train")
    assert main(["data", "tiny", str(source), str(dst), "--factor", "2", "--quiet"]) == 0
    assert not list(dst.rglob(".*.tmp"))
    assert len(CityscapesScenes(dst, "train")) == 300


# -- bad configs ----------------------------------------------------------------------------------

BAD_SETS = {
    "eval.report_split typo": (["eval.report_split=tset"], "eval.report_split 'tset'"),
    "eval.select_split typo": (["eval.select_split=vall"], "eval.select_split 'vall'"),
    "eval.max_frames=0": (["eval.max_frames=0"], "eval.max_frames"),
    "eval.max_frames=-1": (["eval.max_frames=-1"], "eval.max_frames"),
    "optim.poly_power<0": (["optim.poly_power=-1"], "optim.poly_power"),
    "optim.lr=inf": (["optim.lr=.inf"], "optim.lr"),
    "nesterov without momentum": (["optim.momentum=0"], "optim.nesterov"),
    "run.device=banana": (["run.device=banana"], "run.device"),
    "unknown key": (["optim.lrr=0.1"], "unknown key(s) ['lrr']"),
    "wrong type": (["optim.steps=many"], "optim.steps"),
    "batch larger than the split": (["optim.batch_size=64"], "fewer than one batch"),
    "data.workers<0": (["data.workers=-1"], "data.workers"),
    "unknown synthetic split": (["data.synth_split_sizes={trian: 3}"], "data.synth_split_sizes"),
}


@pytest.mark.parametrize("case", list(BAD_SETS))
def test_a_bad_config_value_is_one_line_before_anything_is_written(case, city, tmp_path, capsys):
    extra, needle = BAD_SETS[case]
    out = tmp_path / "run"
    assert main(train_args(city, out, *extra)) == 2
    one_line_error(capsys, needle)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_config_error(city, tmp_path, capsys):
    assert main(train_args(city, tmp_path / "run", "run.device=cuda")) == 2
    one_line_error(capsys, "run.device", "0 CUDA device")
    assert not (tmp_path / "run").exists()


BAD_FILES = {
    "missing file": None,
    "broken YAML": "optim: [unclosed\n",
    "a list, not a mapping": "- a\n- b\n",
    "binary file": b"\xff\xfe\x00bin",
    "a directory": "dir",
    "base chain loop": "base: config.yaml\n",
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_config_file_is_one_line(case, tmp_path, capsys):
    path = tmp_path / "config.yaml"
    content = BAD_FILES[case]
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "config.yaml")
    assert not (tmp_path / "o").exists()


def test_a_set_without_a_value_is_one_line(tmp_path, capsys):
    assert main(["train", "--config", "smoke", "--set", "novalue", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "--set 'novalue'")


# -- numerical blow-ups ---------------------------------------------------------------------------


def _finite_checkpoint(path: Path) -> bool:
    state = torch.load(path, weights_only=True)
    tensors = [*state["model"].values(), *state["weighting"].values()]
    return all(
        torch.isfinite(t).all()
        for t in tensors
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["optim.lr=1e6", "run.checkpoint_every=1"],  # a checkpoint after every step
        ["optim.lr=1e6", "optim.steps=2", "eval.every=2"],  # blows up on the last step
        ["weighting.init_log_var=-200"],  # total inf (exp(200)·L) with finite task losses
    ],
    ids=["huge-lr-every-step", "huge-lr-two-steps", "inf-total-finite-losses"],
)
def test_a_blow_up_stops_before_anything_non_finite_is_saved(extra, city, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(city, out, *extra)) == 2
    line = one_line_error(capsys, "finite" if "lr" in extra[0] else "non-finite total")
    assert "step" in line and not (out / "results.json").exists()
    for name in ("last.pt", "best.pt"):
        path = out / "checkpoints" / name
        assert not path.exists() or _finite_checkpoint(path), name
    if "last good checkpoint: none yet" not in line:
        assert "last.pt (step" in line and _finite_checkpoint(out / "checkpoints" / "last.pt")


def test_parameters_made_non_finite_by_a_step_with_a_finite_loss_stop_it(
    city, tmp_path, capsys, monkeypatch
):
    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def poisoning_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # the update of step 2 leaves a NaN weight; its loss was finite
            next(iter(self.param_groups[0]["params"])).data.view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", poisoning_step)
    out = tmp_path / "run"
    assert main(train_args(city, out, "run.checkpoint_every=1")) == 2
    line = one_line_error(capsys, "step 2", "parameters are not finite", "last.pt (step 1)")
    assert "nothing saved" in line
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 1 and _finite_checkpoint(out / "checkpoints" / "last.pt")


# -- a full or read-only disk ---------------------------------------------------------------------


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return result.returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def make(name: str, options: str) -> Path:
        path = tmp_path / name
        if not _mount_tmpfs(path, options):
            pytest.skip("cannot mount a tmpfs here (needs root and mount(8))")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(city, tmpfs, capsys):
    disk = tmpfs("full", "size=1m")  # room for one checkpoint (~0.55 MB), not for two
    out = disk / "run"
    assert main(train_args(city, out, "run.checkpoint_every=1")) == 2
    one_line_error(capsys, "No space left on device")
    assert not list(out.rglob(".*.tmp"))
    last = out / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=True)["step"] == 1 and _finite_checkpoint(last)


def test_a_read_only_disk_is_one_line(city, tmpfs, capsys):
    disk = tmpfs("ro", "size=1m,ro")
    assert main(train_args(city, disk / "run")) == 2
    one_line_error(capsys, "Read-only file system")


# -- errors and tracebacks ------------------------------------------------------------------------


def test_debug_shows_the_traceback_of_a_user_error(city, tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.poly_power"):
        main(["--debug", *train_args(city, tmp_path / "a", "optim.poly_power=-1")])
    with pytest.raises(ConfigError):
        main([*train_args(city, tmp_path / "b", "optim.poly_power=-1"), "--debug"])


def test_a_bug_of_ours_is_never_an_error_line(city, tmp_path, monkeypatch, capsys):
    """A ``ValueError`` of ours keeps its traceback; a ``ConfigError`` (also a ``ValueError``)
    raised from the same place is one line: the CLI tells them by class."""
    import uncertainty_mtl.engine as engine

    def raising(error):
        def train(*args, **kwargs):
            raise error

        return train

    monkeypatch.setattr(engine, "train", raising(ValueError("a bug of ours")))
    with pytest.raises(ValueError, match="a bug of ours"):
        main(train_args(city, tmp_path / "c"))
    assert "umtl: error" not in capsys.readouterr().err
    monkeypatch.setattr(engine, "train", raising(ConfigError("optim.lr: a user's error")))
    assert main(train_args(city, tmp_path / "c")) == 2
    one_line_error(capsys, "optim.lr: a user's error")


def test_a_killed_cache_build_is_cleaned_up_by_the_next_one(city, tmp_path):
    cache = tmp_path / "cache"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    stale = cache / f".train.{dead.pid}.x1y2"
    stale.mkdir(parents=True)
    (stale / "image.npy").write_bytes(b"half a build")
    alive = cache / f".train.{os.getpid()}.z3"  # a build in progress elsewhere is left alone
    alive.mkdir()
    frames = CityscapesScenes(city, "train", tasks=["semantic"], cache_dir=cache)
    assert not stale.exists() and alive.exists()
    assert len(frames) == 16 and (cache / "train" / "index.json").is_file()


_HOLDER = """
import os, sys, time
from uncertainty_mtl._io import DirectoryLock

DirectoryLock(sys.argv[1]).acquire()
child = os.fork()  # like a data-loader worker: inherits the lock file, must not hold the lock
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


def test_the_lock_of_a_killed_process_is_free_although_its_forked_workers_live(tmp_path):
    from uncertainty_mtl._io import DirectoryLock

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    worker = int(holder.stdout.readline())
    try:
        with pytest.raises(RunDirectoryError, match=f"process {holder.pid} "):
            DirectoryLock(tmp_path).acquire()
        holder.kill()
        holder.wait()
        assert _alive(worker)  # the forked child still has the lock file open
        DirectoryLock(tmp_path).acquire().release()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


# -- studies: one invocation at a time, and kill -9 anywhere (SPEC §10) ----------------------------

#: launcher -> (smoke study, its extra arguments): Table 1 in a local pool of two processes, and
#: Appendix B (4 runs, one submitit process each) under submitit-local, with runs long enough
#: (240 steps, about 15 s) that the jobs of a killed study still train when it starts again.
SUBMITIT_LOCAL = ["--launcher", "submitit-local", "--slurm-cpus", "1"]
STUDIES = {
    "local": ("table1", ["--workers", "2"]),
    "submitit-local": (
        "appendix-b",
        [
            *SUBMITIT_LOCAL,
            *("--set", "optim.steps=240", "--set", "eval.every=80"),
            *("--set", "run.checkpoint_every=40"),
        ],
    ),
}
#: What differs between two invocations that wrote the same tables.
STUDY_TIMING = ("wall_time_s", "runs_trained", "training_time_s")


def study_args(study: str, city: Path, out: Path, extra: list[str]) -> list[str]:
    return [
        "reproduce",
        study,
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--set",
        f"data.root={city}",
        "--set",
        "data.synthetic=false",
        "--quiet",
        *extra,
    ]


def study_tables(out: Path, study: str) -> tuple[str, dict]:
    """The study's markdown table, and its JSON less the invocation's timing, with ``out`` (in
    the runs' paths) written ``OUT``."""
    stem = study.replace("-", "_")
    read = {s: (out / f"{stem}.{s}").read_text().replace(str(out), "OUT") for s in ("md", "json")}
    summary = json.loads(read["json"])
    for key in STUDY_TIMING:
        summary.pop(key)
    return read["md"], summary


def finished_runs(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/results.json")}


def wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exit {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def _held_by_another_process(run_dirs: set[Path]) -> bool:
    from uncertainty_mtl._io import DirectoryLock
    from uncertainty_mtl.errors import DirectoryLockedError

    for run_dir in run_dirs:
        try:
            DirectoryLock(run_dir).acquire().release()
        except DirectoryLockedError:
            return True
    return False


@pytest.fixture(scope="module")
def reference_studies(city, tmp_path_factory):
    """Each study of :data:`STUDIES`, uninterrupted."""
    outs = {}
    for launcher, (study, extra) in STUDIES.items():
        out = tmp_path_factory.mktemp("study") / launcher
        assert main(study_args(study, city, out, extra)) == 0, launcher
        outs[launcher] = out
    return outs


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(STUDIES))
def test_a_study_killed_anywhere_and_started_again_writes_the_same_tables(
    launcher, city, reference_studies, tmp_path
):
    study, extra = STUDIES[launcher]
    reference = reference_studies[launcher]
    total = len(finished_runs(reference))
    out = tmp_path / "study"
    args = study_args(study, city, out, extra)
    rng = random.Random(f"{SEED}-{launcher}")
    after, pause = rng.randint(1, total), rng.uniform(0.0, 0.3)
    log = tmp_path / "killed.log"
    proc = spawn(["-m", "uncertainty_mtl", *args], log)
    started = lambda: len(list(out.glob(f"runs/*/seed*/{RUN_MARKER}")))  # noqa: E731
    wait_for(lambda: started() >= after, proc, log)
    time.sleep(pause)
    proc.kill()  # the study's process only: a submitit job goes on, as a SLURM job would
    assert proc.wait(timeout=60) == -signal.SIGKILL, log.read_text()
    done = finished_runs(out)
    moment = (
        f"killed {pause:.2f} s after run {after} of {total} started, {len(done)} finished "
        f"(UMTL_FAULT_SEED={SEED})"
    )
    assert not (out / f"{study.replace('-', '_')}.json").exists(), moment
    if launcher == "submitit-local":  # the case is the one named: a job still trains a run
        assert _held_by_another_process(set(out.glob("runs/*/seed*")) - {p.parent for p in done})

    assert main(args) == 0, moment
    assert study_tables(out, study) == study_tables(reference, study), moment
    # No finished run was trained again, and nothing temporary is left.
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in done.items()), moment
    summary = json.loads((out / f"{study.replace('-', '_')}.json").read_text())
    assert summary["runs_used"] == total and summary["runs_trained"] <= total - len(done)
    assert not list(out.rglob(".*.tmp")), moment


def test_a_second_study_into_the_same_directory_is_refused_and_the_first_writes_its_tables(
    city, reference_studies, tmp_path, capsys
):
    study, extra = STUDIES["local"]
    out = tmp_path / "study"
    args = study_args(study, city, out, extra)
    log = tmp_path / "first.log"
    first = spawn(["-m", "uncertainty_mtl", *args], log)
    lock = out / "umtl.lock"
    wait_for(
        lambda: lock.is_file() and lock.read_text().startswith(f"process {first.pid} "),
        first,
        log,
    )
    assert main(args) == 2
    one_line_error(capsys, str(out), f"process {first.pid} ", "writes a study into it")
    assert first.wait(timeout=300) == 0, log.read_text()
    assert study_tables(out, study) == study_tables(reference_studies["local"], study)
    assert main(args) == 0  # the lock went with the first study
    assert json.loads((out / "table1.json").read_text())["runs_trained"] == 0


@pytest.mark.slow
def test_a_submitit_run_that_fails_is_one_line_naming_it_and_its_log(city, tmp_path, capsys):
    out = tmp_path / "study"
    args = study_args("appendix-b", city, out, [*SUBMITIT_LOCAL, "--set", "optim.lr=1e12"])
    assert main(args) == 2
    line = one_line_error(capsys, "4 of 4 run(s) failed", "non-finite total loss", "_log.err")
    assert "uw-three-init5-" in line and not list(out.glob("runs/*/seed0/results.json"))
