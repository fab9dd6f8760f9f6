"""Run the benchmarks, write ``benchmarks/results/<name>.json`` and print one table.

Every module ``benchmarks/bench_<name>.py`` exposes ``run() -> dict``: a JSON-able dict with a
``"rows"`` list of flat dicts (one line of the table each) and any extra detail it wants kept.
``python -m benchmarks api optimizer`` runs only the named ones.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _table(name: str, rows: list[dict[str, object]]) -> str:
    if not rows:
        return f"{name}: no rows\n"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [f"== {name} ==", line, "-" * len(line)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    # Only bench_*.py: the package also holds their helpers (loadgen, empty_app).
    modules = [m.name for m in pkgutil.iter_modules([str(here)])]
    names = sorted(m.removeprefix("bench_") for m in modules if m.startswith("bench_"))
    wanted = argv or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
        return 2
    RESULTS.mkdir(exist_ok=True)
    for name in wanted:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.perf_counter()
        load_before = os.getloadavg()
        result = module.run()
        result["benchmark"] = name
        result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        result["seconds"] = round(time.perf_counter() - started, 1)
        # The load average says how quiet the machine was: a figure measured beside other
        # work is a lower bound of the rate (an upper bound of the time).
        result["machine"] = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]},
        }
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(_table(name, result.get("rows", [])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
