"""Run every stage in dependency order in this process: the offline smoke profile's runner
(``python -m analysis pipeline --params params.smoke.yaml``). ``dvc repro`` is the real
runner; this mirrors dvc.yaml's order without needing a DVC workspace."""

from __future__ import annotations

import argparse
import importlib
import logging
import time

from analysis.cli import record_runtime
from analysis.params import load_params, section

log = logging.getLogger("pipeline")

ORDER = ["vsr", "templates", "images", "embed", "probe_replication", "probe_suite", "stats", "rsa"]


def main(argv: list[str] | None = None) -> int:
    from analysis.__main__ import STAGES

    parser = argparse.ArgumentParser(prog="python -m analysis pipeline", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--only", nargs="*", help="run only these stages")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    conditions = section(params, "conditions", args.params)
    for stage in ORDER:
        if args.only and stage not in args.only:
            continue
        if stage not in STAGES:
            log.warning("stage %s is not part of this version of the package: skipped", stage)
            continue
        module = importlib.import_module(STAGES[stage])
        runs = [["--condition", c] for c in conditions] if stage == "embed" else [[]]
        for extra in runs:
            start = time.perf_counter()
            log.info("== %s %s", stage, " ".join(extra))
            rc = int(module.main(["--params", args.params, *extra]) or 0)
            if rc:
                log.error("stage %s failed (exit %d)", stage, rc)
                return rc
            record_runtime(stage, extra, time.perf_counter() - start)
            log.info("== %s done in %.1fs", stage, time.perf_counter() - start)
    return 0
