"""`make bench`: run every benchmark scenario in bench/ and print one table of ratios.

Contract for a scenario script `bench/<name>.py` (any file here except this one and
names starting with `_`):

    def main() -> list[tuple[str, float, str]]:
        # one row per comparison: (scenario, ratio, note), e.g.
        # ("auth vs bare", 0.93, "req/s 4120 vs 4431, 64 conns, 10 s")
        ...

`ratio` is measured in the same run (both sides back to back); use `math.nan` with a
note starting "skipped:" when the scenario cannot run here (a missing service). A
scenario that raises is reported as failed and the others still run; the exit status
is 1 when any failed. `python bench/run.py auth workers` runs just those scenarios.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parent
Row = tuple[str, float, str]
LAST = ("workers",)  # the slowest scenario runs last


def scenario_names() -> list[str]:
    names = sorted(
        p.stem for p in BENCH_DIR.glob("*.py") if p.stem != "run" and not p.stem.startswith("_")
    )
    return [n for n in names if n not in LAST] + [n for n in LAST if n in names]


def load(name: str) -> ModuleType:
    path = BENCH_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"mlgate_bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_one(name: str) -> tuple[list[Row], bool]:
    started = time.monotonic()
    try:
        module = load(name)
        entry: Callable[[], list[Row]] | None = getattr(module, "main", None)
        if entry is None:
            return [(name, math.nan, "failed: no main() -> list[(scenario, ratio, note)]")], False
        rows = [(str(s), float(r), str(n)) for s, r, n in entry()]
    except Exception as exc:
        traceback.print_exc()
        return [(name, math.nan, f"failed: {type(exc).__name__}: {exc}")], False
    print(f"[{name}] done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return rows, True


def render(rows: list[tuple[str, str, float, str]]) -> str:
    header = ("script", "scenario", "ratio", "note")
    cells = [(s, sc, "-" if math.isnan(r) else f"{r:.2f}", n) for s, sc, r, n in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header[:3])]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header[:3], widths, strict=True)) + "  note",
        "  ".join("-" * w for w in widths) + "  ----",
    ]
    for cell in cells:
        left = "  ".join(c.ljust(w) for c, w in zip(cell[:3], widths, strict=True))
        lines.append(f"{left}  {cell[3]}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    wanted = argv or scenario_names()
    unknown = [n for n in wanted if not (BENCH_DIR / f"{n}.py").exists()]
    if unknown:
        print(f"no such scenario: {', '.join(unknown)}", file=sys.stderr)
        return 2
    table: list[tuple[str, str, float, str]] = []
    ok = True
    for name in wanted:
        print(f"[{name}] running...", file=sys.stderr)
        rows, good = run_one(name)
        ok = ok and good
        table.extend((name, scenario, ratio, note) for scenario, ratio, note in rows)
    print()
    print(render(table))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
