"""Run every pipeline stage in dependency order in this process: the offline smoke profile's
runner (``python -m analysis pipeline --params params.smoke.yaml``). ``dvc repro`` is the real
runner; this follows the registry (`analysis/stages.py`), which a test keeps equal to dvc.yaml."""

from __future__ import annotations

import argparse
import importlib
import logging
import time

from analysis import stages
from analysis.common.cli import record_runtime
from analysis.common.params import condition_sets, load_params

log = logging.getLogger("pipeline")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis pipeline", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--only", nargs="*", help="run only these stages")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    unknown = sorted(set(args.only or []) - {s.name for s in stages.PIPELINE})
    if unknown:
        parser.error(f"--only: not pipeline stages: {unknown}")
    sets = condition_sets(params, args.params)
    entries = {"conditions.text": list(sets.text), "conditions.image": list(sets.image),
               "conditions.pairs": list(sets.pairs)}
    for stage in stages.PIPELINE:
        if args.only and stage.name not in args.only:
            continue
        module = importlib.import_module(stage.module)
        runs = ([stage.argv(item) for item in entries[stage.foreach]] if stage.foreach
                else [stage.argv()])
        for extra in runs:
            start = time.perf_counter()
            log.info("== %s %s", stage.name, " ".join(extra))
            rc = int(module.main(["--params", args.params, *extra]) or 0)
            if rc:
                log.error("stage %s failed (exit %d)", stage.name, rc)
                return rc
            record_runtime(stage.cli, extra, time.perf_counter() - start)
            log.info("== %s done in %.1fs", stage.name, time.perf_counter() - start)
    return 0
