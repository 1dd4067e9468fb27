"""Run every speed benchmark (`make bench`) and fail if any misses its target.

Each bench script prints its measurements and exits non-zero when its target is missed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHES = [
    ["bench_embed.py"],                                # SBERT path within 10% of plain encode
    ["bench_probe.py"],                                # engine >= 5x sklearn lbfgs, matched convergence
    ["bench_probe.py", "--suite", "--layers", "13",    # the default text suite (seeds, controls) < 20 min,
     "--embeddings", "results/embeddings"],         # on a run's real vectors where present
    ["bench_rsa.py"],                                  # 7,680-item RDMs + 1,000 bootstraps < 2 min
    ["bench_embed_zoo.py"],                            # what each text condition costs to embed (no target;
                                                       # ~12 min on 2 cores; README "The model zoo")
    ["bench_embed_gpu.py"],                            # captions/s, images/s on a GPU (skips without)
]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for script, *args in BENCHES:
        name = " ".join([script, *args])
        print(f"\n=== {name}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(here / script), *args])
        print(f"=== {name}: exit {rc} in {time.perf_counter() - start:.0f}s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nmissed targets: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nall benchmark targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
