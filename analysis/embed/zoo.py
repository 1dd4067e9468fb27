"""The model zoo's text encoders, each through its own library, behind one interface.

``load_zoo_encoder(spec, name)`` returns an encoder whose ``encode_text(texts, layers=False,
progress=False)`` gives ``{view: array}``; ``encoder.views`` names the views, ``encoder.primary``
the one the study reads first, ``encoder.pooling`` says what each is. Families (``ZooSpec.family``):

- ``hf_text`` (transformers ``AutoModel`` + ``AutoTokenizer``: RoBERTa, XLM-R, BERT): ``mean``
  (last layer mean-pooled over real tokens; primary where the model has no trained pooler),
  ``cls`` (last layer at the first token, ``<s>`` / ``[CLS]``) and, for BERT, ``trained``
  (``pooler_output``: CLS through the NSP-trained dense + tanh pooler; primary).
- ``open_clip`` (OpenCLIP): ``trained`` (``model.encode_text``: the text tower's own pooling and
  projection; HF towers: ``HFTextEncoder`` pooler, e.g. mean, + ``proj``; OpenAI-style tower:
  ``ln_final`` at the EOS/argmax token + ``text_projection``), ``mean`` (the last transformer
  block's output mean-pooled over real tokens).
- ``blip_text`` (transformers ``BlipForImageTextRetrieval``): ``trained`` (the unimodal text
  feature of BLIP's image-text contrast: ``text_encoder`` without an image, CLS state,
  ``text_proj``), ``mean``.
- ``siglip`` (transformers ``SiglipModel``): ``trained`` (``get_text_features``: final layer
  norm at the last position + ``head``), ``mean``. SigLIP was trained on text padded to 64
  tokens with no attention mask, so texts are padded ``max_length`` and the model sees no mask;
  ``mean`` averages the real tokens (through the EOS) only.

Every stored vector is L2-normalized; ``layers`` (L+1, N, D): the embedding output and every
layer, raw, pooled like ``mean`` (over real tokens), except OpenCLIP's OpenAI-style tower, whose
layers are taken at the EOS/argmax token its trained pooling reads. A ``mean`` vector is
therefore the L2-normalized last entry of mean-pooled ``layers`` (for SigLIP and OpenAI-style
towers: before the tower's final layer norm). ``random_seed`` re-draws every weight from the
config (``seeded_init``), keeping architecture and tokenizer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import model_validator
from tqdm.auto import tqdm

from analysis.embed.encoders import (ModelSource, ModelSpec, ModelUnavailableError, batches, l2_normalize,
                                     length_order, masked_mean, resolve_source, seeded_init)

log = logging.getLogger(__name__)

Family = Literal["hf_text", "open_clip", "blip_text", "siglip"]
FAMILIES: tuple[str, ...] = ("hf_text", "open_clip", "blip_text", "siglip")
HF_FILES = ["*.json", "*.txt", "*.model"]  # configs, vocabularies, SentencePiece models
OPEN_CLIP_FILES = ["open_clip_config.json", "*.txt.gz"]
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPEN_CLIP_BPE = "bpe_simple_vocab_16e6.txt.gz"  # a folder's own SimpleTokenizer merges (else open_clip's)
TRAINED_POOLER = {"bert"}  # hf_text model types whose pooler_output was trained (NSP)
SIGLIP_CONTEXT = 64


class ZooSpec(ModelSpec):
    """One zoo model: a family, and a hub id at a pinned revision or a local folder."""

    family: Family
    """which library loads it: hf_text, open_clip, blip_text or siglip"""
    arch: str | None = None
    """open_clip: the architecture name (e.g. roberta-ViT-B-32)"""
    pretrained: str | None = None
    """open_clip: the pretrained tag (e.g. laion2b_s12b_b32k); its hub repo must be hub_id"""
    text_hub_id: str | None = None
    """open_clip with a transformers text tower: the hub repo of that tower's config and tokenizer"""
    text_revision: str | None = None
    """the pinned commit of text_hub_id"""

    @model_validator(mode="after")
    def _family_fields(self) -> "ZooSpec":
        if self.family == "open_clip":
            if not self.arch:
                raise ValueError("open_clip: set 'arch' (an open_clip architecture name)")
        elif any(v is not None for v in (self.arch, self.pretrained, self.text_hub_id, self.text_revision)):
            raise ValueError(f"{self.family}: 'arch', 'pretrained', 'text_hub_id' and 'text_revision' "
                             "are open_clip settings")
        return self


class ZooSpecError(ModelUnavailableError):
    """A zoo model's settings do not describe a model its library can build."""


# ----------------------------------------------------------------------------- shared machinery
class ZooEncoder:
    """Batching, length ordering, normalization and layer stacking shared by the families;
    a family implements ``_lengths`` (token counts, for ordering) and ``_batch`` (one batch's
    pooled vectors and, when asked, its pooled layer stack)."""

    views: tuple[str, ...] = ()
    primary: str = ""
    pooling: dict[str, str] = {}

    def __init__(self, source: ModelSource, model: torch.nn.Module, device: str, batch_size: int):
        self.source, self.model, self.device, self.batch_size = source, model, device, batch_size
        self.model.to(device).eval()
        self.dtype = torch.float32

    def to_dtype(self, dtype: torch.dtype) -> None:
        self.model.to(dtype)
        self.dtype = dtype

    def _lengths(self, texts: list[str]) -> list[int]:
        raise NotImplementedError

    def _batch(self, texts: list[str], layers: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        raise NotImplementedError

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], layers: bool = False, progress: bool = False
                    ) -> dict[str, np.ndarray]:
        """Every view of ``views`` (unit norm, (N, D)) and, with ``layers``, ``layers`` (L+1, N, D)."""
        texts = list(texts)
        if not texts:
            raise ValueError("encode_text: no texts")
        out: dict[str, np.ndarray] = {}
        stack: np.ndarray | None = None
        for idx in tqdm(batches(length_order(self._lengths(texts)), self.batch_size),
                        desc=f"{type(self).__name__} text", disable=not progress):
            pooled, hidden = self._batch([texts[i] for i in idx], layers)
            for view, vec in pooled.items():
                if view not in out:
                    out[view] = np.empty((len(texts), vec.shape[-1]), dtype=np.float32)
                out[view][idx] = vec.float().cpu().numpy()
            if layers:
                if stack is None:
                    stack = np.empty((hidden.shape[0], len(texts), hidden.shape[-1]), dtype=np.float32)
                stack[:, idx] = hidden.float().cpu().numpy()
        views = {view: l2_normalize(out[view]) for view in self.views}
        if layers:
            views["layers"] = stack
        return views


def pooled_layers(hidden_states: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """(L+1, B, D): each layer's states mean-pooled over the tokens where ``mask`` is 1."""
    return torch.stack([masked_mean(h, mask) for h in hidden_states])


def tokens_at(hidden_states: Sequence[torch.Tensor], pos: torch.Tensor) -> torch.Tensor:
    """(L+1, B, D): each layer's state at token ``pos[b]`` of row b."""
    rows = torch.arange(pos.shape[0], device=pos.device)
    return torch.stack([h[rows, pos] for h in hidden_states])


def hf_max_length(tokenizer: Any, config: Any) -> int:
    """The tokenizer's own limit, or (when it sets none) the config's position table (RoBERTa-style
    models lose ``pad_token_id + 1`` positions to their offset)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < 1_000_000:
        return int(limit)
    offset = config.pad_token_id + 1 if config.model_type in {"roberta", "xlm-roberta"} else 0
    return int(config.max_position_embeddings - offset)


# ----------------------------------------------------------------------------- transformers text encoders
class HfTextEncoder(ZooEncoder):
    """A transformers encoder (RoBERTa, XLM-R, BERT) through ``AutoModel`` / ``AutoTokenizer``."""

    def __init__(self, source: ModelSource, device: str = "cpu", batch_size: int = 64,
                 random_seed: int | None = None):
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        src = str(source.local_dir)
        if random_seed is None:
            model = AutoModel.from_pretrained(src, local_files_only=True)
        else:
            config = AutoConfig.from_pretrained(src, local_files_only=True)
            model = seeded_init(lambda: AutoModel.from_config(config), random_seed)
        super().__init__(source, model, device, batch_size)
        self.tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
        self.max_length = hf_max_length(self.tokenizer, model.config)
        trained = model.config.model_type in TRAINED_POOLER and getattr(model, "pooler", None) is not None
        self.views = ("trained", "mean", "cls") if trained else ("mean", "cls")
        self.primary = "trained" if trained else "mean"
        self.pooling = {"mean": "last layer mean-pooled over non-padding tokens, L2-normalized",
                        "cls": "last layer at the first token (<s> / [CLS]), L2-normalized",
                        "layers": "embedding output and every layer, mean-pooled over non-padding tokens, raw"}
        if trained:
            self.pooling["trained"] = "pooler_output: [CLS] through the trained dense + tanh pooler, L2-normalized"

    def _lengths(self, texts: list[str]) -> list[int]:
        return [len(i) for i in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]

    def _batch(self, texts, layers):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        out = self.model(**enc, output_hidden_states=layers)
        last, mask = out.last_hidden_state, enc["attention_mask"]
        pooled = {"mean": masked_mean(last, mask), "cls": last[:, 0]}
        if "trained" in self.views:
            pooled["trained"] = out.pooler_output
        return pooled, (pooled_layers(out.hidden_states, mask) if layers else None)


# ----------------------------------------------------------------------------- OpenCLIP
def open_clip_config(folder: Path, arch: str) -> dict[str, Any]:
    """The folder's ``open_clip_config.json`` ``model_cfg`` (OpenCLIP's hub / ``local-dir:``
    layout), else open_clip's built-in config of ``arch``."""
    import open_clip

    path = folder / "open_clip_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        return cfg.get("model_cfg", cfg)
    return open_clip.get_model_config(arch)


class OpenClipEncoder(ZooEncoder):
    """An OpenCLIP model built by ``open_clip.create_model`` from the arch's config (the folder's
    own when it has one) with the folder's weights. A transformers text tower (``hf_model_name``)
    is built from ``text_dir`` (its ``config.json`` and tokenizer), never from the hub."""

    def __init__(self, source: ModelSource, arch: str, text_dir: Path | None = None, device: str = "cpu",
                 batch_size: int = 64, random_seed: int | None = None, name: str = "model"):
        import open_clip
        from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer, SimpleTokenizer

        folder = Path(source.local_dir)
        cfg = open_clip_config(folder, arch)
        cfg.pop("custom_text", None)  # create_model decides the class from the arch
        text_cfg = dict(cfg["text_cfg"])
        self.hf_tower = bool(text_cfg.get("hf_model_name"))
        if self.hf_tower:
            text_dir = Path(text_dir or folder)
            if not (text_dir / "config.json").is_file():
                raise ModelUnavailableError(
                    f"models.{name}.path: {text_dir} lacks the transformers text tower's config.json and "
                    f"tokenizer ({text_cfg['hf_model_name']}); put them beside open_clip_config.json")
            text_cfg.update(hf_model_name=str(text_dir), hf_tokenizer_name=str(text_dir), hf_model_pretrained=False)
        cfg["text_cfg"] = text_cfg
        weights = next((folder / w for w in OPEN_CLIP_WEIGHTS if (folder / w).is_file()), None)
        if random_seed is None and weights is None:
            raise ModelUnavailableError(f"models.{name}.path: no OpenCLIP weights ({', '.join(OPEN_CLIP_WEIGHTS)}) "
                                        f"in {folder}")

        def build(pretrained: str | None) -> torch.nn.Module:
            return open_clip.create_model(arch, pretrained=pretrained, load_weights=pretrained is not None,
                                          pretrained_text=False, pretrained_image=False, **cfg)

        model = build(str(weights)) if random_seed is None else seeded_init(lambda: build(None), random_seed)
        super().__init__(source, model, device, batch_size)
        context = int(text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH))
        kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
        if self.hf_tower:
            self.tokenizer = HFTokenizer(str(text_dir), context_length=context, **kwargs)
            self.pad_id = model.text.config.pad_token_id
        else:
            if (folder / OPEN_CLIP_BPE).is_file():
                kwargs.setdefault("bpe_path", str(folder / OPEN_CLIP_BPE))
            self.tokenizer = SimpleTokenizer(context_length=context, **kwargs)
        self.views, self.primary = ("trained", "mean"), "trained"
        token = "real tokens" if self.hf_tower else f"the {model.text_pool_type} (EOS) token"
        self.pooling = {
            "trained": "model.encode_text (the text tower's trained pooling and projection), L2-normalized",
            "mean": "last transformer block's output mean-pooled over real tokens, L2-normalized",
            "layers": f"embedding output and every block, pooled over {token}, raw"}

    def _lengths(self, texts: list[str]) -> list[int]:
        ids = self.tokenizer(texts)
        return self._real(ids).sum(-1).tolist()

    def _real(self, ids: torch.Tensor) -> torch.Tensor:
        """1 on the tokens a text really has: non-padding for HF towers (``HFTextEncoder``'s own
        mask), start through EOS for the OpenAI-style tower (padding is 0 after the EOS)."""
        if self.hf_tower:
            return (ids != self.pad_id).long()
        pos = self._pool_positions(ids)
        return (torch.arange(ids.shape[1], device=ids.device)[None] <= pos[:, None]).long()

    def _pool_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """The token ``text_global_pool`` reads for the model's ``text_pool_type``."""
        kind = self.model.text_pool_type
        if kind == "argmax":
            return ids.argmax(dim=-1)
        if kind == "eos":
            return (ids == self.model.text_eos_id).int().argmax(dim=-1)
        if kind in {"first", "last"}:
            return torch.full((ids.shape[0],), 0 if kind == "first" else ids.shape[1] - 1, device=ids.device)
        raise ValueError(f"open_clip text_pool_type {kind!r} pools no single token")

    def _trim(self, ids: torch.Tensor) -> torch.Tensor:
        """The columns up to the batch's last real token. OpenCLIP's tokenizers pad every text to
        the context length (77); the columns after every text's end change nothing the views read
        (HF towers mask them; the OpenAI-style tower is causal and reads its EOS token), so they
        are not computed (about 15x less work on VSR's ~10-token captions)."""
        if not self.hf_tower and self.model.text_pool_type not in {"argmax", "eos"}:
            return ids  # a pooled position that depends on the padded length ("last")
        return ids[:, : int(self._real(ids).sum(-1).max())]

    def _forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One pass of the text tower: ``model.encode_text(ids)`` (unnormalized) and the
        embedding output and every block's output, (B, T, D) each. The trained view is computed
        from the same pass as open_clip computes it (HFTextEncoder.forward / CLIP.encode_text);
        tests/embed/test_zoo.py checks it against ``encode_text`` on the untrimmed ids."""
        m = self.model
        if self.hf_tower:
            real = self._real(ids)
            out = m.text.transformer(input_ids=ids, attention_mask=real, output_hidden_states=True)
            return m.text.proj(m.text.pooler(out, real)), list(out.hidden_states)
        from open_clip.transformer import text_global_pool

        n = ids.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(ids).to(cast) + m.positional_embedding[:n].to(cast)
        mask = None if m.attn_mask is None else m.attn_mask[:n, :n]
        _, blocks = m.transformer.forward_intermediates(x, attn_mask=mask)
        pooled = text_global_pool(m.ln_final(blocks[-1]), ids, m.text_pool_type,
                                  eos_token_id=getattr(m, "text_eos_id", None))
        if m.text_projection is not None:
            pooled = m.text_projection(pooled) if isinstance(m.text_projection, torch.nn.Linear) \
                else pooled @ m.text_projection
        return pooled, [x, *blocks]

    def _batch(self, texts, layers):
        ids = self._trim(self.tokenizer(texts).to(self.device))
        trained, hidden = self._forward(ids)
        real = self._real(ids)
        pooled = {"trained": trained, "mean": masked_mean(hidden[-1], real)}
        if not layers:
            return pooled, None
        stack = pooled_layers(hidden, real) if self.hf_tower else tokens_at(hidden, self._pool_positions(ids))
        return pooled, stack


# ----------------------------------------------------------------------------- BLIP
class BlipTextEncoder(ZooEncoder):
    """BLIP's unimodal text encoder (``BlipForImageTextRetrieval.text_encoder`` without an image)."""

    def __init__(self, source: ModelSource, device: str = "cpu", batch_size: int = 64,
                 random_seed: int | None = None):
        from transformers import AutoTokenizer, BlipConfig, BlipForImageTextRetrieval

        src = str(source.local_dir)
        if random_seed is None:
            model = BlipForImageTextRetrieval.from_pretrained(src, local_files_only=True)
        else:
            config = BlipConfig.from_pretrained(src, local_files_only=True)
            model = seeded_init(lambda: BlipForImageTextRetrieval(config), random_seed)
        super().__init__(source, model, device, batch_size)
        self.tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
        self.max_length = min(hf_max_length(self.tokenizer, model.config.text_config),
                              model.config.text_config.max_position_embeddings)
        self.views, self.primary = ("trained", "mean"), "trained"
        self.pooling = {
            "trained": "text_proj(text_encoder [CLS] state, no image): BLIP's image-text contrast feature, L2-normalized",
            "mean": "text encoder's last layer mean-pooled over non-padding tokens, L2-normalized",
            "layers": "embedding output and every layer, mean-pooled over non-padding tokens, raw"}

    def _lengths(self, texts: list[str]) -> list[int]:
        return [len(i) for i in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]

    def _batch(self, texts, layers):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        mask = enc["attention_mask"]
        out = self.model.text_encoder(input_ids=enc["input_ids"], attention_mask=mask, output_hidden_states=layers)
        last = out.last_hidden_state
        pooled = {"trained": self.model.text_proj(last[:, 0]), "mean": masked_mean(last, mask)}
        return pooled, (pooled_layers(out.hidden_states, mask) if layers else None)


# ----------------------------------------------------------------------------- SigLIP
class SiglipEncoder(ZooEncoder):
    """SigLIP's text tower as trained: padded to 64 tokens ("max_length"), no attention mask."""

    def __init__(self, source: ModelSource, device: str = "cpu", batch_size: int = 64,
                 random_seed: int | None = None):
        from transformers import AutoTokenizer, SiglipConfig, SiglipModel

        src = str(source.local_dir)
        if random_seed is None:
            model = SiglipModel.from_pretrained(src, local_files_only=True)
        else:
            config = SiglipConfig.from_pretrained(src, local_files_only=True)
            model = seeded_init(lambda: SiglipModel(config), random_seed)
        super().__init__(source, model, device, batch_size)
        self.tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
        self.max_length = int(model.config.text_config.max_position_embeddings)  # 64, the trained length
        self.views, self.primary = ("trained", "mean"), "trained"
        self.pooling = {
            "trained": "get_text_features: final layer norm at the last position + head (texts padded to "
                       f"{self.max_length}, no attention mask, as trained), L2-normalized",
            "mean": "last layer (before the final layer norm) mean-pooled over real tokens through EOS, L2-normalized",
            "layers": "embedding output and every layer, mean-pooled over real tokens through EOS, raw"}

    def _lengths(self, texts: list[str]) -> list[int]:
        return [len(i) for i in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]

    def _batch(self, texts, layers):
        enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                             return_attention_mask=True, return_tensors="pt").to(self.device)
        real = enc["attention_mask"]  # for pooling only: the model, as trained, attends to padding too
        out = self.model.text_model(input_ids=enc["input_ids"], output_hidden_states=True)
        pooled = {"trained": out.pooler_output, "mean": masked_mean(out.hidden_states[-1], real)}
        return pooled, (pooled_layers(out.hidden_states, real) if layers else None)


# ----------------------------------------------------------------------------- sources and dispatch
def open_clip_hub_id(spec: ZooSpec, name: str) -> str | None:
    """The hub repo of ``spec.pretrained`` (OpenCLIP's own tag table), checked against ``hub_id``;
    also checks ``arch`` is an OpenCLIP architecture."""
    import open_clip

    if spec.arch not in open_clip.list_models():
        raise ZooSpecError(f"models.{name}.arch: {spec.arch!r} is not an open_clip architecture "
                           f"(open_clip {open_clip.__version__})")
    if not spec.pretrained:
        return spec.hub_id
    tag = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
    if not tag:
        raise ZooSpecError(f"models.{name}.pretrained: {spec.pretrained!r} is not a tag of {spec.arch} "
                           f"(known: {', '.join(open_clip.list_pretrained_tags_by_model(spec.arch))})")
    tag_hub = (tag.get("hf_hub") or "").strip("/") or None
    if spec.hub_id and tag_hub and spec.hub_id != tag_hub:
        raise ZooSpecError(f"models.{name}.hub_id: {spec.hub_id} is not the repo of {spec.arch} "
                           f"{spec.pretrained} ({tag_hub})")
    return spec.hub_id or tag_hub


def load_zoo_encoder(spec: ZooSpec, name: str = "model", device: str = "cpu", batch_size: int = 64,
                     random_seed: int | None = None, cache_dir: str | Path | None = None) -> ZooEncoder:
    """The encoder of ``spec``: its files from ``spec.path`` or the hub at the pinned revision
    (``resolve_source``: ``HF_HUB_OFFLINE`` honoured, a ``ModelUnavailableError`` naming
    ``models.<name>.path`` when they cannot be had)."""
    kw = dict(device=device, batch_size=batch_size, random_seed=random_seed)
    if spec.family == "open_clip":
        hub_id = open_clip_hub_id(spec, name)
        clip_spec = spec.model_copy(update={"hub_id": hub_id})
        source = resolve_source(clip_spec, OPEN_CLIP_FILES, name=name, cache_dir=cache_dir,
                                weights=OPEN_CLIP_WEIGHTS)
        text_dir = None
        if source.origin == "hub" and open_clip_config(source.local_dir, spec.arch)["text_cfg"].get("hf_model_name"):
            if not spec.text_hub_id or not spec.text_revision:
                raise ZooSpecError(f"models.{name}.text_hub_id: {spec.arch} has a transformers text tower; set "
                                   "text_hub_id and text_revision (its config and tokenizer), or a local 'path'")
            text = resolve_source(ModelSpec(hub_id=spec.text_hub_id, revision=spec.text_revision), HF_FILES,
                                  name=name, cache_dir=cache_dir, weights=())
            text_dir = text.local_dir
        return OpenClipEncoder(source, spec.arch, text_dir=text_dir, name=name, **kw)
    source = resolve_source(spec, HF_FILES, name=name, cache_dir=cache_dir)
    cls = {"hf_text": HfTextEncoder, "blip_text": BlipTextEncoder, "siglip": SiglipEncoder}[spec.family]
    return cls(source, **kw)
