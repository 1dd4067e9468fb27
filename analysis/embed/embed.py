"""Stage ``embed``: one condition's embeddings for every split in ``embed.splits``.

``python -m analysis embed --condition NAME [--params FILE]``. Conditions: ``sbert``,
``clip_text``, ``clip_image``, ``clip_concat`` and the random-weight baselines ``sbert_random``,
``clip_text_random``, ``clip_image_random`` (same architecture and tokenizer, weights drawn from
``models.random_seed``; append ``_s<N>`` to a random condition's name for seed N), and the zoo
models of ``models.zoo`` (``analysis/embed/zoo.py``): ``zoo_<name>`` and its random-weight twin
``zoo_<name>_random[_s<N>]``, text conditions whose views are the model's own (``meta.json``
``primary`` names the one read by default: the model's trained pooling, else its mean pooling).
Image conditions drop rows whose image the manifest does not list as ``ok`` and name them in the
sidecar; the template set (text only) is skipped by image conditions.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import field_validator

from analysis.common.cli import stage_parser
from analysis.common.device import EMBED_DEVICES, pick_device
from analysis.common.errors import UserError
from analysis.common.io import replace_dir, sha256_file
from analysis.common.params import Settings, load_params, stage_settings
from analysis.embed import encoders
from analysis.embed import zoo
from analysis.embed.encoders import ModelSpec
from analysis.embed.zoo import ZooSpec
from analysis.common.store import (EMBED_DIR, IMAGE_MANIFEST, TEMPLATE_KEYS, image_rows, load_split,
                                   parse_split_key, raw_split_path, read_image_manifest,
                                   save_embeddings, table_path)

log = logging.getLogger("embed")

CALIBRATION_TEXTS = 256
CALIBRATION_IMAGES = 64

POOLING = {
    "mean": "sentence-transformers mean pooling over non-padding tokens, L2-normalized",
    "pooler_output": "CLIP text final-layer EOS token state (after final layer norm), L2-normalized",
    "text_embeds": "CLIP text_projection(pooler_output), L2-normalized (get_text_features)",
    "image_embeds": "CLIP visual_projection(CLS after post layer norm), L2-normalized (get_image_features)",
    "concat": "[image_embeds; text_embeds], each L2-normalized, concatenated, L2-normalized",
    "layers:sbert": "embedding output and every layer, mean-pooled over non-padding tokens, not normalized",
    "layers:clip_text": "embedding output and every layer at the EOS token, not normalized",
    "layers:clip_image": "embedding output (after pre layer norm) and every layer at the CLS token, not normalized",
}


class ModelsSettings(Settings):
    """Section `models`: which weights each condition uses."""

    sbert: ModelSpec
    """sentence-transformers model of the `sbert` conditions"""
    clip: ModelSpec
    """transformers CLIP model of the `clip_*` conditions"""
    random_seed: int
    """weights of the random-weight baselines (a condition named `<base>_random_s<N>` uses N)"""
    zoo: dict[str, ZooSpec] = {}
    """further text encoders by name (analysis/embed/zoo.py): conditions `zoo_<name>`, `zoo_<name>_random[_s<N>]`"""

    @field_validator("zoo")
    @classmethod
    def _zoo_names(cls, value: dict[str, ZooSpec]) -> dict[str, ZooSpec]:
        bad = [n for n in value if not ZOO_NAME.match(n) or RANDOM_SUFFIX.search(n)]
        if bad:
            raise ValueError(f"zoo model names {bad}: use lower-case letters, digits and _ "
                             "(not ending in _random or _random_s<N>, which name the random twins)")
        return value


class BatchSizes(Settings):
    text: int = 64
    image: int = 32


class LayerSettings(Settings):
    splits: tuple[str, ...] = ()
    """split keys whose every-layer hidden states are stored (view `layers`)"""


class EmbedSettings(Settings):
    """Section `embed`."""

    splits: tuple[str, ...]
    """split keys to embed ('<variant>/<split>', and 'templates/all' for text conditions)"""
    device: str = "auto"
    """auto = cuda > mps > cpu"""
    dtype: Literal["auto", "float32", "float16"] = "auto"
    """auto = float16 on GPU when it agrees with float32 (cosine >= 0.9999), else float32"""
    batch_size: BatchSizes = BatchSizes()
    image_workers: int = 0
    """DataLoader workers decoding images"""
    layers: LayerSettings = LayerSettings()


class ConditionError(UserError, ValueError):
    """An unknown condition name."""


@dataclass(frozen=True)
class Condition:
    name: str
    model: str  # key under params `models`
    modality: str  # text | image | concat
    random_seed: int | None = None
    zoo: str | None = None  # key under params `models.zoo` (model == "zoo")

    @property
    def needs_images(self) -> bool:
        return self.modality in {"image", "concat"}

    @property
    def layer_kind(self) -> str:
        return "sbert" if self.model == "sbert" else f"clip_{self.modality}"

    @property
    def views(self) -> tuple[str, ...]:
        """The stored views (a zoo condition's come from its encoder: ``ZooEncoder.views``)."""
        if self.model == "zoo":
            return ()
        if self.model == "sbert":
            return ("mean",)
        return {"text": ("pooler_output", "text_embeds"), "image": ("image_embeds",),
                "concat": ("concat", "image_embeds", "text_embeds")}[self.modality]


BASE = {"sbert": ("sbert", "text"), "clip_text": ("clip", "text"), "clip_image": ("clip", "image"),
        "clip_concat": ("clip", "concat")}
RANDOM_RE = re.compile(r"^(sbert|clip_text|clip_image)_random(?:_s(\d+))?$")
CONDITION_NAMES = [*BASE, "sbert_random", "clip_text_random", "clip_image_random"]
ZOO_PREFIX = "zoo_"
ZOO_RE = re.compile(r"^zoo_(?P<name>[a-z0-9_]+?)(?P<random>_random(?:_s(?P<seed>\d+))?)?$")
ZOO_NAME = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
RANDOM_SUFFIX = re.compile(r"_random(?:_s\d+)?$")


def parse_condition(name: str, models: ModelsSettings) -> Condition:
    """Condition name -> what to encode; random conditions take their seed from
    ``models.random_seed`` unless the name carries ``_s<N>``."""
    if name in BASE:
        return Condition(name, *BASE[name])
    if name.startswith(ZOO_PREFIX):
        return parse_zoo_condition(name, models)
    m = RANDOM_RE.match(name)
    if not m:
        raise ConditionError(f"unknown condition {name!r}: choose from {', '.join(CONDITION_NAMES)} "
                             f"(random ones may end in _s<seed>)")
    seed = int(m.group(2)) if m.group(2) is not None else models.random_seed
    return Condition(name, *BASE[m.group(1)], random_seed=seed)


def parse_zoo_condition(name: str, models: ModelsSettings) -> Condition:
    """``zoo_<name>`` (pretrained) or ``zoo_<name>_random[_s<N>]`` for a model of ``models.zoo``."""
    m = ZOO_RE.match(name)
    if not m or m.group("name") not in models.zoo:
        known = ", ".join(f"{ZOO_PREFIX}{n}" for n in models.zoo) or "none: models.zoo is empty"
        raise ConditionError(f"unknown condition {name!r}: a zoo condition is zoo_<name> or "
                             f"zoo_<name>_random[_s<seed>] for a model listed under models.zoo ({known})")
    seed = None
    if m.group("random"):
        seed = int(m.group("seed")) if m.group("seed") is not None else models.random_seed
    return Condition(name, "zoo", "text", random_seed=seed, zoo=m.group("name"))


def dataset_checksum(variant: str, split: str) -> tuple[str, str]:
    """sha256 of the verified raw JSONL where it exists, else of the normalized table."""
    raw = raw_split_path(variant, split)
    path = raw if variant != "templates" and raw.exists() else table_path(variant, split)
    return sha256_file(path), str(path)


def build_encoder(cond: Condition, models: ModelsSettings, cfg: EmbedSettings,
                  device: str) -> encoders.SbertEncoder | encoders.ClipEncoder | zoo.ZooEncoder:
    text_bs, image_bs = cfg.batch_size.text, cfg.batch_size.image
    if cond.model == "zoo":  # errors name models.zoo.<name>.<setting>
        return zoo.load_zoo_encoder(models.zoo[cond.zoo], name=f"zoo.{cond.zoo}", device=device,
                                    batch_size=text_bs, random_seed=cond.random_seed)
    spec = getattr(models, cond.model)
    if cond.model == "sbert":
        source = encoders.resolve_source(spec, encoders.SBERT_FILES, name="sbert")
        return encoders.SbertEncoder(source, device=device, batch_size=text_bs, random_seed=cond.random_seed)
    source = encoders.resolve_source(spec, encoders.CLIP_FILES, name="clip")
    return encoders.ClipEncoder(source, device=device, batch_size=text_bs, image_batch_size=image_bs,
                                random_seed=cond.random_seed, image_workers=cfg.image_workers)


def encode_rows(cond: Condition, enc: Any, captions: list[str], image_paths: list[str], layers: bool,
                progress: bool = True) -> dict[str, np.ndarray]:
    """Every view for these rows (captions and image paths aligned row for row). Each distinct
    caption and image is encoded once and mapped back to its rows."""
    views: dict[str, np.ndarray] = {}
    if cond.modality in {"text", "concat"}:
        uniq, inverse = np.unique(np.asarray(captions, dtype=object), return_inverse=True)
        texts = list(uniq)
        if cond.model == "sbert":
            out = {"mean": enc.encode(texts, progress=progress)}
            if layers:
                out["layers"] = enc.layers(texts, progress=progress)
        else:  # CLIP's text tower, or a zoo model (text only)
            out = enc.encode_text(texts, layers=layers and cond.modality == "text", progress=progress)
        for name, arr in out.items():
            views[name] = arr[:, inverse] if name == "layers" else arr[inverse]
    if cond.needs_images:
        uniq, inverse = np.unique(np.asarray(image_paths, dtype=object), return_inverse=True)
        out = enc.encode_images(list(uniq), layers=layers and cond.modality == "image", progress=progress)
        for name, arr in out.items():
            views[name] = arr[:, inverse] if name == "layers" else arr[inverse]
    if cond.modality == "concat":
        views["concat"] = encoders.concat_embeddings(views["image_embeds"], views["text_embeds"])
    keep = enc.views if cond.model == "zoo" else cond.views
    return {k: v for k, v in views.items() if k in keep or k == "layers"}


def zoo_meta(cond: Condition, models: ModelsSettings, enc: zoo.ZooEncoder) -> dict[str, Any]:
    """A zoo condition's extra sidecar fields: its primary view and the model's settings."""
    spec = models.zoo[cond.zoo]
    info = {"name": cond.zoo, "family": spec.family}
    if spec.family == "open_clip":
        info |= {"arch": spec.arch, "pretrained": spec.pretrained, "text_hub_id": spec.text_hub_id,
                 "text_revision": spec.text_revision}
    return {"primary": enc.primary, "zoo": info}


def zoo_versions(cond: Condition, models: ModelsSettings) -> dict[str, str]:
    if cond.model != "zoo" or models.zoo[cond.zoo].family != "open_clip":
        return {}
    import open_clip
    import timm

    return {"open_clip": open_clip.__version__, "timm": timm.__version__}


def pick_dtype(setting: str, device: str, cond: Condition, enc: Any, captions: list[str],
               image_paths: list[str]) -> tuple[torch.dtype, float | None]:
    """float32 unless float16 is asked for, or ``auto`` on a GPU finds float16 agreeing with
    float32 (worst cosine >= 0.9999) on a sample of this condition's own inputs."""
    if setting == "float32" or (setting == "auto" and device != "cuda"):
        enc.to_dtype(torch.float32)
        return torch.float32, None
    if setting == "float16":
        enc.to_dtype(torch.float16)
        return torch.float16, None
    if setting != "auto":
        raise ValueError(f"embed.dtype: {setting!r} is not one of auto, float32, float16")
    texts = list(dict.fromkeys(captions))[:CALIBRATION_TEXTS]
    images = list(dict.fromkeys(image_paths))[:CALIBRATION_IMAGES]

    def probe() -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if cond.modality in {"text", "concat"}:
            out |= {"mean": enc.encode(texts)} if cond.model == "sbert" else enc.encode_text(texts)
        if cond.needs_images and images:
            out |= enc.encode_images(images)
        return out

    return encoders.choose_half(enc, probe)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("embed", __doc__)
    parser.add_argument("--condition", required=True,
                        help=f"one of {', '.join(CONDITION_NAMES)}, or zoo_<name>[_random] (models.zoo)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    models = stage_settings(ModelsSettings, params, "models", args.params)
    cfg = stage_settings(EmbedSettings, params, "embed", args.params)
    cond = parse_condition(args.condition, models)
    layer_keys = set(cfg.layers.splits)

    plan: list[tuple[str, str]] = []
    for key in cfg.splits:
        variant, split = parse_split_key(key)
        if key in TEMPLATE_KEYS and cond.needs_images:
            log.info("%s: skipping %s (template set has no images)", cond.name, key)
            continue
        if key in TEMPLATE_KEYS and not table_path(variant, split).exists():
            log.info("%s: skipping %s (%s not found; run the 'templates' stage)", cond.name, key,
                     table_path(variant, split))
            continue
        plan.append((variant, split))
    if not plan:
        log.warning("%s: no splits to embed", cond.name)
        return 0
    manifest = read_image_manifest() if cond.needs_images else None

    device = pick_device(cfg.device, EMBED_DEVICES)
    enc = build_encoder(cond, models, cfg, device)
    versions = encoders.library_versions() | zoo_versions(cond, models)
    dtype, worst = None, None
    with replace_dir(EMBED_DIR / cond.name) as folder:  # every split, swapped in together
        for variant, split in plan:
            key = f"{variant}/{split}"
            table = load_split(variant, split)
            if cond.needs_images:
                keep, paths, excluded = image_rows(table, manifest)
                if excluded:
                    log.warning("%s %s: %d of %d rows excluded (image not usable), e.g. %s", cond.name, key,
                                len(excluded), len(table), excluded[0])
                table = table[keep]
                if table.empty:
                    raise ValueError(f"{cond.name} {key}: no row has a usable image (see {IMAGE_MANIFEST})")
            else:
                paths, excluded = [], []
            captions = table["caption"].astype(str).tolist()
            if dtype is None:
                dtype, worst = pick_dtype(cfg.dtype, device, cond, enc, captions, paths)
            layers = key in layer_keys and cond.modality != "concat"
            log.info("%s %s: %d rows on %s (%s)%s", cond.name, key, len(table), device, str(dtype).replace("torch.", ""),
                     " + layers" if layers else "")
            views = encode_rows(cond, enc, captions, paths, layers, progress=not args.no_progress)
            sha, data_file = dataset_checksum(variant, split)
            if cond.model == "zoo":  # the model's own descriptions; `primary` (below) names the default view
                pooling = {v: enc.pooling[v] for v in views}
            else:
                pooling = {v: POOLING[v] for v in views if v != "layers"}
                if "layers" in views:
                    pooling["layers"] = POOLING[f"layers:{cond.layer_kind}"]
            meta = {
                "condition": cond.name,
                "model_id": enc.source.model_id,
                "revision": enc.source.revision,
                "model_path": str(enc.source.local_dir) if enc.source.origin == "path" else None,
                "random_seed": cond.random_seed,
                "weights": "random init (seed above)" if cond.random_seed is not None else "pretrained",
                "pooling": pooling,
                "dims": {v: list(a.shape[1:]) if v != "layers" else [a.shape[0], a.shape[2]] for v, a in views.items()},
                "dataset_sha256": sha,
                "dataset_file": data_file,
                "split": key,
                "row_ids": table["row_id"].astype(str).tolist(),
                "n_rows": int(len(table)),
                "excluded": excluded,
                "device": device,
                "dtype": str(dtype).replace("torch.", ""),
                "fp16_worst_cosine": worst,
                "versions": versions,
            }
            if cond.model == "zoo":
                meta |= zoo_meta(cond, models, enc)
            out = save_embeddings(cond.name, variant, split, views, meta, condition_dir=folder)
            log.info("%s %s: wrote %s (%s)", cond.name, key, EMBED_DIR / cond.name / variant / split,
                     ", ".join(f"{k} {list(v.shape)}" for k, v in views.items()))
    return 0
