"""Build (once) the embedded base model: a tiny character-level Llama warm-started by a short seeded SFT.

Usage: python scripts/make_base_model.py [--out .cache/base_model] [--seed 0] [--force]
Prints held-out greedy pass rates per distribution. A second run with the same settings reuses the cached build.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rlpost.embedded.model import BuildSettings, ensure_base_model, read_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".cache/base_model"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching build is cached")
    args = parser.parse_args()
    start = time.perf_counter()
    path = ensure_base_model(args.out, BuildSettings(seed=args.seed), force=args.force)
    report = read_report(path) or {}
    cached = time.perf_counter() - start < 1.0 and not args.force
    print(f"[base model] {path} ({report.get('parameters', 0):,} parameters, "
          f"{'cached' if cached else 'built'}; build took {report.get('build_seconds', 0):.0f}s)")
    print(f"{'data_source':<12} {'greedy pass@1':>14}")
    for source, accuracy in report.get("greedy_accuracy", {}).items():
        print(f"{source:<12} {100 * accuracy:>13.1f}%")


if __name__ == "__main__":
    main()
