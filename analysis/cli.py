"""Shared command-line plumbing for stages: ``python -m analysis <stage> [--params FILE]``."""

from __future__ import annotations

import argparse
import logging
import os
import platform
from pathlib import Path

RUNTIMES_DIR = Path("results/runtimes")


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m analysis {stage}", description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def stage_key(stage: str, argv: list[str]) -> str:
    """``embed@sbert`` for a foreach stage run with ``--condition``, else the stage name
    (DVC's own names for the stages)."""
    if "--condition" in argv[:-1]:
        return f"{stage}@{argv[argv.index('--condition') + 1]}"
    return stage


def record_runtime(stage: str, argv: list[str], seconds: float) -> Path:
    """Write ``results/runtimes/<stage>.json`` (``embed-<condition>.json``; a DVC output of
    that stage): wall seconds and
    the machine, for the paper's reproducibility appendix. Everything sits under ``runtime``,
    which `verify` does not compare (it differs from run to run by nature)."""
    import torch

    from analysis.io import write_json

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    path = RUNTIMES_DIR / f"{stage_key(stage, argv).replace('@', '-')}.json"
    write_json(path, {"stage": stage_key(stage, argv), "runtime": {
        "seconds": round(seconds, 1), "cpus": os.cpu_count(), "gpu": gpu,
        "machine": platform.machine(), "system": platform.system()}})
    return path
