"""How two methods tables agree on the rows they share (two presets' ``methods.json``, e.g. the
cpu-lite preset's against the cpu preset's): Spearman's correlation of the rows' mean Δm, and
each row's verdict against ``equal`` in both. Prints JSON.

    python tools/table_agreement.py docs/results/methods.json docs/results/cpu-lite/methods.json
"""

from __future__ import annotations

import argparse
import json

from uncertainty_mtl.experiments.benchmark.methods_stats import table_agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="a methods table's JSON")
    parser.add_argument("second", help="another one")
    args = parser.parse_args()
    tables = []
    for path in (args.first, args.second):
        with open(path, encoding="utf-8") as f:
            tables.append(json.load(f))
    print(
        json.dumps(
            {"first": args.first, "second": args.second, **table_agreement(*tables)}, indent=2
        )
    )


if __name__ == "__main__":
    main()
