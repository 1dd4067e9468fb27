"""Check the paper where Quarto is absent: run every Python cell of ``paper/index.qmd`` (and
its includes) in order, from ``paper/``, in a ``python3`` Jupyter kernel, evaluate the inline
``{python} expr`` expressions where Quarto would, and fail on a cell error, a missing required
output, an empty figure/table, an unresolved ``@fig-``/``@tbl-``/``@sec-`` reference, an
unknown citation key, an inline value that renders as empty (Quarto would print its source) or
a figure/table div wrapped around a code cell (a Quarto manuscript crashes on it or drops the
caption; emit the float from the cell with ``paper_data.captioned``). Writes the executed
notebook, the prose with every inline value filled in and the figures (``figures/*.svg``) to
``paper/_check/`` (what tests compare between result sets).

It executes cells; it does not render. What readers see is checked by rendering with Quarto
(``quarto render paper``; ``tests/test_render.py`` in CI).

    python -m analysis paper_check [--paper paper] [--root .]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

log = logging.getLogger("paper_check")

INCLUDE = re.compile(r"^\{\{<\s*include\s+(\S+)\s*>\}\}\s*$", re.MULTILINE)
FENCE = re.compile(r"^```\{python\}\s*$", re.MULTILINE)
INLINE = re.compile(r"`\{python\}\s+([^`]+)`")
CODE_SPAN = re.compile(r"`[^`]*`")
XREF_KINDS = ("fig", "tbl", "sec", "eq")
LABEL_OPT = re.compile(r"^#\|\s*label:\s*((?:fig|tbl|sec|eq)-[\w-]+)\s*$", re.MULTILINE)
LABEL_ATTR = re.compile(r"\{#((?:fig|tbl|sec|eq)-[\w-]+)[^}]*\}")
XREF = re.compile(r"(?<![\w@])@((?:fig|tbl|sec|eq)-[\w-]*\w)")
CITE = re.compile(r"(?<![\w@.\\])@([A-Za-z_][\w:.#$%&+?<>~/-]*\w|[A-Za-z_])")
BIB_KEY = re.compile(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", re.MULTILINE)
DIV_OPEN = re.compile(r"^:::+\s*\{#((?:fig|tbl)-[\w-]+)[^}]*\}\s*$")
DIV_CLOSE = re.compile(r"^:::+\s*$")
FLOAT_OUTPUT = re.compile(r"^:::+\s*\{#((?:fig|tbl)-[\w-]+)[^}]*\}\s*\n(.*?)\n:::+\s*$",
                          re.MULTILINE | re.DOTALL)
SENTINEL = "<<paper_check inline>>"
ADJACENT = re.compile(r"`\{python\}[^`\n]*``\{python\}")  # pandoc reads `` as one delimiter

PRELUDE = f'''
import json as __json
def __paper_check_inline(values):
    out = []
    for v in values:
        data, _ = get_ipython().display_formatter.format(v)
        text = data.get("text/markdown")
        if text is None:
            text = str(v) if isinstance(v, str) else data.get("text/plain", str(v))
        out.append(text)
    print({SENTINEL!r} + __json.dumps(out))
'''


class PaperCheckError(Exception):
    """The manuscript does not execute or does not resolve; the message lists every problem."""


def expand_includes(path: Path, seen: tuple[Path, ...] = ()) -> str:
    """The document with every ``{{< include file >}}`` replaced by that file (recursively)."""
    path = path.resolve()
    if path in seen:
        raise PaperCheckError(f"include cycle: {' -> '.join(map(str, (*seen, path)))}")
    if not path.exists():
        where = f" (included from {seen[-1]})" if seen else ""
        raise PaperCheckError(f"{path} not found{where}")
    text = path.read_text(encoding="utf-8")
    return INCLUDE.sub(lambda m: expand_includes(path.parent / m.group(1), (*seen, path)), text)


def to_notebook(text: str) -> nbformat.NotebookNode:
    """Quarto source -> notebook: ```{python} fences become code cells (jupytext's Markdown
    reader), front matter a raw cell, everything else Markdown cells, order kept."""
    text = FENCE.sub("```python", text)
    return jupytext.reads(text, fmt={"extension": ".md", "format_name": "markdown"})


@dataclass
class Prepared:
    nb: nbformat.NotebookNode
    inline_cells: dict[int, int] = field(default_factory=dict)  # eval cell -> markdown cell
    div_of_cell: dict[int, str] = field(default_factory=dict)   # code cell -> fig/tbl label


def prepare(nb: nbformat.NotebookNode) -> Prepared:
    """Insert a prelude and, after each Markdown cell with inline expressions, a cell that
    evaluates them in document order (as Quarto does); note which code cells sit in a
    figure/table div."""
    cells = [nbformat.v4.new_code_cell(PRELUDE)]
    prep = Prepared(nb)
    current: str | None = None
    for cell in nb.cells:
        cells.append(cell)
        if cell.cell_type == "code" and current:
            prep.div_of_cell[len(cells) - 1] = current
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if m := DIV_OPEN.match(line.strip()):
                current = m.group(1)
            elif DIV_CLOSE.match(line.strip()):
                current = None
        exprs = INLINE.findall(cell.source)
        if exprs:
            src = "__paper_check_inline([" + ", ".join(f"({e.strip()})" for e in exprs) + "])"
            cells.append(nbformat.v4.new_code_cell(src))
            prep.inline_cells[len(cells) - 1] = len(cells) - 2
    out = nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata)
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                  "language": "python"}
    prep.nb = out
    return prep


def execute(prep: Prepared, cwd: Path, timeout: int = 600) -> None:
    client = NotebookClient(prep.nb, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        idx = next((i for i, c in enumerate(prep.nb.cells) if c.cell_type == "code"
                    and any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        where = ""
        if idx is not None:
            src = prep.nb.cells[prep.inline_cells.get(idx, idx)].source
            kind = "inline expressions of the Markdown" if idx in prep.inline_cells else "code"
            where = f"{kind} cell {idx}:\n    " + "\n    ".join(src.splitlines()[:6]) + "\n"
        raise PaperCheckError(f"cell failed: {where}{exc}") from None


def inline_values(prep: Prepared) -> dict[int, list[str]]:
    values: dict[int, list[str]] = {}
    for idx, md_idx in prep.inline_cells.items():
        text = "".join(o.get("text", "") for o in prep.nb.cells[idx].get("outputs", [])
                       if o.get("output_type") == "stream")
        line = next((ln for ln in text.splitlines() if ln.startswith(SENTINEL)), None)
        if line is None:
            raise PaperCheckError(f"inline expressions of cell {md_idx} produced no values")
        values[md_idx] = json.loads(line[len(SENTINEL):])
    return values


def rendered_prose(prep: Prepared, values: dict[int, list[str]]) -> str:
    """The Markdown text with every inline expression replaced by its value, and the Markdown
    code cells display (figures and tables with their captions) where they display it."""
    parts = []
    for i, cell in enumerate(prep.nb.cells):
        if cell.cell_type == "code":
            parts += cell_markdown_outputs(cell)
            continue
        if cell.cell_type != "markdown":
            continue
        vals = iter(values.get(i, []))
        parts.append(INLINE.sub(lambda m: next(vals), cell.source))
    return "\n\n".join(parts) + "\n"


def cell_markdown_outputs(cell: nbformat.NotebookNode) -> list[str]:
    """The text/markdown a code cell displayed (what Quarto reads into the document)."""
    out = []
    for o in cell.get("outputs", []):
        data = o.get("data", {}) if o.get("output_type") in {"display_data", "execute_result"} \
            else {}
        md = data.get("text/markdown")
        if md is not None:
            out.append("".join(md) if isinstance(md, list) else md)
    return out


def labels_defined(nb: nbformat.NotebookNode) -> set[str]:
    """Labels of the Markdown (``{#fig-x}``), of code cells (``#| label: fig-x``) and of the
    floats code cells display (``paper_data.captioned``)."""
    found: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            found.update(LABEL_OPT.findall(cell.source))
            for md in cell_markdown_outputs(cell):
                found.update(LABEL_ATTR.findall(md))
        else:
            found.update(LABEL_ATTR.findall(cell.source))
    return found


def floats_displayed(nb: nbformat.NotebookNode) -> dict[str, str]:
    """Figure/table label -> its body (between the div's opening line and its caption) for every
    float a code cell displayed."""
    floats: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for md in cell_markdown_outputs(cell):
            for m in FLOAT_OUTPUT.finditer(md):
                floats[m.group(1)] = m.group(2)
    return floats


def references(prose: str) -> tuple[set[str], set[str]]:
    """(cross-references, citation keys) used in rendered prose (code spans ignored)."""
    text = CODE_SPAN.sub(" ", prose)
    text = LABEL_ATTR.sub(" ", text)
    xrefs = set(XREF.findall(text))
    cites = {c for c in CITE.findall(text) if c.split("-")[0] not in XREF_KINDS}
    return xrefs, cites


def bib_keys(paths: list[Path]) -> set[str]:
    keys: set[str] = set()
    for p in paths:
        keys.update(BIB_KEY.findall(p.read_text(encoding="utf-8")))
    return keys


def bibliographies(paper: Path, front: str) -> list[Path]:
    names = re.findall(r"^bibliography:\s*(\S+)\s*$", front, re.MULTILINE)
    config = paper / "_quarto.yml"
    if config.exists():
        names += re.findall(r"^bibliography:\s*(\S+)\s*$", config.read_text(), re.MULTILINE)
    return [paper / n for n in dict.fromkeys(names)]


def divs_around_cells(prep: Prepared) -> list[str]:
    """Figure/table divs of the Markdown that wrap a code cell (the pattern a Quarto manuscript
    cannot render)."""
    return sorted(set(prep.div_of_cell.values()))


def empty_floats(prep: Prepared) -> list[str]:
    """Displayed figures/tables with nothing but a caption."""
    empty = []
    for lbl, body in floats_displayed(prep.nb).items():
        paragraphs = [b for b in re.split(r"\n\s*\n", body.strip()) if b.strip()]
        if len(paragraphs) < 2:  # content and caption
            empty.append(lbl)
    return sorted(empty)


def empty_inline(prep: Prepared, values: dict[int, list[str]]) -> list[str]:
    """Inline expressions whose value renders as empty text (Quarto then prints the source)."""
    problems = []
    for md_idx, vals in values.items():
        exprs = INLINE.findall(prep.nb.cells[md_idx].source)
        problems += [f"`{{python}} {e.strip()}`" for e, v in zip(exprs, vals) if not v.strip()]
    return problems


def check(paper: Path, root: Path | None = None, out: Path | None = None,
          timeout: int = 600) -> dict:
    """Run the whole check; raise `PaperCheckError` listing every problem; return a summary."""
    paper = paper.resolve()
    root = (root or paper.parent).resolve()
    out = (out or paper / "_check").resolve()
    env_before = {k: os.environ.get(k) for k in ("SPATIAL_PAPER_ROOT", "PYTHONPATH",
                                                 "SPATIAL_FIGURES_DIR")}
    os.environ["SPATIAL_PAPER_ROOT"] = str(root)
    # figures.FIGURES_ENV: beside the prose, relative to the cells' working directory (the
    # manuscript folder) so the prose names no machine-specific path
    os.environ["SPATIAL_FIGURES_DIR"] = os.path.relpath(out / "figures", paper)
    package_root = str(Path(__file__).resolve().parents[2])  # so the kernel imports `analysis`
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root,
                                                             env_before["PYTHONPATH"]]))
    try:
        from analysis.report import paper_data
        missing = paper_data.missing_required()
        if missing:
            raise PaperCheckError("required outputs missing under " + str(root) + ": "
                                  + ", ".join(f"{m} (stage '{paper_data.producer(m)}')"
                                              for m in missing))
        text = expand_includes(paper / "index.qmd")
        prep = prepare(to_notebook(text))
        execute(prep, paper, timeout)
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    values = inline_values(prep)
    prose = rendered_prose(prep, values)
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.md").write_text(prose, encoding="utf-8")
    nbformat.write(prep.nb, out / "index.ipynb")

    problems = [f"adjacent inline expressions need a space between them: {m.group(0)!r}"
                for m in ADJACENT.finditer(text)]
    defined = labels_defined(prep.nb)
    xrefs, cites = references(prose)
    for x in sorted(xrefs - defined):
        problems.append(f"unresolved cross-reference @{x} (no '#| label: {x}' or '{{#{x}}}')")
    bibs = bibliographies(paper, text.split("\n---", 1)[0])
    keys = bib_keys([b for b in bibs if b.exists()])
    problems += [f"bibliography file {b} not found" for b in bibs if not b.exists()]
    problems += [f"unknown citation @{c} (not in {', '.join(b.name for b in bibs)})"
                 for c in sorted(cites - keys)]
    problems += [f"figure/table {lbl} displays nothing" for lbl in empty_floats(prep)]
    problems += [f"figure/table div {lbl} wraps a code cell: a Quarto manuscript crashes on it "
                 f"or drops its caption; display P.captioned({lbl!r}, content, caption) from "
                 "the cell instead" for lbl in divs_around_cells(prep)]
    problems += [f"inline expression {e} renders as empty text, which Quarto replaces by its "
                 "source: return a sentence or paper_data.Txt('') (renders as nothing)"
                 for e in empty_inline(prep, values)]
    if problems:
        raise PaperCheckError("paper check failed:\n  " + "\n  ".join(problems))
    return {"cells": sum(c.cell_type == "code" for c in prep.nb.cells) - 1 - len(values),
            "inline": sum(map(len, values.values())), "labels": len(defined),
            "cross_references": len(xrefs), "citations": len(cites), "prose": str(out / "index.md")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis paper_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--paper", type=Path, default=Path("paper"), help="Quarto project folder")
    parser.add_argument("--root", type=Path, default=None,
                        help="repo root whose results/ and dvc.lock the paper reads "
                             "(default: the paper folder's parent)")
    parser.add_argument("--out", type=Path, default=None, help="default: <paper>/_check")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    try:
        summary = check(args.paper, args.root, args.out, args.timeout)
    except PaperCheckError as exc:
        print(f"paper_check: {exc}", file=sys.stderr)
        return 1
    log.info("paper ok: %(cells)d cells, %(inline)d inline values, %(labels)d labels, "
             "%(cross_references)d cross-references, %(citations)d citations; prose in %(prose)s",
             summary)
    return 0
