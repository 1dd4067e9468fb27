"""Entry point: ``python -m analysis <stage> [options]``; ``python -m analysis pipeline`` runs
every stage in dependency order (used by the offline smoke profile)."""

from __future__ import annotations

import importlib
import sys
import time

from analysis.cli import record_runtime, setup_logging

# stage name -> module; order is the pipeline's dependency order
STAGES = {
    "vsr": "analysis.vsr",
    "images": "analysis.images",
    "templates": "analysis.templates",
    "embed": "analysis.embed",
    "probe_replication": "analysis.probe_replication",
    "probe_suite": "analysis.probe_suite",
    "paper_check": "analysis.paper_check",
    "verify": "analysis.verify",
    "stats": "analysis.stats_stage",
    "rsa": "analysis.rsa",
}

# pipeline stages (DVC stages) whose wall time goes to results/runtimes/<stage>.json
TIMED = {"vsr", "images", "templates", "embed", "probe_replication", "probe_suite", "stats", "rsa"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        print("stages:", ", ".join(STAGES), "| pipeline")
        return 0 if argv else 2
    setup_logging()
    stage, rest = argv[0], argv[1:]
    if stage == "pipeline":
        from analysis.pipeline import main as run_pipeline
        return run_pipeline(rest)
    if stage not in STAGES:
        print(f"unknown stage {stage!r}; choose from: {', '.join(STAGES)}, pipeline", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[stage])
    start = time.perf_counter()
    rc = int(module.main(rest) or 0)
    if rc == 0 and stage in TIMED:
        record_runtime(stage, rest, time.perf_counter() - start)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
