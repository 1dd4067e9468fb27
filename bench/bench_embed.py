"""Benchmark: CPU throughput of our SBERT path (analysis.encoders.SbertEncoder.encode) against a
plain ``SentenceTransformer.encode`` on the same captions, same model, same batch size.
Target: ours within 10% of plain (ratio ours/plain >= 0.90); exit status 1 otherwise.

Model: all-mpnet-base-v2's architecture with random weights (runs anywhere), or real weights from
``--model DIR`` / ``$SBERT_BENCH_MODEL`` (e.g. /work/models/mpnet/all-mpnet-base-v2).
Captions: VSR random/train from ``--captions FILE`` (JSONL) or ../shared/vsr when present, else
the fixture captions; the first ``--n`` of them.

    python bench/bench_embed.py [--n 256] [--batch-size 64] [--repeats 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from analysis.embed.encoders import ModelSource, SbertEncoder  # noqa: E402


def tiny_models_module():
    spec = importlib.util.spec_from_file_location("make_tiny_models", ROOT / "tests/fixtures/make_tiny_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_captions(path: str | None, n: int) -> tuple[list[str], str]:
    candidates = [Path(path)] if path else [ROOT.parent / "shared/vsr/random/train.jsonl"]
    for p in candidates:
        if p.exists():
            caps = [json.loads(line)["caption"] for line in p.open() if line.strip()]
            return caps[:n], str(p)
    caps = tiny_models_module().fixture_captions()
    return (caps * (n // len(caps) + 1))[:n], "tests/fixtures/vsr (repeated)"


def interleaved_rates(fns: dict, n_items: int, repeats: int) -> tuple[dict, dict]:
    """Items per second of the fastest of ``repeats`` runs of each function, the runs interleaved
    (a, b, a, b, ...) so a busy shared machine slows both alike; the warm-up run's outputs are
    returned for comparison."""
    outputs = {name: fn() for name, fn in fns.items()}
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: n_items / t for name, t in best.items()}, outputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="number of captions")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--captions", default=None, help="VSR-format JSONL to take captions from")
    ap.add_argument("--model", default=os.environ.get("SBERT_BENCH_MODEL"),
                    help="sentence-transformers folder (default: random weights, same architecture)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    captions, source = load_captions(args.captions, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            folder, label = Path(args.model), f"weights from {args.model}"
        else:
            folder, label = Path(tmp) / "sbert-random", "all-mpnet-base-v2 architecture, random weights (seed 0)"
            # vocabulary built from these captions, so token counts match a real WordPiece closely
            tiny_models_module().random_sbert(0, captions=captions).save(str(folder))
        ours = SbertEncoder(ModelSource("bench", folder, "bench"), device="cpu", batch_size=args.batch_size)
        plain = SentenceTransformer(str(folder), device="cpu")
        rates, out = interleaved_rates({
            "plain": lambda: plain.encode(captions, batch_size=args.batch_size, normalize_embeddings=True),
            "ours": lambda: ours.encode(captions),
        }, len(captions), args.repeats)
    r_ours, r_plain = rates["ours"], rates["plain"]
    max_diff = float(np.abs(out["ours"] - out["plain"]).max())
    ratio = r_ours / r_plain
    print(f"model: {label}")
    print(f"captions: {len(captions)} from {source}; batch {args.batch_size}; {args.threads} CPU threads; "
          f"best of {args.repeats}")
    print(f"plain SentenceTransformer.encode : {r_plain:8.1f} captions/s")
    print(f"analysis.encoders SBERT path     : {r_ours:8.1f} captions/s")
    print(f"ratio ours/plain                 : {ratio:8.3f} (target >= 0.90); max |diff| {max_diff:.2e}")
    return 0 if ratio >= 0.90 and max_diff < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
