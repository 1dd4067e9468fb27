"""What a VSR row is: validation of every field, caption parsing into subject and object, and
the normalized table (the contract `analysis.common.store.VSR_COLUMNS`). Pure functions; the
`vsr` stage (`analysis/data/vsr.py`) does the I/O.

- A bad row is fatal (`VSRDataError` naming file, line and field). The files are pinned by
  sha256, so a bad row means a wrong file or a wrong assumption here, never noise to skip.
- A caption that does not parse into subject/object is *not* an error: it keeps
  ``subject``/``object`` null and ``parsed=False``, and is counted with examples in the report.
- ``reference_frame`` is a numeric code upstream (0.0/1.0/2.0, random split only) and is stored
  as its integer text ("0", "1", "2"), null where absent. ``annotator_id`` is optional upstream
  (present on every real row) and stored as a nullable integer.
- The relation must occur in the caption as whole words, case-insensitively; a relation missing
  from the meta-category dictionary is an error.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Iterable

import pandas as pd

from analysis.common.errors import UserError
from analysis.common.store import VSR_COLUMNS
from analysis.data.relations import META_DICT_PATH

REQUIRED_FIELDS = ("image", "image_link", "caption", "label", "relation")
MAX_EXAMPLES = 10


class VSRDataError(UserError, ValueError):
    """Bad VSR input; the message names the file, and the line and field where there is one."""


class ChecksumError(VSRDataError):
    """A split's bytes do not match the pinned sha256."""


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
    df = df.reindex(columns=VSR_COLUMNS)
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
