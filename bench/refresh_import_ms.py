"""Refresh only bench/results.json's import_ms: the median of five runs of run.py's
import_times() (the machine is shared), every other key kept as it is. `--before FILE` also
records FILE's numbers (a JSON object, measured the same way before a change) as import_ms_before.

    .venv/bin/python bench/refresh_import_ms.py [--before before.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import run

RESULTS = Path(__file__).resolve().parent / "results.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = [run.import_times() for _ in range(args.runs)]
    merged = {name: round(statistics.median(r[name] for r in runs if name in r), 1)
              for name in runs[0]}
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    results["import_ms"] = merged
    if args.before is not None:
        results["import_ms_before"] = json.loads(args.before.read_text(encoding="utf-8"))
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(merged))


if __name__ == "__main__":
    main()
