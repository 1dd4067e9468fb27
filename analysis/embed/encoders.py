"""Encode captions and images with SBERT and CLIP through the libraries' own code paths.

SBERT: ``SentenceTransformer.encode(..., normalize_embeddings=True)`` (mean pooling).
CLIP text: ``text_model`` -> ``pooler_output`` (final-layer EOS state, the original project's
text-only vector) and ``text_projection`` of it (``text_embeds``, exactly ``get_text_features``).
CLIP image: ``vision_model`` -> ``visual_projection`` (``image_embeds``, ``get_image_features``).
Every stored vector is L2-normalized, as the original project did. Layer-wise states (raw, not
normalized): SBERT mean-pooled over tokens, CLIP text at the EOS token, CLIP image at CLS.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from analysis.common.errors import UserError
from analysis.common.params import Settings

log = logging.getLogger(__name__)

FP16_MIN_COSINE = 0.9999
SBERT_FILES = ["*.json", "*.txt", "1_Pooling/*", "2_Normalize/*"]
CLIP_FILES = ["*.json", "*.txt"]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SKIP_FILES = ["onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.onnx"]


# ----------------------------------------------------------------------------- model sources
@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are and which exact version they are."""

    model_id: str
    local_dir: Path
    revision: str  # resolved hub commit, or "local-sha256:<hash of the folder's files>"
    origin: str = "hub"  # "hub" or "path" (a local folder given in params)


def folder_hash(path: str | Path) -> str:
    """sha256 over (relative path, file sha256) of every non-hidden file: a stable id for a
    local model folder that has no hub commit."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        fh = hashlib.sha256()
        with f.open("rb") as src:
            while block := src.read(1 << 20):
                fh.update(block)
        h.update(f"{rel}\0{fh.hexdigest()}\n".encode())
    return h.hexdigest()


class ModelUnavailableError(UserError):
    """The model's files cannot be had (no network, no local copy); the message names the
    setting to use instead."""


class ModelSpec(Settings):
    """One model of params `models`: a hub id at a pinned revision, or a local folder."""

    hub_id: str | None = None
    """Hugging Face hub id"""
    revision: str | None = None
    """the pinned hub commit"""
    path: str | None = None
    """a local model folder instead of the hub (offline use)"""


def resolve_source(spec: ModelSpec, files: Sequence[str], name: str = "model",
                   cache_dir: str | Path | None = None,
                   weights: Sequence[str] = WEIGHT_FILES) -> ModelSource:
    """A model from ``spec['path']`` (local folder) or the hub (``hub_id`` at ``revision``).

    The hub path goes through ``huggingface_hub.snapshot_download``, which honours
    ``HF_HUB_OFFLINE=1`` (then it resolves the revision from the local cache) and returns the
    snapshot folder named by the resolved commit. ``weights``: the weight file names to try in
    order (the first present is fetched); empty for a repo whose config/tokenizer only is needed."""
    hub_id = spec.hub_id
    if spec.path:
        local = Path(spec.path)
        if not local.is_dir():
            raise ModelUnavailableError(f"models.{name}.path: {local} is not a folder")
        return ModelSource(model_id=hub_id or str(local), local_dir=local,
                           revision=f"local-sha256:{folder_hash(local)}", origin="path")
    if not hub_id or not spec.revision:
        raise ValueError(f"models.{name}: set 'hub_id' and 'revision', or a local 'path'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(hub_id, revision=str(spec.revision),
                                          allow_patterns=patterns, ignore_patterns=SKIP_FILES,
                                          cache_dir=cache_dir))
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            raise ModelUnavailableError(
                f"models.{name}: cannot get {hub_id}@{spec.revision} from the Hugging Face hub "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Offline? Set "
                f"models.{name}.path in the params file to a local copy of the model folder, or "
                f"export HF_HUB_OFFLINE=1 with a Hugging Face cache that holds that revision.") from None

    local = fetch(list(files) + list(weights[:1]))
    for fallback in weights[1:]:  # older repos ship only the PyTorch pickle
        if any((local / w).exists() for w in weights):
            break
        local = fetch(list(files) + [fallback])
    if weights and not any((local / w).exists() for w in weights):
        raise FileNotFoundError(f"models.{name}: no weights ({', '.join(weights)}) in {hub_id}@"
                                f"{spec.revision} ({local})")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in {"0", "", "false", "False"}
    log.info("%s: %s@%s -> commit %s%s", name, hub_id, spec.revision, local.name,
             " (offline cache)" if offline else "")
    return ModelSource(model_id=hub_id, local_dir=local, revision=local.name)


# ----------------------------------------------------------------------------- small pure helpers
def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"cannot L2-normalize {int((norms == 0).sum())} all-zero vector(s)")
    return x / norms


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between matching rows of ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def half_precision_ok(ref: np.ndarray, half: np.ndarray, threshold: float = FP16_MIN_COSINE
                      ) -> tuple[bool, float]:
    """Use float16 only if every row's cosine with its float32 counterpart is >= ``threshold``.
    Returns (decision, worst cosine); non-finite half-precision output always fails."""
    if ref.shape != half.shape:
        raise ValueError(f"float32 and float16 outputs differ in shape: {ref.shape} vs {half.shape}")
    if not np.isfinite(half).all():
        return False, float("nan")
    worst = float(row_cosines(ref, half).min())
    return worst >= threshold, worst


def length_order(lengths: Sequence[int]) -> np.ndarray:
    """Indices that sort items longest first (stable), so each batch pads little."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def concat_embeddings(image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
    """The original fusion: [image; text], each L2-normalized, concatenated, renormalized."""
    return l2_normalize(np.concatenate([l2_normalize(image_embeds), l2_normalize(text_embeds)], axis=1))


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """The token CLIP pools from, by the rule ``CLIPTextTransformer`` uses: the largest id when the
    config carries the legacy ``eos_token_id == 2`` (openai checkpoints), else the first EOS."""
    ids = input_ids.to(torch.int)
    if eos_token_id == 2:
        return ids.argmax(dim=-1)
    return (ids == eos_token_id).int().argmax(dim=-1)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tokens where ``mask`` is 1 (sentence-transformers' mean pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(-2) / m.sum(-2).clamp(min=1e-9)


def seeded_init(build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """Build a module with random weights drawn from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ----------------------------------------------------------------------------- encoders
class SbertEncoder:
    """A sentence-transformers model (optionally with its transformer re-drawn at random)."""

    def __init__(self, source: ModelSource, device: str = "cpu", batch_size: int = 64,
                 random_seed: int | None = None):
        from sentence_transformers import SentenceTransformer
        from transformers import AutoModel

        self.source, self.device, self.batch_size = source, device, batch_size
        self.model = SentenceTransformer(str(source.local_dir), device="cpu", local_files_only=True)
        if random_seed is not None:
            body = self.model[0]
            body.model = seeded_init(lambda: AutoModel.from_config(body.model.config), random_seed)
        self.model.to(device).eval()
        self.dtype = torch.float32

    @property
    def transformer(self) -> torch.nn.Module:
        return self.model[0].model

    def to_dtype(self, dtype: torch.dtype) -> None:
        self.model.to(dtype)
        self.dtype = dtype

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Unit-norm mean-pooled sentence embeddings (ST sorts by length internally)."""
        out = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=progress)
        return np.asarray(out, dtype=np.float32)

    @torch.inference_mode()
    def layers(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(L, N, D): the embedding output and every layer, mean-pooled over real tokens."""
        texts = list(texts)
        lengths = [len(ids) for ids in self.model.tokenizer(
            texts, truncation=True, max_length=self.model.max_seq_length)["input_ids"]]
        cfg = self.transformer.config
        out = np.empty((cfg.num_hidden_layers + 1, len(texts), cfg.hidden_size), dtype=np.float32)
        for idx in tqdm(batches(length_order(lengths), self.batch_size), desc="sbert layers",
                        disable=not progress):
            feats = self.model.preprocess([texts[i] for i in idx])
            ids = feats["input_ids"].to(self.device)
            mask = feats["attention_mask"].to(self.device)
            hidden = self.transformer(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            out[:, idx] = torch.stack([masked_mean(h, mask) for h in hidden]).float().cpu().numpy()
        return out


class ClipEncoder:
    """A transformers CLIPModel with its tokenizer and image processor."""

    def __init__(self, source: ModelSource, device: str = "cpu", batch_size: int = 64,
                 image_batch_size: int = 32, random_seed: int | None = None, image_workers: int = 0):
        from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

        self.source, self.device = source, device
        self.batch_size, self.image_batch_size, self.image_workers = batch_size, image_batch_size, image_workers
        src = str(source.local_dir)
        if random_seed is None:
            self.model = CLIPModel.from_pretrained(src, local_files_only=True)
        else:
            config = CLIPConfig.from_pretrained(src, local_files_only=True)
            self.model = seeded_init(lambda: CLIPModel(config), random_seed)
        self.model.to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
        self.processor = CLIPImageProcessor.from_pretrained(src, local_files_only=True)
        self.max_length = self.model.config.text_config.max_position_embeddings
        self.dtype = torch.float32

    def to_dtype(self, dtype: torch.dtype) -> None:
        self.model.to(dtype)
        self.dtype = dtype

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], layers: bool = False, progress: bool = False
                    ) -> dict[str, np.ndarray]:
        """``pooler_output`` and ``text_embeds`` (both unit norm); with ``layers`` also the EOS
        state of the embedding output and every layer, (L, N, D)."""
        texts = list(texts)
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        tc = self.model.config.text_config
        pooled = np.empty((len(texts), tc.hidden_size), dtype=np.float32)
        proj = np.empty((len(texts), self.model.config.projection_dim), dtype=np.float32)
        lay = np.empty((tc.num_hidden_layers + 1, len(texts), tc.hidden_size), dtype=np.float32) if layers else None
        for idx in tqdm(batches(length_order(lengths), self.batch_size), desc="clip text", disable=not progress):
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            out = self.model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                        output_hidden_states=layers)
            pooled[idx] = out.pooler_output.float().cpu().numpy()
            proj[idx] = self.model.text_projection(out.pooler_output).float().cpu().numpy()
            if layers:
                pos = eos_positions(enc["input_ids"], self.model.text_model.eos_token_id)
                rows = torch.arange(len(idx), device=pos.device)
                lay[:, idx] = torch.stack([h[rows, pos] for h in out.hidden_states]).float().cpu().numpy()
        views = {"pooler_output": l2_normalize(pooled), "text_embeds": l2_normalize(proj)}
        if layers:
            views["layers"] = lay
        return views

    @torch.inference_mode()
    def encode_images(self, paths: Sequence[str | Path], layers: bool = False, progress: bool = False
                      ) -> dict[str, np.ndarray]:
        """``image_embeds`` (unit norm) for each file; with ``layers`` also the CLS state of the
        embedding output and every layer, (L, N, D). Files are decoded in ``image_workers``
        DataLoader workers."""
        vc = self.model.config.vision_config
        n = len(paths)
        proj = np.empty((n, self.model.config.projection_dim), dtype=np.float32)
        lay = np.empty((vc.num_hidden_layers + 1, n, vc.hidden_size), dtype=np.float32) if layers else None
        loader = torch.utils.data.DataLoader(
            _ImageFiles(list(paths), self.processor), batch_size=self.image_batch_size,
            num_workers=self.image_workers, pin_memory=self.device == "cuda",
            persistent_workers=False)
        start = 0
        for pixels in tqdm(loader, desc="clip images", disable=not progress):
            pixels = pixels.to(self.device, self.dtype)
            out = self.model.vision_model(pixel_values=pixels, output_hidden_states=layers)
            stop = start + pixels.shape[0]
            proj[start:stop] = self.model.visual_projection(out.pooler_output).float().cpu().numpy()
            if layers:
                lay[:, start:stop] = torch.stack([h[:, 0] for h in out.hidden_states]).float().cpu().numpy()
            start = stop
        views = {"image_embeds": l2_normalize(proj)}
        if layers:
            views["layers"] = lay
        return views


class _ImageFiles(torch.utils.data.Dataset):
    """Decode one image file into CLIP pixel values (runs inside DataLoader workers)."""

    def __init__(self, paths: list[str | Path], processor: Any):
        self.paths, self.processor = paths, processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as img:
                rgb = img.convert("RGB")
        except Exception as exc:  # the manifest said ok, so this is a real error
            raise RuntimeError(f"cannot decode image {self.paths[i]}: {exc}") from exc
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"][0]


# ----------------------------------------------------------------------------- precision
def choose_half(encoder: SbertEncoder | ClipEncoder, probe: Callable[[], dict[str, np.ndarray]],
                threshold: float = FP16_MIN_COSINE) -> tuple[torch.dtype, float]:
    """Run ``probe`` (views of a sample) in float32 and float16; keep float16 only if every view
    agrees (see ``half_precision_ok``). Leaves the encoder in the chosen dtype."""
    encoder.to_dtype(torch.float32)
    ref = probe()
    encoder.to_dtype(torch.float16)
    try:
        half = probe()
    except RuntimeError as exc:  # an op without a half kernel on this device
        log.info("float16 unavailable (%s): using float32", exc)
        encoder.to_dtype(torch.float32)
        return torch.float32, float("nan")
    checks = [half_precision_ok(ref[k].reshape(-1, ref[k].shape[-1]), half[k].reshape(-1, half[k].shape[-1]),
                                threshold) for k in ref]
    ok = all(c[0] for c in checks)
    worst = min((c[1] for c in checks), default=float("nan"))
    log.info("float16 vs float32: worst cosine %.6f over views %s -> %s", worst, sorted(ref),
             "float16" if ok else "float32")
    if not ok:
        encoder.to_dtype(torch.float32)
    return (torch.float16 if ok else torch.float32), worst


def library_versions() -> dict[str, str]:
    import platform

    import huggingface_hub
    import PIL
    import sentence_transformers
    import tokenizers
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "sentence-transformers": sentence_transformers.__version__,
            "tokenizers": tokenizers.__version__, "huggingface_hub": huggingface_hub.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__}
