"""Benchmark: embedding throughput on a GPU (captions/s, images/s) with architecture-identical
random-weight models (all-mpnet-base-v2; CLIP ViT-B/32), through analysis.encoders, in float32
and float16, plus float16's worst cosine against float32 (the stage's half-precision check).
Exits cleanly with a message where no CUDA GPU is present.

Captions: VSR random/train (--captions FILE or ../shared/vsr when present, else the fixture
captions repeated). Images: --images DIR of JPEGs, else PIL-made 640x480 JPEGs (COCO-sized).

    python bench/bench_embed_gpu.py [--n-captions 7680] [--n-images 2048] [--workers 8]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from analysis.embed.encoders import ClipEncoder, ModelSource, SbertEncoder, half_precision_ok  # noqa: E402
from bench_embed import load_captions, tiny_models_module  # noqa: E402


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """COCO-sized JPEGs with a gradient and a few shapes (decode and resize cost like real photos)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None].repeat(480, 0).repeat(3, 2)
    paths = []
    for i in range(n):
        img = Image.fromarray(np.roll(base, rng.randrange(640), axis=1))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.randrange(600), rng.randrange(440)
            draw.ellipse([x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)],
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        p = folder / f"{i:06d}.jpg"
        img.save(p, "JPEG", quality=90)
        paths.append(p)
    return paths


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> tuple[float, object]:
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def measure(enc, dtype: torch.dtype, fn, n: int, repeats: int) -> tuple[float, object]:
    enc.to_dtype(dtype)
    out = fn()  # warm-up (kernels, allocator)
    best = min(timed(fn)[0] for _ in range(repeats))
    return n / best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-captions", type=int, default=7680)
    ap.add_argument("--n-images", type=int, default=2048)
    ap.add_argument("--images", default=None, help="folder of JPEGs to use instead of generated ones")
    ap.add_argument("--captions", default=None)
    ap.add_argument("--text-batch", type=int, default=256)
    ap.add_argument("--image-batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers decoding images")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cpu only to dry-run the script with a small --n-*")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_embed_gpu: no CUDA GPU here; nothing measured (run it on a GPU machine).")
        return 0
    tm = tiny_models_module()
    captions, cap_source = load_captions(args.captions, args.n_captions)
    if len(captions) < args.n_captions:
        captions = (captions * (args.n_captions // len(captions) + 1))[:args.n_captions]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sb_dir, clip_dir = tmp / "sbert", tmp / "clip"
        tm.random_sbert(0, captions=captions).save(str(sb_dir))
        model, tok, proc = tm.random_clip(0, captions=captions)
        model.save_pretrained(clip_dir)
        tok.save_pretrained(clip_dir)
        proc.save_pretrained(clip_dir)
        if args.images:
            images = sorted(Path(args.images).glob("*.jpg"))[:args.n_images]
            img_source = args.images
        else:
            images = make_images(tmp / "images", args.n_images)
            img_source = "PIL-made 640x480 JPEGs"

        sb = SbertEncoder(ModelSource("random", sb_dir, "random"), device=args.device, batch_size=args.text_batch)
        cl = ClipEncoder(ModelSource("random", clip_dir, "random"), device=args.device, batch_size=args.text_batch,
                         image_batch_size=args.image_batch, image_workers=args.workers)
        jobs = [
            ("SBERT (all-mpnet-base-v2 arch)", "captions/s", sb, lambda: sb.encode(captions), len(captions)),
            ("CLIP text (ViT-B/32 arch)", "captions/s", cl, lambda: cl.encode_text(captions)["text_embeds"],
             len(captions)),
            ("CLIP image (ViT-B/32 arch)", "images/s", cl, lambda: cl.encode_images(images)["image_embeds"],
             len(images)),
        ]
        for name, unit, enc, fn, n in jobs:
            r32, o32 = measure(enc, torch.float32, fn, n, args.repeats)
            r16, o16 = measure(enc, torch.float16, fn, n, args.repeats)
            ok, worst = half_precision_ok(np.asarray(o32), np.asarray(o16))
            rows.append((name, unit, r32, r16, worst, ok))
            enc.to_dtype(torch.float32)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else args.device
    print(f"device: {gpu}; torch {torch.__version__}")
    print(f"captions: {len(captions)} from {cap_source}; images: {len(images)} {img_source}; "
          f"text batch {args.text_batch}, image batch {args.image_batch}, {args.workers} decode workers")
    print("| encoder | unit | float32 | float16 | fp16 worst cosine | fp16 used |")
    print("|---|---|---|---|---|---|")
    for name, unit, r32, r16, worst, ok in rows:
        print(f"| {name} | {unit} | {r32:,.0f} | {r16:,.0f} | {worst:.6f} | {'yes' if ok else 'no'} |")
    print("(random weights: fp16 agreement on the real weights is decided by the stage at run time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
