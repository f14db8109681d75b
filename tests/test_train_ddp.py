"""`torchrun --nproc_per_node 2 -m uncertainty_mtl train` on CPU (gloo): the ranks end identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from uncertainty_mtl.data.synthetic import SynthConfig, generate_city


@pytest.mark.parametrize("kind", ["uncertainty", "gradnorm"])
def test_two_ranks_end_with_identical_weights_and_log_variances(tmp_path, kind):
    """GradNorm differentiates each task's loss at the shared layer between DDP's forward and
    backward, and averages its statistics over the ranks."""
    city = tmp_path / "city"
    generate_city(
        city,
        SynthConfig(height=32, width=64, split_sizes={"train": 16, "val": 8, "test": 8}),
        progress=False,
    )
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "uncertainty_mtl",
        "train",
        "--config",
        "smoke",
        "--set",
        f"data.root={city}",
        "--set",
        f"weighting.kind={kind}",
        "--out",
        str(out),
        "--quiet",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    ranks = results["distributed"]
    assert ranks["world_size"] == 2 and ranks["identical_on_all_ranks"] is True
    (checksum_0, log_vars_0), (checksum_1, log_vars_1) = ranks["per_rank"]
    assert checksum_0 == checksum_1 and log_vars_0 == log_vars_1
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "split" not in r] == [1, 2, 3, 4, 5, 6]  # rank 0 only
    if kind == "uncertainty":
        assert all(abs(v) > 1e-4 for v in log_vars_0.values())  # they were trained, from 0
    else:
        weights = [
            [r[f"weight/{t}"] for t in ("semantic", "instance", "depth")]
            for r in records
            if "split" not in r
        ]
        assert all(sum(w) == pytest.approx(3.0, rel=1e-5) for w in weights)
        assert len({tuple(w) for w in weights}) == len(weights)
