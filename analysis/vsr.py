"""Stage `vsr`: fetch the VSR splits, verify their sha256, validate every row, parse subject and
object from each caption, attach the VSR meta-category, and write one normalized table per split.

Sources (params `data`): the folder `data.mirror` ({variant}/{split}.jsonl) when set; otherwise
the upstream GitHub repository at a pinned commit (raw file URLs) or the Hugging Face hub datasets
(`data.hf.datasets`, at `data.hf.revision`: one revision, or one per variant).

Decisions (the meta-category ones are also recorded in ``results/vsr/report.json``):

- A bad row is fatal (`VSRDataError` naming file, line and field). The files are pinned by
  sha256, so a bad row means a wrong file or a wrong assumption here, never noise to skip.
- A caption that does not parse into subject/object is *not* an error: it keeps
  ``subject``/``object`` null and ``parsed=False``, and is counted with examples in the report.
- Meta-categories come from the VSR authors' dictionary (`analysis/resources/
  vsr_rel_meta_category_dict.txt`, verbatim). It lists `among` twice (Topological and
  Unallocated): we keep its first listing, Topological, because Unallocated is the authors'
  catch-all for relations they did not place. It lacks `congruent` (one row, random/dev): we map
  it to Unallocated, the authors' own bin for relations outside their taxonomy, rather than guess a
  spatial category. Any other relation missing from the dictionary is an error.
- ``reference_frame`` is a numeric code upstream (0.0/1.0/2.0, random split only) and is stored
  as its integer text ("0", "1", "2"), null where absent. ``annotator_id`` is optional upstream
  (present on every real row) and stored as a nullable integer.
- The relation must occur in the caption as whole words, case-insensitively.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from tqdm import tqdm

from analysis import store
from analysis.cli import stage_parser
from analysis.io import atomic_path, sha256_file, write_json, write_parquet
from analysis.params import load_params, section

log = logging.getLogger("vsr")

META_DICT_PATH = Path(__file__).parent / "resources" / "vsr_rel_meta_category_dict.txt"
GITHUB_RAW = "https://raw.githubusercontent.com/{repo}/{commit}/data/splits/{variant}/{split}.jsonl"
REPORT_PATH = Path("results/vsr/report.json")
METRICS_PATH = Path("results/metrics/vsr.json")  # the few numbers `dvc metrics show` lists

REQUIRED_FIELDS = ("image", "image_link", "caption", "label", "relation")
COLUMNS = ["row_id", "line", "image", "image_link", "caption", "label", "relation", "subject",
           "object", "parsed", "meta_category", "annotator_id", "reference_frame"]
MAX_EXAMPLES = 10

DUPLICATE_REASONS = {
    "among": "listed under Topological and Unallocated; the first listing is kept, since "
             "Unallocated is the authors' catch-all for relations they did not place",
}
# Relations the dictionary lacks, with the category we give them and why (see module docstring).
EXTRA_META_CATEGORIES = {
    "congruent": ("Unallocated", "missing from the authors' dictionary; Unallocated is their bin "
                                 "for relations outside the taxonomy"),
}


class VSRDataError(ValueError):
    """Bad VSR input; the message names the file, and the line and field where there is one."""


class ChecksumError(VSRDataError):
    """A split's bytes do not match the pinned sha256."""


# --------------------------------------------------------------------------- pure functions


def parse_meta_dictionary(text: str) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Relation -> meta-category from the authors' ``Category: rel, rel, ...`` lines, plus the
    decisions taken: duplicates keep their first listing, then `EXTRA_META_CATEGORIES` apply."""
    mapping: dict[str, str] = {}
    listings: dict[str, list[str]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        category, sep, rels = raw.partition(":")
        if not sep or not category.strip():
            raise VSRDataError(f"meta-category dictionary line {n}: expected 'Category: rel, ...'")
        for rel in (r.strip() for r in rels.split(",")):
            if rel:
                listings.setdefault(rel, []).append(category.strip())
                mapping.setdefault(rel, category.strip())
    decisions: dict[str, dict[str, Any]] = {
        rel: {"listed_as": cats, "chosen": cats[0],
              "reason": DUPLICATE_REASONS.get(rel, "listed more than once; first listing kept")}
        for rel, cats in listings.items() if len(cats) > 1
    }
    for rel, (category, reason) in EXTRA_META_CATEGORIES.items():
        if rel not in mapping:
            mapping[rel] = category
            decisions[rel] = {"listed_as": [], "chosen": category, "reason": reason}
    return mapping, decisions


def load_meta_categories(path: Path = META_DICT_PATH) -> tuple[dict[str, str], dict[str, dict]]:
    return parse_meta_dictionary(path.read_text())


def _relation_regex(relation: str) -> str:
    return r"\s+".join(re.escape(w) for w in relation.split())


def relation_in_caption(caption: str, relation: str) -> bool:
    """Whether the relation occurs in the caption as whole words (case-insensitive)."""
    pattern = rf"(?<!\w){_relation_regex(relation)}(?!\w)"
    return re.search(pattern, caption, re.IGNORECASE) is not None


def parse_caption(caption: str, relation: str) -> tuple[str, str] | None:
    """(subject, object) of "The X is REL the Y." or, for verbal relations ("contains",
    "has as a part"), "The X REL the Y."; articles, the final period and case are tolerated.
    None when the caption does not have that shape."""
    rel = _relation_regex(relation)
    # the copular reading first, so "The man on the left is on the bed" splits at "is on"
    for verb in (r"(?:is|are)\s+", ""):
        m = re.match(rf"^\s*(?:(?:the|a|an)\s+)?(?P<subject>\S.*?)\s+{verb}{rel}\s+"
                     r"(?:(?:the|a|an)\s+)?(?P<object>\S.*?)\s*\.?\s*$",
                     caption, re.IGNORECASE | re.DOTALL)
        if m and m.group("subject").strip().lower() not in {"is", "are"}:
            return m.group("subject").strip(), m.group("object").strip()
    return None


def _fail(file: str, line: int, field: str | None, problem: str) -> VSRDataError:
    where = f"{file}, line {line}" + (f", field '{field}'" if field else "")
    return VSRDataError(f"{where}: {problem}")


def parse_line(text: str, *, file: str, line: int) -> dict[str, Any]:
    """One JSONL line as a dict, or an error naming file and line."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(file, line, None, f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise _fail(file, line, None, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def validate_row(row: dict[str, Any], meta: dict[str, str], *, file: str,
                 line: int) -> dict[str, Any]:
    """Check one VSR row (required fields and types, label in {0, 1}, non-empty caption and
    relation, relation in the caption, known relation) and return it with the derived fields
    ``subject``, ``object``, ``parsed``, ``meta_category``; raise naming file, line and field."""
    for field in REQUIRED_FIELDS:
        if field not in row:
            raise _fail(file, line, field, "required field missing")
    for field in ("image", "image_link", "caption", "relation"):
        if not isinstance(row[field], str):
            raise _fail(file, line, field, f"expected a string, got {row[field]!r}")
        if not row[field].strip():
            raise _fail(file, line, field, "empty")
    label = row["label"]
    if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1):
        raise _fail(file, line, "label", f"expected 0 or 1, got {label!r}")
    caption, relation = row["caption"], row["relation"]
    if not relation_in_caption(caption, relation):
        raise _fail(file, line, "relation", f"{relation!r} does not occur in caption {caption!r}")
    if relation not in meta:
        raise _fail(file, line, "relation", f"unknown relation {relation!r}: not in the VSR "
                    f"meta-category dictionary ({META_DICT_PATH.name})")
    annotator = row.get("annotator_id")
    if annotator is not None and (isinstance(annotator, bool) or not isinstance(annotator, int)):
        raise _fail(file, line, "annotator_id", f"expected an integer, got {annotator!r}")
    frame = row.get("reference_frame")
    if frame is not None:
        if isinstance(frame, bool) or not isinstance(frame, (int, float, str)) or (
                isinstance(frame, float) and not frame.is_integer()):
            raise _fail(file, line, "reference_frame", f"expected an integer code, got {frame!r}")
        frame = frame if isinstance(frame, str) else str(int(frame))
    parsed = parse_caption(caption, relation)
    return {
        "image": row["image"], "image_link": row["image_link"], "caption": caption, "label": label,
        "relation": relation, "subject": parsed[0] if parsed else None,
        "object": parsed[1] if parsed else None, "parsed": parsed is not None,
        "meta_category": meta[relation], "annotator_id": annotator, "reference_frame": frame,
    }


def read_split(lines: Iterable[str | bytes], meta: dict[str, str], *,
               file: str) -> list[dict[str, Any]]:
    """Validate every line of one split (1-based line numbers); any bad line is fatal."""
    rows = []
    for n, text in enumerate(lines, 1):
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                problem = f"not valid UTF-8 ({e.reason} at byte {e.start})"
                raise _fail(file, n, None, problem) from None
        if not text.strip():
            raise _fail(file, n, None, "empty line")
        rows.append({"line": n, **validate_row(parse_line(text, file=file, line=n), meta,
                                                file=file, line=n)})
    if not rows:
        raise VSRDataError(f"{file}: no rows")
    return rows


def normalize(rows: list[dict[str, Any]], variant: str, split: str) -> pd.DataFrame:
    """The normalized table (ARCHITECTURE.md): validated rows in file order with a stable
    ``row_id`` "{variant}/{split}/{line:05d}"."""
    df = pd.DataFrame(rows)
    df.insert(0, "row_id", [f"{variant}/{split}/{n:05d}" for n in df["line"]])
    df = df.reindex(columns=COLUMNS)
    text = ["row_id", "image", "image_link", "caption", "relation", "subject", "object",
            "meta_category", "reference_frame"]
    return df.astype({**dict.fromkeys(text, "str"), "line": "int64", "label": "int64",
                      "parsed": bool, "annotator_id": "Int64"})


def split_summary(df: pd.DataFrame, sha256: str) -> dict[str, Any]:
    """Per-split report: rows, checksum, labels, parse rate with unparsed examples, counts."""
    unparsed = df[~df["parsed"]]
    return {
        "rows": len(df),
        "sha256": sha256,
        "labels": {str(k): int(v) for k, v in sorted(Counter(df["label"]).items())},
        "parsed": int(df["parsed"].sum()),
        "unparsed": len(unparsed),
        "parse_rate": float(df["parsed"].mean()),
        "unparsed_examples": unparsed[["row_id", "relation", "caption"]].head(MAX_EXAMPLES)
                                     .to_dict("records"),
        "relations": dict(Counter(df["relation"]).most_common()),
        "meta_categories": dict(Counter(df["meta_category"]).most_common()),
    }


# --------------------------------------------------------------------------- I/O


@dataclass(frozen=True)
class Source:
    """Where the raw split files come from, read from params `data`."""

    kind: str  # mirror | github | hf
    mirror: Path | None = None
    repo: str | None = None
    commit: str | None = None
    hf_datasets: dict[str, str] | None = None
    hf_revision: str | dict[str, str] | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], params_path: str) -> "Source":
        data = section(params, "data", params_path)
        if data.get("mirror"):
            return cls("mirror", mirror=Path(data["mirror"]))
        kind = data.get("source")
        if kind == "github":
            return cls("github", repo=section(params, "data.github.repo", params_path),
                       commit=section(params, "data.github.commit", params_path))
        if kind == "hf":
            return cls("hf", hf_datasets=section(params, "data.hf.datasets", params_path),
                       hf_revision=data["hf"].get("revision"))
        raise VSRDataError(f"{params_path}: data.source must be 'github' or 'hf' (got {kind!r}) "
                           "when data.mirror is not set")

    def describe(self) -> str:
        if self.kind == "mirror":
            return f"mirror:{self.mirror}"
        if self.kind == "github":
            return f"github:{self.repo}@{self.commit}"
        return f"hf:{self.hf_datasets}@{self.hf_revision}"

    def _hf(self, variant: str) -> tuple[str, str | None]:
        if variant not in self.hf_datasets:
            raise VSRDataError(f"data.hf.datasets has no dataset for variant '{variant}'")
        rev = self.hf_revision
        return self.hf_datasets[variant], rev.get(variant) if isinstance(rev, dict) else rev

    def origin(self, variant: str, split: str) -> str:
        """Where one split comes from (a path or URL), for messages."""
        if self.kind == "mirror":
            return str(self.mirror / variant / f"{split}.jsonl")
        if self.kind == "github":
            return GITHUB_RAW.format(repo=self.repo, commit=self.commit, variant=variant,
                                     split=split)
        repo, rev = self._hf(variant)
        return f"hf://datasets/{repo}@{rev}/{split}.jsonl"

    def fetch_to(self, variant: str, split: str, dest: Path) -> None:
        """Put the split's bytes at ``dest`` (unverified)."""
        if self.kind == "mirror":
            src = self.mirror / variant / f"{split}.jsonl"
            if not src.is_file():
                raise VSRDataError(f"data.mirror: {src} not found "
                                   "(layout {variant}/{split}.jsonl)")
            shutil.copyfile(src, dest)
        elif self.kind == "github":
            from analysis.download import fetch
            fetch(self.origin(variant, split), dest)
        else:
            from huggingface_hub import hf_hub_download
            repo, rev = self._hf(variant)
            cached = hf_hub_download(repo_id=repo, filename=f"{split}.jsonl", repo_type="dataset",
                                     revision=rev)
            shutil.copyfile(cached, dest)


def verify_sha256(path: Path, expected: str | None, name: str, origin: str) -> str:
    """The file's sha256; raise `ChecksumError` (file, expected, actual) when it differs."""
    if not expected:
        raise VSRDataError(f"{origin}: data.sha256['{name}'] is not set: "
                           "every split must be pinned")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f"{origin}: sha256 mismatch for {name}: expected {expected}, "
                            f"got {actual}")
    return actual


def acquire(source: Source, variant: str, split: str, expected: str | None) -> Path:
    """Verified raw split at `store.raw_split_path`; an already verified copy is reused."""
    name = store.split_key(variant, split)
    raw = store.raw_split_path(variant, split)
    if raw.is_file() and expected and sha256_file(raw) == expected.lower():
        log.info("%s: verified copy already at %s", name, raw)
        return raw
    raw.parent.mkdir(parents=True, exist_ok=True)
    partial = raw.with_name(raw.name + ".download")  # kept between runs so a download resumes
    source.fetch_to(variant, split, partial)
    try:
        verify_sha256(partial, expected, name, source.origin(variant, split))
    except ChecksumError:
        partial.unlink(missing_ok=True)
        raise
    with atomic_path(raw) as tmp:
        shutil.move(partial, tmp)
    return raw


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("vsr", __doc__.splitlines()[0]).parse_args(argv)
    params = load_params(args.params)
    data = section(params, "data", args.params)
    source = Source.from_params(params, args.params)
    pins = data.get("sha256") or {}
    meta, decisions = load_meta_categories()
    keys = [(v, s) for v in data["variants"] for s in data["splits"]]
    for v, s in keys:  # check names and pins before any download
        store.parse_split_key(store.split_key(v, s))
        if not pins.get(store.split_key(v, s)):
            raise VSRDataError(f"{args.params}: data.sha256['{v}/{s}'] is not set: every split "
                               "must be pinned")

    splits: dict[str, Any] = {}
    for variant, split in tqdm(keys, desc="vsr splits", unit="split"):
        name = store.split_key(variant, split)
        raw = acquire(source, variant, split, pins.get(name))
        with raw.open("rb") as fh:
            rows = read_split(fh, meta, file=source.origin(variant, split))
        df = normalize(rows, variant, split)
        write_parquet(store.table_path(variant, split), df)
        splits[name] = split_summary(df, pins[name].lower())
        log.info("%s: %d rows, %d unparsed captions", name, len(df), splits[name]["unparsed"])

    total = sum(s["rows"] for s in splits.values())
    unparsed = sum(s["unparsed"] for s in splits.values())
    totals = {"rows": total, "unparsed": unparsed, "parse_rate": (total - unparsed) / total}
    write_json(REPORT_PATH, {"source": source.describe(), "meta_category_decisions": decisions,
                             "totals": totals, "splits": splits})
    write_json(METRICS_PATH, {**totals, "splits": {
        k: {m: s[m] for m in ("rows", "unparsed", "parse_rate")} for k, s in splits.items()}})
    return 0
