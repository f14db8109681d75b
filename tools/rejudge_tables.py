"""Adds the multiplicity correction to committed methods tables without training anything: each
table's paired comparisons are computed again from its per-seed Δm (they must come out as
committed), then get their paired t-test ``p``, Holm's ``p_holm`` over each baseline's column
and ``verdict_holm``; the JSON and the Markdown table are written again by the study's own code.

    python tools/rejudge_tables.py docs/two-task-digits/methods-tuned.json ...
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

from uncertainty_mtl._io import write_json, write_text
from uncertainty_mtl.experiments.benchmark import methods, methods_two_task
from uncertainty_mtl.experiments.benchmark.methods_stats import paired_rows
from uncertainty_mtl.experiments.benchmark.methods_tuned import tuned_markdown


def markdown(summary: dict[str, Any]) -> str:
    """The table as the study that wrote ``summary`` writes it."""
    if summary.get("protocol") == "tuned":
        return tuned_markdown(summary)
    if "dataset" in summary:  # the two-task problem's fixed-lr table
        return methods_two_task.two_task_markdown(summary)
    return methods.methods_markdown(summary)


def rejudge_qm9(path: Path, summary: dict[str, Any]) -> None:
    """QM9's table: each scaling's rows against ``equal`` and the uncertainty weighting, and
    what raw units cost each row, each one family."""
    from uncertainty_mtl.experiments.qm9 import study
    from uncertainty_mtl.reporting.stats import holm_family, paired_difference

    count = 0
    for part in summary["units"].values():
        rows = part["rows"]
        for name, row in rows.items():
            for base, old in row["paired"].items():
                new = paired_difference(
                    row["delta_m"]["values"],
                    rows[base]["delta_m"]["values"],
                    higher_is_better=False,
                )
                for key in ("differences", "mean", "ci95", "verdict"):
                    if new[key] != old["delta_m"][key]:
                        raise SystemExit(f"{path}: {name} vs {base}: {key} differs")
                row["paired"][base] = {"delta_m": new}
                count += 1
        for base in ("equal", "uncertainty"):
            family = [r["paired"][base]["delta_m"] for r in rows.values() if base in r["paired"]]
            holm_family(family, higher_is_better=False)
    effect = summary.get("units_effect") or {}
    for name, old in effect.items():
        raw = summary["units"]["raw"]["rows"][name]["delta_m"]["values"]
        std = summary["units"]["standardised"]["rows"][name]["delta_m"]["values"]
        effect[name] = paired_difference(raw, std, higher_is_better=False)
        if effect[name]["mean"] != old["mean"]:
            raise SystemExit(f"{path}: the units effect of {name} differs")
        count += 1
    holm_family(list(effect.values()), higher_is_better=False)
    write_json(path, summary)
    write_text(path.with_suffix(".md"), study.table(summary))
    print(f"{path}: {count} comparisons adjusted")


def rejudge(path: Path) -> None:
    summary = json.loads(path.read_text(encoding="utf-8"))
    if summary.get("study") == "qm9":
        rejudge_qm9(path, summary)
        return
    rows = summary["rows"]
    fresh = copy.deepcopy(rows)
    paired_rows(fresh)
    for name, row in rows.items():
        for base, old in row.get("paired", {}).items():
            new = fresh[name]["paired"][base]["delta_m"]
            for key in ("differences", "mean", "ci95", "verdict"):
                if new[key] != old["delta_m"][key]:
                    raise SystemExit(f"{path}: {name} vs {base}: {key} differs from the committed")
        row["paired"] = fresh[name]["paired"]
    write_json(path, summary)
    write_text(path.with_suffix(".md"), markdown(summary))
    print(f"{path}: {sum(len(r['paired']) for r in rows.values())} comparisons adjusted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", type=Path, help="a methods table's JSON")
    for path in parser.parse_args().tables:
        rejudge(path)


if __name__ == "__main__":
    main()
