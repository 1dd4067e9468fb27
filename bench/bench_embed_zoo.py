"""Benchmark: what each text condition costs to embed, per 1,000 captions and for the whole
`embed` stage, for SBERT and every zoo model of params.yaml `models.zoo`.

Cost depends on architecture and token counts, not on weight values, so each zoo model is built
FULL-SIZE with random weights from its published sizes (`PUBLISHED`: transformers configs, OpenCLIP's
built-in arch configs) and run through the stage's own code: a folder in the family's offline layout
(config + tokenizer, no weights) loaded by `analysis.embed.zoo.load_zoo_encoder(..., random_seed=0)`
and encoded by `analysis.embed.embed.encode_rows` (the views the stage stores; `layers` on the splits
of `embed.layers`). The cost of `zoo_<name>` is also that of its twins `zoo_<name>_random[_s<N>]`.
SBERT is timed the same way (`SbertEncoder`) on the real all-mpnet-base-v2 folder when given
(`--sbert DIR` or $SBERT_BENCH_MODEL), else on its architecture with random weights.

Tokenizers: the real ones cannot be downloaded, so each row uses the most faithful one to hand and
says which (`tokenizer` in the output): OpenCLIP ViT-B-32's own BPE (shipped in open_clip); the real
bert-base-uncased WordPiece for BERT and BLIP (all-mpnet-base-v2's vocab.txt is bert-base-uncased's
30,522 entries behind 4 MPNet specials); for RoBERTa / XLM-R (GPT-2 byte-level BPE / 250k
SentencePiece) a real 49k byte-pair vocabulary, CLIP's, with RoBERTa's specials; for SigLIP a
SentencePiece model trained on the captions (its compute is fixed at 64 tokens anyway). The
OpenCLIP towers compute on 77 tokens whatever the tokenizer (padded to their context).

Captions: the first distinct captions of VSR random/train (``--vsr-root``, default ../shared/vsr;
else the test fixture): ``--n`` at most, fewer for a heavy model (as many as fit ``--budget`` seconds
of timed runs, judged from a warm-up call; cost is linear in the captions once batches are full).
Each condition is timed ``--repeats`` times without and with `layers` (interleaved); the median
gives seconds per 1,000 captions. The stage encodes each distinct caption of a split once
(``encode_rows``), so the projection multiplies those counts (split by split, from the stage's
tables or the raw VSR files and the template set built from ``templates``) by the matching rate. Machine load is recorded per repeat: the 1-minute load
average and the CPU share that other processes took during it (Linux /proc/stat); a condition whose
repeats saw more than ``--max-others`` is re-timed (``--retries``) and the quietest attempt kept;
before each timing it waits (``--max-wait`` at most) until others leave the CPUs that free.

    python bench/bench_embed_zoo.py [--n 512] [--repeats 3] [--budget 60] [--sbert DIR]
        [--device cpu|cuda] [--dtype float32|float16] [--only NAME ...] [--md FILE] [--json FILE]
        [--runtimes results/runtimes]
    python bench/bench_embed_zoo.py --render SUMMARY.json --md FILE   # re-render, time nothing

About 12 min on 2 idle cores. On a GPU: ``--device cuda --n 4096 --dtype float16``. Prints a JSON
summary; ``--md`` writes the table ready for the README; with ``--runtimes`` (a real run's
results/runtimes) the table sets the stage's measured times beside the projection. Exits 0 (no target).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from analysis.common.params import load_params, stage_settings  # noqa: E402
from analysis.common.store import SPATIAL_KEY, TEMPLATE_KEYS, TEMPLATES_KEY, parse_split_key, table_path  # noqa: E402
from analysis.embed import encoders, zoo  # noqa: E402
from analysis.embed.embed import Condition, EmbedSettings, ModelsSettings, encode_rows  # noqa: E402
from analysis.embed.zoo import ZooSpec  # noqa: E402

SEED = 0
BERT_VOCAB_SIZE = 30522
MPNET_PREFIX = 4  # all-mpnet-base-v2's vocab.txt: <s> <pad> </s> <unk>, then bert-base-uncased's 30,522, then <mask>
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


# ----------------------------------------------------------------------------- published sizes
def _roberta_like(cls_name: str, vocab_size: int) -> Callable[[], Any]:
    def make():
        import transformers

        return getattr(transformers, cls_name)(vocab_size=vocab_size, max_position_embeddings=514, type_vocab_size=1,
                                               layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    return make


def _bert():
    from transformers import BertConfig

    return BertConfig()  # the defaults are bert-base-uncased's


def _blip():
    from transformers import BlipConfig

    # Salesforce/blip-itm-base-coco: BERT-base text encoder (30,524 tokens, with cross-attention the
    # text-only pass skips), ViT-B/16 at 384 px, 256-d image-text projections
    return BlipConfig(vision_config={"image_size": 384}, image_text_hidden_size=256)


def _siglip(pad_id: int, eos_id: int):
    from transformers import SiglipConfig

    # the defaults are google/siglip-base-patch16-224's (text 12 x 768, 32,000 tokens, context 64);
    # special ids follow the stand-in tokenizer's
    return SiglipConfig(text_config={"pad_token_id": pad_id, "eos_token_id": eos_id, "bos_token_id": None})


PUBLISHED: dict[str, Callable[[], Any]] = {  # hub id -> the config of the published checkpoint
    "FacebookAI/roberta-base": _roberta_like("RobertaConfig", 50265),
    "FacebookAI/xlm-roberta-base": _roberta_like("XLMRobertaConfig", 250002),
    "google-bert/bert-base-uncased": _bert,
    "Salesforce/blip-itm-base-coco": _blip,
}
SIGLIP_IDS = {"google/siglip-base-patch16-224"}
HF_TOWER = {"roberta-ViT-B-32": "FacebookAI/roberta-base", "xlm-roberta-base-ViT-B-32": "FacebookAI/xlm-roberta-base"}


# ----------------------------------------------------------------------------- tokenizers
@dataclass
class Tokenizers:
    """The stand-in tokenizers, built once; each ``save_*`` writes one into a model folder and
    returns (label, why)."""

    captions: list[str]
    bert_vocab: Path | None  # a real bert-base-uncased vocab.txt (from all-mpnet-base-v2's), if any
    tmp: Path
    _cache: dict[str, Any] = field(default_factory=dict)

    def _wordpiece(self, **kw):
        from transformers import BertTokenizer

        return BertTokenizer(vocab_file=str(self.bert_vocab), do_lower_case=True, model_max_length=512, **kw)

    def save_bert(self, folder: Path, blip: bool = False) -> tuple[str, str]:
        if self.bert_vocab is None:
            sys.path.insert(0, str(ROOT / "tests/fixtures"))
            from make_tiny_models import bert_tokenizer

            kw = dict(extra=("[DEC]", "[ENC]"), bos_token="[DEC]") if blip else {}
            bert_tokenizer(self.captions, max_length=512, **kw).save_pretrained(folder)
            return ("WordPiece of the captions' words (proxy)",
                    "no bert-base-uncased vocabulary here (give --sbert DIR): whole caption words, so token counts "
                    "may run slightly low")
        if blip:  # blip-itm-base-coco's tokenizer: bert-base-uncased + bos [DEC] (30522) + [ENC] (30523)
            tok = self._wordpiece(bos_token="[DEC]")
            tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
            tok.save_pretrained(folder)
            return ("bert-base-uncased WordPiece + [DEC]/[ENC] (real)",
                    "BLIP's tokenizer is bert-base-uncased's vocabulary plus two specials")
        self._wordpiece().save_pretrained(folder)
        return "bert-base-uncased WordPiece (real)", "bert-base-uncased's vocab.txt, taken from all-mpnet-base-v2's"

    def roberta_bpe(self):
        """OpenCLIP's packaged CLIP BPE (49,408 entries, lower-cased) as a fast tokenizer with
        RoBERTa's specials (<s> 0, <pad> 1, </s> 2, <unk> 3) and post-processor."""
        if "roberta" in self._cache:
            return self._cache["roberta"]
        from open_clip.tokenizer import SimpleTokenizer
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        sys.path.insert(0, str(ROOT / "tests/fixtures"))
        from make_tiny_models import CLIP_SPLIT

        st = SimpleTokenizer()
        vocab = {t: i for i, t in enumerate(ROBERTA_SPECIALS)}
        specials = set(st.all_special_ids)
        for piece, idx in sorted(st.encoder.items(), key=lambda kv: kv[1]):
            if idx not in specials:
                vocab.setdefault(piece, len(vocab))
        merges = [pair for pair, _ in sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", continuing_subword_prefix="",
                                   end_of_word_suffix="</w>", fuse_unk=False))
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Strip(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.add_special_tokens(ROBERTA_SPECIALS + ["<mask>"])
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=False,
                                                          add_prefix_space=False)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                       cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                       model_max_length=512)
        check = [len(st.encode(c)) + 2 for c in self.captions[:200]]
        got = [len(i) for i in fast(self.captions[:200])["input_ids"]]
        if check != got:
            raise RuntimeError("the re-wrapped CLIP BPE does not split captions as open_clip's SimpleTokenizer does")
        self._cache["roberta"] = fast
        return fast

    def save_roberta(self, folder: Path, xlmr: bool = False) -> tuple[str, str]:
        self.roberta_bpe().save_pretrained(folder)
        real = "XLM-R's 250k SentencePiece" if xlmr else "GPT-2's 50k byte-level BPE"
        return ("CLIP's 49k BPE with RoBERTa specials (proxy)",
                f"{real} cannot be had offline; a real byte-pair vocabulary of the same kind and size: on VSR "
                "captions it splits like real BPE / WordPiece (about 10 tokens a caption)")

    def save_siglip(self, folder: Path) -> tuple[str, str, int, int]:
        """A SentencePiece Unigram model trained on the captions (SigLIP's layout: pad 0, eos 1, unk 2)."""
        import io
        import re

        import sentencepiece as spm
        from transformers import SiglipTokenizer

        sentences = sorted({re.sub(r"[^\w\s]", "", c.lower()) for c in self.captions})
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, vocab_size=4000,
                                       model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                       character_coverage=1.0, num_threads=1, hard_vocab_limit=False,
                                       minloglevel=2, shuffle_input_sentence=False)
        path = self.tmp / "spiece.model"
        path.write_bytes(buf.getvalue())
        tok = SiglipTokenizer(str(path), model_max_length=64)
        tok.save_pretrained(folder)
        return ("SentencePiece trained on the captions (proxy)",
                "SigLIP's 32k SentencePiece cannot be had offline; its compute is fixed at 64 tokens (padded, "
                "no mask), so only the `mean` view's token count depends on it", tok.pad_token_id, tok.eos_token_id)


# ----------------------------------------------------------------------------- model folders
def build_zoo_folder(spec: ZooSpec, folder: Path, toks: Tokenizers) -> tuple[ZooSpec, str, str]:
    """``folder`` in the family's offline layout (config + tokenizer, no weights), and the spec
    that loads it; returns (spec, tokenizer label, why)."""
    folder.mkdir(parents=True)
    if spec.family == "open_clip":
        if spec.arch in HF_TOWER:
            PUBLISHED[HF_TOWER[spec.arch]]().save_pretrained(folder)
            label, why = toks.save_roberta(folder, xlmr="xlm" in spec.arch)
        elif spec.arch == "ViT-B-32":
            label, why = "OpenCLIP's own BPE (real)", "bpe_simple_vocab_16e6.txt.gz ships inside open_clip"
        else:
            raise SystemExit(f"no published sizes known for open_clip arch {spec.arch!r}: add it to HF_TOWER")
    elif spec.family == "siglip":
        if spec.hub_id not in SIGLIP_IDS:
            raise SystemExit(f"no published sizes known for {spec.hub_id!r}")
        label, why, pad, eos = toks.save_siglip(folder)
        _siglip(pad, eos).save_pretrained(folder)
    else:
        if spec.hub_id not in PUBLISHED:
            raise SystemExit(f"no published sizes known for {spec.hub_id!r}: add its config to PUBLISHED")
        PUBLISHED[spec.hub_id]().save_pretrained(folder)
        if "bert-base" in spec.hub_id or spec.family == "blip_text":
            label, why = toks.save_bert(folder, blip=spec.family == "blip_text")
        else:
            label, why = toks.save_roberta(folder, xlmr="xlm" in spec.hub_id)
    return spec.model_copy(update={"path": str(folder)}), label, why


def text_params(enc: Any) -> tuple[float, float]:
    """(parameters of the text path that encode_text runs, all parameters loaded), in millions."""
    def count(m):
        return sum(p.numel() for p in m.parameters()) / 1e6

    if isinstance(enc, encoders.SbertEncoder):
        return count(enc.transformer), count(enc.model)
    m = enc.model
    if isinstance(enc, zoo.OpenClipEncoder):
        return count(m) - count(m.visual), count(m)
    if isinstance(enc, zoo.BlipTextEncoder):
        return count(m.text_encoder) + count(m.text_proj), count(m)
    if isinstance(enc, zoo.SiglipEncoder):
        return count(m.text_model), count(m)
    return count(m), count(m)


def describe(enc: Any, spec: ZooSpec | None) -> tuple[str, str]:
    """(architecture, what the timed path computes) in a few words."""
    if isinstance(enc, encoders.SbertEncoder):
        c = enc.transformer.config
        return (f"MPNet {c.num_hidden_layers} x {c.hidden_size}, vocab {c.vocab_size:,}",
                "mean pooling; `layers` is a second pass over the captions")
    if isinstance(enc, zoo.OpenClipEncoder):
        ctx = enc.tokenizer.context_length
        if enc.hf_tower:
            c = enc.model.text.config
            arch = f"OpenCLIP {spec.arch}: {c.model_type} tower {c.num_hidden_layers} x {c.hidden_size} + MLP proj"
        else:
            t = enc.model.transformer
            arch = f"OpenCLIP {spec.arch}: causal text transformer {t.layers} x {t.width}"
        if hasattr(enc, "_trim"):  # the zoo path that trims the padding and runs the tower once
            return arch, f"padded to {ctx} by the tokenizer, computed up to each batch's longest caption; one pass"
        return arch, (f"every caption computed at {ctx} tokens; the tower runs twice a batch (encode_text, "
                      "then the hidden states for `mean`)")
    c = enc.model.config
    if isinstance(enc, zoo.BlipTextEncoder):
        t = c.text_config
        return (f"BLIP ITR text encoder (BERT) {t.num_hidden_layers} x {t.hidden_size}, vocab {t.vocab_size:,}",
                "text-only pass (cross-attention skipped)")
    if isinstance(enc, zoo.SiglipEncoder):
        t = c.text_config
        return (f"SigLIP text {t.num_hidden_layers} x {t.hidden_size}, vocab {t.vocab_size:,}",
                f"every caption padded to {enc.max_length} tokens, no mask (as trained)")
    return f"{c.model_type} {c.num_hidden_layers} x {c.hidden_size}, vocab {c.vocab_size:,}", "padded per batch"


# ----------------------------------------------------------------------------- captions and counts
def vsr_table(variant: str, split: str, vsr_root: Path):
    """The stage's table for one VSR split: data/vsr's parquet where the vsr stage ran, else the raw
    JSONL under ``vsr_root`` validated and normalized as the vsr stage does."""
    import pandas as pd

    path = ROOT / table_path(variant, split)
    if path.exists():
        return pd.read_parquet(path), str(path)
    from analysis.data.relations import load_meta_categories
    from analysis.data.vsr_format import normalize, read_split

    raw = vsr_root / variant / f"{split}.jsonl"
    if not raw.exists():
        return None, str(raw)
    meta, _ = load_meta_categories()
    with raw.open("rb") as fh:
        return normalize(read_split(fh, meta, file=str(raw)), variant, split), str(raw)


def template_tables(params: dict, params_path: str, vsr_root: Path) -> dict[str, Any]:
    """The template set's tables as the `templates` stage builds them (data/templates where it ran)."""
    import pandas as pd

    from analysis.data import templates as tp
    from analysis.data.relations import load_meta_categories, relation_counts

    out = {key: pd.read_parquet(ROOT / table_path(*parse_split_key(key))) for key in TEMPLATE_KEYS
           if (ROOT / table_path(*parse_split_key(key))).exists()}
    if len(out) == len(TEMPLATE_KEYS):
        return out
    cfg = stage_settings(tp.TemplatesSettings, params, "templates", params_path)
    meta, _ = load_meta_categories()
    if cfg.relations:
        relations = list(cfg.relations)
    else:
        vsr, _ = vsr_table(cfg.variant, cfg.split, vsr_root)
        if vsr is None:
            return out
        relations = list(relation_counts(vsr["relation"], cfg.min_count).index)
    pairs = [tuple(p) for p in cfg.pairs] if cfg.pairs else tp.noun_pairs(cfg.nouns)
    out[TEMPLATES_KEY] = tp.generate(pairs, relations, meta, cfg.template, cfg.verbal_template, cfg.verbal)
    if cfg.spatial is not None:
        out[SPATIAL_KEY] = tp.generate_spatial(pairs, cfg.spatial, meta)
    return out


def stage_counts(params: dict, params_path: str, cfg: EmbedSettings, vsr_root: Path
                 ) -> tuple[dict[str, dict], list[str]]:
    """Per split key of ``embed.splits``: rows, distinct captions (what the stage encodes) and
    whether it stores `layers`; plus every distinct caption seen (for the stand-in tokenizers)."""
    templates = template_tables(params, params_path, vsr_root)
    counts, every = {}, set()
    for key in cfg.splits:
        if key in TEMPLATE_KEYS:
            table, source = templates.get(key), "templates stage (built here from params)"
        else:
            table, source = vsr_table(*parse_split_key(key), vsr_root)
        if table is None:
            counts[key] = {"rows": None, "distinct": None, "layers": key in cfg.layers.splits, "source": source}
            continue
        caps = table["caption"].astype(str).tolist()
        every.update(caps)
        counts[key] = {"rows": len(caps), "distinct": len(set(caps)), "layers": key in cfg.layers.splits,
                       "source": source}
    return counts, sorted(every)


def bench_captions(vsr_root: Path, n: int) -> tuple[list[str], str]:
    """The first ``n`` distinct captions of VSR random/train (else the fixture's, repeated with a
    counter so they stay distinct)."""
    table, source = vsr_table("random", "train", vsr_root)
    if table is not None:
        caps = list(dict.fromkeys(table["caption"].astype(str)))
        return caps[:n], source
    sys.path.insert(0, str(ROOT / "tests/fixtures"))
    from make_tiny_models import fixture_captions

    base = list(dict.fromkeys(fixture_captions()))
    caps = [c if i < len(base) else f"{c[:-1]} {i // len(base)}." for i, c in
            ((i, base[i % len(base)]) for i in range(n))]
    return caps, "tests/fixtures/vsr (repeated, numbered)"


# ----------------------------------------------------------------------------- timing
def cpu_jiffies() -> tuple[int, int] | None:
    """(busy, steal) jiffies of the whole machine (Linux), None elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields[:8]) - idle - steal, steal


def timed(fn: Callable[[], Any], device: str) -> dict[str, float | None]:
    """Wall seconds of ``fn()`` with the machine's state: load average before/after and the share
    of all CPUs that other processes used meanwhile (machine busy time minus this process's)."""
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    ncpu = os.cpu_count() or 1
    load0 = os.getloadavg()[0]
    j0, c0, t0 = cpu_jiffies(), time.process_time(), time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    wall, own = time.perf_counter() - t0, time.process_time() - c0
    j1 = cpu_jiffies()
    others = steal = None
    if j0 and j1:
        others = max(0.0, ((j1[0] - j0[0]) / hz - own) / (wall * ncpu))
        steal = (j1[1] - j0[1]) / hz / (wall * ncpu)
    return {"seconds": wall, "own_cpu_s": own, "others_share": others, "steal_share": steal,
            "load1_before": load0, "load1_after": os.getloadavg()[0]}


def others_share_idle(seconds: float) -> float | None:
    """The share of all CPUs that other processes use over ``seconds`` while this one sleeps."""
    j0 = cpu_jiffies()
    time.sleep(seconds)
    j1 = cpu_jiffies()
    if not (j0 and j1):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (j1[0] - j0[0]) / hz / (seconds * (os.cpu_count() or 1))


def wait_for_quiet(args) -> dict[str, Any]:
    """Sleep until other processes use at most ``--max-others`` of the CPUs (probed over
    ``--probe`` s), at most ``--max-wait`` s; says how long it waited and what it saw last."""
    start = time.perf_counter()
    while True:
        share = others_share_idle(args.probe)
        waited = time.perf_counter() - start
        if share is None or share <= args.max_others or waited >= args.max_wait:
            return {"waited_s": round(waited, 1), "idle_others_share": share,
                    "quiet": share is None or share <= args.max_others}
        print(f"  machine busy (others {share:.0%} of the CPUs): waiting", file=sys.stderr, flush=True)
        time.sleep(args.wait)


def warm_up(cond: Condition, enc: Any, captions: list[str], device: str) -> float:
    """One untimed-for-the-table call with `layers`; returns its seconds per caption (an upper
    bound of the rate, first-call overheads included), which sizes the timed runs."""
    return timed(lambda: encode_rows(cond, enc, captions, [], True, progress=False), device)["seconds"] / len(captions)


def captions_to_time(rate: float, args, batch: int) -> int:
    """As many captions as fit ``--budget`` seconds for 2 x ``--repeats`` runs at ``rate`` s each, in
    whole batches, between ``--min-n`` and ``--n``. Cost is linear in the captions once batches are
    full, so a heavy model is timed on fewer (for padded-to-context models which captions does not
    matter at all)."""
    fit = int(args.budget / (rate * 2 * args.repeats))
    n = fit // batch * batch if fit >= batch else fit
    return max(min(args.min_n, args.n), min(args.n, n))


def time_encoder(cond: Condition, enc: Any, captions: list[str], repeats: int, device: str) -> dict[str, list]:
    """``repeats`` timings each of the stage's call without and with `layers`, interleaved."""
    runs: dict[str, list] = {"plain": [], "layers": []}
    for _ in range(repeats):
        for mode in runs:
            runs[mode].append(timed(lambda: encode_rows(cond, enc, captions, [], mode == "layers", progress=False),
                                    device))
    return runs


def summarize(runs: dict[str, list], n: int) -> dict[str, Any]:
    out = {}
    for mode, rs in runs.items():
        out[f"s_per_1000_{mode}"] = statistics.median(r["seconds"] for r in rs) / n * 1000
    shares = [r["others_share"] for rs in runs.values() for r in rs if r["others_share"] is not None]
    out["others_share_max"] = max(shares) if shares else None
    out["others_share_median"] = statistics.median(shares) if shares else None
    out["load1"] = [round(r["load1_before"], 2) for rs in runs.values() for r in rs]
    out["runs"] = runs
    return out


# ----------------------------------------------------------------------------- conditions
@dataclass
class Row:
    condition: str
    cond: Condition
    make: Callable[[], Any]  # builds the encoder (timed separately)
    spec: ZooSpec | None = None
    tokenizer: str = ""
    tokenizer_why: str = ""


def sbert_rows(args, captions: list[str], tmp: Path, batch: int, device: str) -> list[Row]:
    if args.sbert:
        folder = Path(args.sbert)
        label, why = "all-mpnet-base-v2's own (real)", "the real all-mpnet-base-v2 folder was given (--sbert)"
        rows = [Row("sbert", Condition("sbert", "sbert", "text"),
                    lambda: encoders.SbertEncoder(encoders.ModelSource("sbert", folder, "bench", "path"),
                                                  device=device, batch_size=batch), None, label, why)]
        rows.append(Row("sbert_random", Condition("sbert_random", "sbert", "text", random_seed=SEED),
                        lambda: encoders.SbertEncoder(encoders.ModelSource("sbert", folder, "bench", "path"),
                                                      device=device, batch_size=batch, random_seed=SEED),
                        None, label, "the stage keeps the real folder's tokenizer and re-draws the weights (seed 0)"))
        return rows
    sys.path.insert(0, str(ROOT / "tests/fixtures"))
    from make_tiny_models import random_sbert

    folder = tmp / "sbert-random"
    random_sbert(SEED, captions=captions).save(str(folder))
    return [Row("sbert", Condition("sbert", "sbert", "text"),
                lambda: encoders.SbertEncoder(encoders.ModelSource("sbert", folder, "bench", "path"),
                                              device=device, batch_size=batch),
                None, "WordPiece of the captions' words (proxy)",
                "no all-mpnet-base-v2 folder given (--sbert): its architecture with random weights")]


def zoo_rows(models: ModelsSettings, toks: Tokenizers, tmp: Path, batch: int, device: str) -> list[Row]:
    rows = []
    for name, spec in models.zoo.items():
        local, label, why = build_zoo_folder(spec, tmp / f"zoo-{name}", toks)
        rows.append(Row(f"zoo_{name}", Condition(f"zoo_{name}", "zoo", "text", random_seed=SEED, zoo=name),
                        lambda local=local, name=name: zoo.load_zoo_encoder(local, name=f"zoo.{name}", device=device,
                                                                             batch_size=batch, random_seed=SEED),
                        spec, label, why))
    return rows


def run_row(row: Row, captions: list[str], args) -> dict[str, Any]:
    t0 = time.perf_counter()
    enc = row.make()
    build_s = time.perf_counter() - t0
    if args.dtype == "float16":
        enc.to_dtype(torch.float16)
    arch, computes = describe(enc, row.spec)
    text_m, loaded_m = text_params(enc)
    if isinstance(enc, encoders.SbertEncoder):
        lengths = [len(i) for i in enc.model.tokenizer(captions)["input_ids"]]
    else:
        lengths = enc._lengths(captions)
    quiet = wait_for_quiet(args) if args.device == "cpu" else {}
    rate = warm_up(row.cond, enc, captions[:min(args.warm, len(captions))], args.device)
    timed_caps = captions[:captions_to_time(rate, args, enc.batch_size)]
    attempts = []
    for attempt in range(args.retries + 1):
        runs = time_encoder(row.cond, enc, timed_caps, args.repeats, args.device)
        attempts.append(summarize(runs, len(timed_caps)) | {"before": quiet})
        share = attempts[-1]["others_share_max"]
        if share is None or share <= args.max_others or attempt == args.retries:
            break
        print(f"  {row.condition}: others took {share:.0%} of the CPUs; re-timing when quiet",
              file=sys.stderr, flush=True)
        quiet = wait_for_quiet(args)
    best = min(attempts, key=lambda a: a["others_share_max"] if a["others_share_max"] is not None else 0)
    del enc
    gc.collect()
    return {"condition": row.condition, "family": row.spec.family if row.spec else "sbert",
            "architecture": arch, "computes": computes, "params_text_M": round(text_m, 1),
            "params_loaded_M": round(loaded_m, 1), "tokenizer": row.tokenizer, "tokenizer_why": row.tokenizer_why,
            "tokens_mean": round(float(np.mean(lengths)), 2), "tokens_max": int(max(lengths)),
            "build_s": round(build_s, 2), "n_timed": len(timed_caps), "warmup_s_per_caption": round(rate, 4),
            "attempts": len(attempts), **best}


def project(row: dict, counts: dict[str, dict]) -> float | None:
    """Encode seconds of the whole stage: distinct captions per split times the matching rate."""
    total = 0.0
    for c in counts.values():
        if c["distinct"] is None:
            return None
        rate = row["s_per_1000_layers" if c["layers"] else "s_per_1000_plain"] / 1000
        total += c["distinct"] * rate
    return total


# ----------------------------------------------------------------------------- output
def fmt_duration(s: float | None) -> str:
    if s is None:
        return "n/a"
    return f"{s:,.0f} s ({s / 60:.0f} min)" if s >= 90 else f"{s:,.0f} s"


def params_cell(r: dict) -> str:
    """Text-path parameters, and what the encoder loads when that is more (e.g. a CLIP's image tower)."""
    text, loaded = r["params_text_M"], r["params_loaded_M"]
    return f"{text:.0f}" if loaded - text < 0.5 else f"{text:.0f} text / {loaded:.0f} loaded"


def stage_runtimes(folder: Path) -> dict[str, float]:
    """A real run's `embed` wall times by condition (results/runtimes/embed-<condition>.json)."""
    out = {}
    for path in sorted(folder.glob("embed-*.json")):
        try:
            out[path.stem.removeprefix("embed-")] = float(json.loads(path.read_text())["runtime"]["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def markdown(summary: dict) -> str:
    m = summary["machine"]
    where = (f"{m['threads']} CPU cores" if summary["device"] == "cpu" else f"{m['gpu']}, {summary['dtype']}")
    counts = summary["counts"]
    total = sum(c["distinct"] or 0 for c in counts.values())
    lay = sum(c["distinct"] or 0 for c in counts.values() if c["layers"])
    real = summary.get("stage_runtimes", {})
    lines = [
        f"| condition | architecture | params (M) | tokenizer used | s / 1,000 captions ({where}) | projected embed stage | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        share = r["others_share_max"]
        load = f"load average {min(r['load1']):.1f}-{max(r['load1']):.1f}"
        if share is not None:
            load += f", others {share:.0%} of the CPUs"
        seen = [f"`{k}` {v:,.0f} s" for k, v in real.items()
                if k == r["condition"] or (r["condition"].endswith("_random") and k.startswith(r["condition"]))]
        seen_txt = f"; a real run's stage on this machine: {', '.join(seen)}" if seen else ""
        lines.append(
            f"| `{r['condition']}` | {r['architecture']} | {params_cell(r)}"
            f" | {r['tokenizer']}; {r['tokens_mean']:.1f} tokens a caption | {r['s_per_1000_plain']:.1f}"
            f" ({r['s_per_1000_layers']:.1f} with `layers`; {r['n_timed']} captions timed) | {fmt_duration(r['projected_s'])} |"
            f" {r['computes']}{seen_txt} ({load}) |")
    zoo_total = sum(r["projected_s"] or 0 for r in summary["rows"] if r["family"] != "sbert")
    n_zoo = sum(r["family"] != "sbert" for r in summary["rows"])
    head = [
        f"Measured {summary['date']} by `bench/bench_embed_zoo.py` on the first distinct captions of VSR "
        f"random/train (up to {summary['captions']['n']}; fewer for the heavy models, as many as fit "
        f"{summary.get('budget', 60):.0f} s of timed runs), median of {summary['repeats']} runs, batch "
        f"{summary['batch_size']}, {where}, torch {m['torch']}, float32 unless said. Zoo models are built full-size "
        f"with random weights and run through the stage's own code (`load_zoo_encoder`, `encode_rows`): the cost of "
        f"`zoo_<name>` is also that of each twin `zoo_<name>_random[_s<N>]`. Projected stage = the distinct captions "
        f"the stage encodes ({total:,} per text condition, {lay:,} of them with `layers`; table below) times the "
        f"rate, without loading the model and writing the arrays. The {n_zoo} zoo models and their seed-0 twins "
        f"together: {fmt_duration(2 * zoo_total)} of `embed` on {where}. Load: the 1-minute load average counts "
        f"this process's own threads; 'others' is the share of the CPUs other processes used during the timed runs "
        f"(each condition waited for a quiet machine and was re-timed when others took more than "
        f"{summary.get('max_others', 0.25):.0%}).",
        "",
    ]
    split_rows = ["", "| split | rows | distinct captions encoded | layers |", "|---|---|---|---|"]
    for key, c in counts.items():
        split_rows.append(f"| {key} | {c['rows'] if c['rows'] is not None else 'n/a'} | "
                          f"{c['distinct'] if c['distinct'] is not None else 'n/a'} | {'yes' if c['layers'] else ''} |")
    groups: dict[tuple[str, str], list[str]] = {}
    for r in summary["rows"]:
        groups.setdefault((r["tokenizer"], r["tokenizer_why"]), []).append(f"`{r['condition']}`")
    tok_rows = ["", "Tokenizers: " + " ".join(
        f"{', '.join(conds)}: {tok}, because {why}." for (tok, why), conds in groups.items())]
    return "\n".join(head + lines + split_rows + tok_rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="distinct captions timed per condition (at most)")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds of timed runs per condition: a heavy model is timed on fewer captions")
    ap.add_argument("--min-n", type=int, default=32, help="fewest captions timed per condition")
    ap.add_argument("--warm", type=int, default=32, help="captions of the warm-up call that sizes the runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--vsr-root", default=str(ROOT.parent / "shared/vsr"), help="raw VSR {variant}/{split}.jsonl")
    ap.add_argument("--sbert", default=os.environ.get("SBERT_BENCH_MODEL"),
                    help="all-mpnet-base-v2 folder (also gives bert-base-uncased's vocabulary)")
    ap.add_argument("--only", nargs="*", help="conditions to time (default: sbert and every zoo model)")
    ap.add_argument("--max-others", type=float, default=0.25,
                    help="re-time a condition when other processes took more than this share of the CPUs")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--probe", type=float, default=5.0, help="seconds over which the machine's idle load is probed")
    ap.add_argument("--wait", type=float, default=20.0, help="seconds between probes while the machine is busy")
    ap.add_argument("--max-wait", type=float, default=900.0, help="longest wait for a quiet machine, per timing")
    ap.add_argument("--md", default=None, help="write the markdown table here")
    ap.add_argument("--json", default=None, help="write the JSON summary here too")
    ap.add_argument("--runtimes", default=str(ROOT / "results/runtimes"),
                    help="a real run's results/runtimes, whose embed times the table sets beside the projection")
    ap.add_argument("--render", default=None, metavar="JSON",
                    help="time nothing: write --md from a summary an earlier run saved with --json")
    args = ap.parse_args(argv)
    if args.render:
        summary = json.loads(Path(args.render).read_text())
        summary["stage_runtimes"] = stage_runtimes(Path(args.runtimes)) or summary.get("stage_runtimes", {})
        Path(args.md or "/dev/stdout").write_text(markdown(summary))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    torch.set_num_threads(args.threads)
    import logging

    import transformers

    transformers.logging.set_verbosity_error()  # configs built from published sizes: expected notices
    logging.getLogger().setLevel(logging.ERROR)  # open_clip: "No pretrained weights loaded" (on purpose)
    params = load_params(args.params)
    models = stage_settings(ModelsSettings, params, "models", args.params)
    cfg = stage_settings(EmbedSettings, params, "embed", args.params)
    vsr_root = Path(args.vsr_root)
    counts, every = stage_counts(params, args.params, cfg, vsr_root)
    captions, source = bench_captions(vsr_root, args.n)
    bert_vocab = None
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.sbert and (Path(args.sbert) / "vocab.txt").is_file():
            lines = (Path(args.sbert) / "vocab.txt").read_text(encoding="utf-8").split("\n")
            if lines[MPNET_PREFIX] == "[PAD]":
                bert_vocab = tmp / "bert-vocab.txt"
                bert_vocab.write_text("\n".join(lines[MPNET_PREFIX:MPNET_PREFIX + BERT_VOCAB_SIZE]) + "\n",
                                      encoding="utf-8")
        toks = Tokenizers(every or captions, bert_vocab, tmp)
        batch = cfg.batch_size.text
        rows = sbert_rows(args, every or captions, tmp, batch, args.device) + zoo_rows(models, toks, tmp, batch,
                                                                                        args.device)
        if args.only:
            rows = [r for r in rows if r.condition in args.only]
        results = []
        for row in rows:
            print(f"timing {row.condition} ...", file=sys.stderr, flush=True)
            res = run_row(row, captions, args)
            res["projected_s"] = project(res, counts)
            print(f"  {row.condition}: {res['s_per_1000_plain']:.1f} s / 1,000 ({res['s_per_1000_layers']:.1f} with "
                  f"layers), projected {fmt_duration(res['projected_s'])}, others <= "
                  f"{res['others_share_max'] if res['others_share_max'] is None else round(res['others_share_max'], 2)}",
                  file=sys.stderr, flush=True)
            results.append(res)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "device": args.device, "dtype": args.dtype, "repeats": args.repeats, "batch_size": cfg.batch_size.text,
        "budget": args.budget, "max_others": args.max_others,
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None},
        "captions": {"n": len(captions), "source": source},
        "counts": counts,
        "rows": results,
        "stage_runtimes": stage_runtimes(Path(args.runtimes)),
    }
    text = json.dumps(summary, indent=1, default=float)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if args.md:
        Path(args.md).write_text(markdown(summary))
    compact = {**summary, "rows": [{k: v for k, v in r.items() if k != "runs"} for r in results]}
    print(json.dumps(compact, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
