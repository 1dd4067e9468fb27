"""Run every speed benchmark (`make bench`) and fail if any misses its target.

Each bench script prints its measurements and exits non-zero when its target is missed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHES = ["bench_embed.py", "bench_probe.py", "bench_rsa.py", "bench_embed_gpu.py"]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for name in BENCHES:
        print(f"\n=== {name}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(here / name)])
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
