"""Entry point: ``python -m analysis <stage> [options]`` runs one stage or command of the
registry (`analysis/stages.py`); ``python -m analysis --help`` lists them."""

from __future__ import annotations

import importlib
import sys
import time

from analysis import stages
from analysis.common.cli import record_runtime, run_main, setup_logging


def usage() -> str:
    width = max(len(s) for s in stages.COMMANDS)
    lines = [__doc__.strip(), "", "stages and commands:"]
    lines += [f"  {s.name.ljust(width)}  {s.summary}" for s in stages.COMMANDS.values()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in stages.COMMANDS:
        print(f"unknown stage {name!r}; choose from: {', '.join(stages.COMMANDS)}", file=sys.stderr)
        return 2
    setup_logging()
    stage = stages.COMMANDS[name]
    module = importlib.import_module(stage.module)
    start = time.perf_counter()
    rc = run_main(name, module.main, rest)
    if rc == 0 and stage.timed:
        record_runtime(name, rest, time.perf_counter() - start)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
