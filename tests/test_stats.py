"""reporting.stats: the paired t-test's p-value and Holm's adjustment, by hand and against
SciPy; how a table reads them."""

from __future__ import annotations

import math

import pytest

from uncertainty_mtl.experiments.benchmark.methods_stats import adjusted_verdict, paired_rows
from uncertainty_mtl.reporting.stats import holm, holm_family, paired_difference, paired_p


def test_the_paired_p_value_by_hand_and_as_scipy_gives_it():
    # differences 1, 2, 3: mean 2, sd 1, t = 2·√3 on 2 degrees of freedom
    from scipy.stats import t, ttest_1samp

    expected = 2 * t.sf(2 * math.sqrt(3), 2)
    assert paired_p([1.0, 2.0, 3.0]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.0742, abs=1e-4)
    diffs = [0.3, -1.2, 0.8, 2.5, -0.1]
    assert paired_p(diffs) == pytest.approx(ttest_1samp(diffs, 0.0).pvalue, rel=1e-12)
    assert paired_p([0.5]) is None  # one seed: no test
    assert paired_p([0.0, 0.0]) == 1.0 and paired_p([1.0, 1.0]) == 0.0
    assert paired_difference([3.0, 4.0, 5.0], [2.0, 2.0, 2.0], higher_is_better=True)["p"] == (
        pytest.approx(expected)
    )


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 of m = 4: 0.04, 0.09, max(0.09, 0.08) = 0.09, 0.2
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, None, 0.01]) == [pytest.approx(0.5), None, pytest.approx(0.02)]
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_a_family_keeps_only_what_survives_the_adjustment():
    # raw p 0.01 and 0.04: both separate unadjusted; Holm keeps the first (0.02) only (0.04)
    a = {"mean": -1.0, "p": 0.01, "verdict": "better"}
    b = {"mean": 2.0, "p": 0.04, "verdict": "worse"}
    c = {"mean": 0.5, "p": None, "verdict": "not separated"}
    holm_family([a, b, c], higher_is_better=False)
    assert (a["p_holm"], a["verdict_holm"]) == (pytest.approx(0.02), "better")
    assert (b["p_holm"], b["verdict_holm"]) == (pytest.approx(0.04), "worse")
    holm_family([a, b, {"mean": 0.1, "p": 0.9, "verdict": "not separated"}], higher_is_better=False)
    assert b["p_holm"] == pytest.approx(0.08) and b["verdict_holm"] == "not separated"
    assert adjusted_verdict(b) == "suggestive (worse)" and adjusted_verdict(a) == "better"
    assert adjusted_verdict({"verdict": "worse"}) == "worse"  # a table from before Holm


def test_paired_rows_adjust_each_baseline_s_column_as_one_family():
    values = {
        "equal": [10.0, 12.0, 11.0, 13.0],
        "uncertainty": [8.0, 10.5, 9.0, 11.2],
        "a": [9.9, 12.3, 10.8, 13.1],
        "b": [14.0, 15.5, 14.2, 17.0],
    }
    rows = {k: {"delta_m": {"values": v}} for k, v in values.items()}
    paired_rows(rows)
    family = [rows[m]["paired"]["equal"]["delta_m"] for m in ("uncertainty", "a", "b")]
    raw = [
        paired_p([x - y for x, y in zip(values[m], values["equal"], strict=True)])
        for m in ("uncertainty", "a", "b")
    ]
    assert [c["p"] for c in family] == pytest.approx(raw)
    assert [c["p_holm"] for c in family] == pytest.approx(holm(raw))
    assert "equal" not in rows["equal"]["paired"]  # not against itself


COMMITTED = [
    "docs/results/cpu-lite/methods.json",
    "docs/results/cpu-lite/methods-tuned-sgd.json",
    "docs/results/cpu-lite/methods-tuned-adam.json",
    "docs/two-task-digits/methods-tuned.json",
    "docs/two-task-digits/methods.json",
    "docs/qm9/qm9.json",
]


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_tables_carry_the_adjusted_verdicts_this_code_gives(name, tmp_path):
    """tools/rejudge_tables.py, run again on a copy, changes nothing: every committed paired
    comparison has its p, p_holm and verdict_holm, and its table says what they say."""
    import importlib.util
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("rejudge", root / "tools" / "rejudge_tables.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    source = root / name
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    tool.rejudge(copy)
    assert copy.read_text() == source.read_text()
    assert copy.with_suffix(".md").read_text() == source.with_suffix(".md").read_text()
    assert '"p_holm"' in copy.read_text() and '"verdict_holm"' in copy.read_text()
