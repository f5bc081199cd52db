"""Kill rate per mutated module from mutmut 3's results (``mutants/**/*.py.meta``).

    python scripts/mutation_report.py [--min 85] [--survivors]

Prints one JSON line per module: mutants, killed (killed, timed out, or caught by a type check),
survived, no_tests (no selected test reaches the mutated function: counted as not killed),
not_checked, killed_pct. Exits 1 when a module is under ``--min`` percent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "caught by type check"}


def module_stats(meta: Path) -> tuple[dict[str, object], list[str]]:
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    status = {name: status_by_exit_code[code] for name, code in codes.items()}
    counts = Counter(status.values())
    killed = sum(counts[s] for s in KILLED)
    checked = len(codes) - counts["not checked"] - counts["skipped"]
    survivors = sorted(n for n, s in status.items() if s not in KILLED | {"not checked", "skipped"})
    module = str(meta.relative_to(meta.parents[len(meta.parts) - 2])).removesuffix(".meta")
    return {
        "module": module,
        "mutants": len(codes),
        "killed": killed,
        "survived": counts["survived"],
        "no_tests": counts["no tests"],
        "suspicious": counts["suspicious"],
        "not_checked": counts["not checked"],
        "killed_pct": round(100 * killed / checked, 1) if checked else None,
    }, survivors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min", type=float, default=85.0, help="lowest acceptable kill rate (%%)")
    ap.add_argument("--survivors", action="store_true", help="list surviving mutants too")
    ap.add_argument("--root", type=Path, default=Path("mutants"))
    args = ap.parse_args(argv)
    metas = sorted(args.root.rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {args.root}/: run `make mutation`", file=sys.stderr)
        return 2
    short = []
    for meta in metas:
        stats, survivors = module_stats(meta)
        print(json.dumps(stats))
        if args.survivors:
            for name in survivors:
                print(f"  survived: {name}")
        if stats["killed_pct"] is None or stats["killed_pct"] < args.min:
            short.append(str(stats["module"]))
    if short:
        print(f"under {args.min:g}% killed: {', '.join(short)}", file=sys.stderr)
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
