"""Shared command-line plumbing for stages: ``python -m analysis <stage> [--params FILE]``,
logging, the one-line report of expected failures, and the per-stage runtime record."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import traceback
from pathlib import Path
from typing import Callable

from analysis.common.errors import UserError

RUNTIMES_DIR = Path("results/runtimes")
DEBUG_ENV = "ANALYSIS_DEBUG"  # set to 1 (or pass --debug) for tracebacks of expected failures

log = logging.getLogger("analysis")


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m analysis {stage}", description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def run_main(name: str, main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Call a stage's ``main``; an expected failure (`UserError`, a missing file) is printed as
    one line naming the stage and exits 2; ``--debug`` or ``ANALYSIS_DEBUG=1`` adds the
    traceback. Anything else is a bug and propagates with its traceback."""
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return int(main(argv) or 0)
    except (UserError, FileNotFoundError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {name}: {exc}", file=sys.stderr)
        if not debug:
            print(f"(run with --debug or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 2


def stage_key(stage: str, argv: list[str]) -> str:
    """``embed@sbert`` for a command run for one entry (``--condition``/``--unit``), else the
    command's name (DVC's names, or the command's where one command serves several stages)."""
    for flag in ("--condition", "--unit"):
        if flag in argv[:-1]:
            return f"{stage}@{argv[argv.index(flag) + 1]}"
    return stage


_PARTS: dict[str, float] = {}


def note_runtime_parts(parts: dict[str, float]) -> None:
    """Seconds per part of a stage (e.g. per condition and task), for its runtime record: wall
    times never go into a stage's hashed outputs."""
    _PARTS.clear()
    _PARTS.update(parts)


def runtime_parts() -> dict[str, float]:
    return dict(_PARTS)


def record_runtime(stage: str, argv: list[str], seconds: float) -> Path:
    """Write ``results/runtimes/<stage>.json`` (``embed-<condition>.json``; a DVC output of
    that stage): wall seconds and the machine, for the paper's reproducibility appendix.
    Everything sits under ``runtime``, which `verify` does not compare (it differs from run to
    run by nature)."""
    from analysis.common.device import gpu_name
    from analysis.common.io import write_json

    path = RUNTIMES_DIR / f"{stage_key(stage, argv).replace('@', '-')}.json"
    runtime = {"seconds": round(seconds, 1), "cpus": os.cpu_count(), "gpu": gpu_name(),
               "machine": platform.machine(), "system": platform.system()}
    if _PARTS:
        runtime["parts_s"] = dict(_PARTS)
        _PARTS.clear()
    write_json(path, {"stage": stage_key(stage, argv), "runtime": runtime})
    return path
