"""Run every benchmark (``benchmarks/bench_*.py``), each in its own process with one thread.

    python benchmarks/run.py            # all
    python benchmarks/run.py analyses   # only bench_analyses.py
    python benchmarks/run.py scale --layers 8   # options after the names go to each named benchmark

``scale`` (writes a multi-GB checkpoint) runs only when named.

Each benchmark prints its own table: medians of repeats and ratios against peers (networkx,
igraph, reference implementations) measured in the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Benchmarks that run only when named (they write large files or run for long).
OPT_IN = {"scale"}


def main(argv: list[str]) -> int:
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    wanted, options = set(argv[:first_option]), argv[first_option:]
    benches = sorted(HERE.glob("bench_*.py"))
    if not wanted:
        benches = [b for b in benches if b.stem.removeprefix("bench_") not in OPT_IN]
    if wanted:
        benches = [b for b in benches if b.stem.removeprefix("bench_") in wanted or b.stem in wanted]
        if not benches:
            print(f"no benchmark matches {sorted(wanted)}; have: "
                  + ", ".join(b.stem.removeprefix('bench_') for b in sorted(HERE.glob('bench_*.py'))), file=sys.stderr)
            return 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    failed = []
    for bench in benches:
        print(f"\n=== {bench.stem} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(bench), *options], env=env)
        print(f"--- {bench.stem}: exit {rc}, {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(bench.stem)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
