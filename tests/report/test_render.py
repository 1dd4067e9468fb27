"""What readers get: the paper rendered by a real Quarto (`quarto render paper`), the HTML
parsed (BeautifulSoup) and the PDF read back (pypdf: text and where it sits on the page).

The smoke paper is rendered once per session: `smoke_workspace` runs `dvc repro`, whose `paper`
stage renders it where Quarto is on PATH (a Quarto error fails that fixture). A second, small
render runs the paper against a minimal result set in which every optional output is absent.

Without Quarto these tests skip; CI sets SPATIAL_REQUIRE_QUARTO=1 (`.ci/run`), and there a
missing Quarto fails them instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

from analysis.common.io import load_yaml
from tests.conftest import ROOT, run_tool

REQUIRE_ENV = "SPATIAL_REQUIRE_QUARTO"
SOURCES = sorted((ROOT / "paper").glob("*.qmd"))
# what must never reach a reader: inline-code source, unresolved references, Python reprs
LEAKS = ("{python}", "?@", "??", "{'", "dict(", "array(", "Txt(", "<IPython")
# pipeline names that have reader labels (analysis.report.paper_data.LABELS); code spans such as file
# paths and stage names (`embed@sbert_random`) may still hold them
RAW_NAMES = re.compile(r"(?<![\w@/.`-])(__all__|T1_ovr|T1_control(?:_ovr)?|T2_axis|T2_polarity|"
                       r"T3_holdout_\w+|sbert_random|clip_text_random|clip_image_random|"
                       r"clip_concat|clip_text|clip_image|clip_interaction|clip_zeroshot|"
                       r"clip_random_\w+|linear_cka\w*|tau_a|meta_category)(?![\w/-])")
A4_MARGIN_PT = 2 / 2.54 * 72  # paper/_quarto.yml: typst margin 2cm


def need_quarto() -> str:
    quarto = shutil.which("quarto")
    if quarto:
        return quarto
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but no quarto on PATH: CI renders the paper with a real "
                    "Quarto (.ci/run installs ../shared/tools/quarto when it exists)")
    pytest.skip("quarto not on PATH (install Quarto >= 1.6 to render the paper)")


def render(paper: Path, *args: str) -> subprocess.CompletedProcess:
    proc = run_tool(["quarto", "render", paper.name, *args], paper.parent, timeout=900)
    assert proc.returncode == 0, f"quarto render failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


# --------------------------------------------------------------------------- reading back


@dataclass
class Fragment:
    x: float
    y: float
    text: str


@dataclass
class Pdf:
    pages: list[str]
    fragments: list[list[Fragment]]  # per page, text drawn in the page's own content
    width: float
    height: float

    @property
    def text(self) -> str:
        return "\n".join(self.pages)


def _mult(m, n):
    return [m[0] * n[0] + m[1] * n[2], m[0] * n[1] + m[1] * n[3],
            m[2] * n[0] + m[3] * n[2], m[2] * n[1] + m[3] * n[3],
            m[4] * n[0] + m[5] * n[2] + n[4], m[4] * n[1] + m[5] * n[3] + n[5]]


def read_pdf(path: Path) -> Pdf:
    from pypdf import PdfReader

    reader = PdfReader(path)
    pages, fragments = [], []
    for page in reader.pages:
        frags: list[Fragment] = []
        depth = [0]  # inside a form XObject (an SVG figure) positions are the form's own

        def before(op, args, cm, tm):
            depth[0] += op == b"Do"

        def after(op, args, cm, tm):
            depth[0] -= op == b"Do"

        def visit(text, cm, tm, font, size):
            if text.strip() and not depth[0]:
                m = _mult(tm, cm)
                frags.append(Fragment(m[4], m[5], text.strip()))

        pages.append(page.extract_text(visitor_operand_before=before,
                                       visitor_operand_after=after, visitor_text=visit))
        fragments.append(frags)
    box = reader.pages[0].mediabox
    return Pdf(pages, fragments, float(box.width), float(box.height))


def visible_text(soup) -> str:
    """What a reader of the HTML sees: no scripts, styles or head."""
    import copy

    soup = copy.copy(soup)
    for tag in soup(["script", "style", "noscript", "head", "template"]):
        tag.decompose()
    return " ".join(soup.get_text(" ").split())


def words_only(text: str) -> str:
    return " ".join(text.replace("\xa0", " ").replace("\xad", "").split())


@dataclass
class Rendered:
    paper: Path
    soup: object
    html: str
    pdf: Pdf
    sources: str = field(default="")

    @property
    def out(self) -> Path:
        return self.paper / "_output"


def read_rendered(paper: Path, pdf: bool = True) -> Rendered:
    from bs4 import BeautifulSoup

    out = paper / "_output"
    html = (out / "index.html").read_text(encoding="utf-8")
    return Rendered(paper, BeautifulSoup(html, "html.parser"), html,
                    read_pdf(out / "index.pdf") if pdf else None,
                    "\n".join(p.read_text(encoding="utf-8") for p in sorted(paper.glob("*.qmd"))))


def source_floats(text: str) -> list[str]:
    """Figure/table labels the sources define: `P.captioned("fig-…", …)` cells, and any
    Markdown float (`{#fig-…}`, `#| label: fig-…`)."""
    found = re.findall(r'captioned\(\s*"((?:fig|tbl)-[\w-]+)"', text)
    found += re.findall(r"\{#((?:fig|tbl)-[\w-]+)[^}]*\}", text)
    found += re.findall(r"^#\|\s*label:\s*((?:fig|tbl)-[\w-]+)", text, re.MULTILINE)
    return list(dict.fromkeys(found))


def source_xrefs(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w@])@((?:fig|tbl|sec)-[\w-]*\w)", text))


# --------------------------------------------------------------------------- the smoke paper


def test_render_writes_html_pdf_and_the_manuscript_extras(smoke_paper):
    out = smoke_paper.out
    assert (out / "index.html").stat().st_size > 10_000
    assert len(smoke_paper.pdf.pages) >= 5
    assert smoke_paper.soup.find("h1", class_="title").get_text(strip=True).startswith(
        "Does visually grounded training")
    # manuscript features: the notebook view behind every "Source: Article Notebook" link
    assert (out / "index-preview.html").exists()
    links = smoke_paper.soup.select("a.quarto-notebook-link")
    assert links and all(a["href"].startswith("index-preview.html#") for a in links)


def test_the_zoo_section_shows_its_test_figures_and_what_did_not_run(smoke_paper):
    """Issue 14: the smoke paper's zoo section has the grounding figure, table and layer figure,
    and names the zoo conditions the build did not run (params.smoke.yaml leaves out XLM-R)."""
    section = smoke_paper.soup.find(id="sec-zoo")
    assert section is not None
    text = " ".join(section.get_text(" ").split())
    for label in ("fig-zoo", "tbl-grounding", "fig-zoo-layers", "tbl-zoo"):
        assert section.find(id=label) is not None, label
    not_run = text.split("Not run in this build:", 1)[1][:120]
    assert "XLM-R-base" in not_run and "OpenCLIP XLM-R tower" in not_run, not_run
    assert "tiny random-weight test models" in text  # the smoke's numbers are said to be uninformative
    assert "mean over axes" in text and "vertical − horizontal" in text
    assert (smoke_paper.paper / "figures/zoo.svg").exists() and (smoke_paper.paper / "figures/zoo_layers.svg").exists()


def test_no_source_code_unresolved_reference_or_python_repr_is_visible(smoke_paper):
    html = visible_text(smoke_paper.soup)
    pdf = smoke_paper.pdf.text
    for leak in LEAKS:
        assert leak not in html, f"HTML shows {leak!r}: ...{html[max(0, html.find(leak) - 80):html.find(leak) + 80]}..."
        assert leak not in pdf, f"PDF shows {leak!r}: ...{pdf[max(0, pdf.find(leak) - 80):pdf.find(leak) + 80]}..."


def test_every_cross_reference_resolves(smoke_paper):
    soup = smoke_paper.soup
    wanted = source_xrefs(smoke_paper.sources)
    assert {"fig-heatmap", "tbl-conditions", "sec-appendix"} <= wanted  # the scan works
    ids = {t.get("id") for t in soup.find_all(id=True)}
    assert wanted <= ids, f"labels referenced but not in the HTML: {sorted(wanted - ids)}"
    xrefs = soup.select("a.quarto-xref")
    targets = {a["href"].lstrip("#") for a in xrefs}
    assert wanted <= targets, f"not rendered as cross-references: {sorted(wanted - targets)}"
    for a in xrefs:
        assert soup.find(id=a["href"].lstrip("#")) is not None, a
        assert re.fullmatch(r"(Figure|Table|Section) \d+(\.\d+)*", words_only(a.get_text())), a
    pdf = words_only(smoke_paper.pdf.text)
    assert re.search(r"\(Table 1\)", pdf) and re.search(r"Section \d+\.\d+", pdf)


def test_every_figure_and_table_has_its_caption_with_provenance(smoke_paper):
    soup = smoke_paper.soup
    labels = source_floats(smoke_paper.sources)
    figs = [x for x in labels if x.startswith("fig-")]
    tbls = [x for x in labels if x.startswith("tbl-")]
    assert len(figs) >= 8 and len(tbls) >= 7
    floats = soup.select("div.quarto-float[id]")
    assert [f["id"] for f in floats if f["id"] in labels] == [f["id"] for f in floats]
    assert sorted(f["id"] for f in floats) == sorted(labels)  # as many as the sources define
    numbers = {"Figure": [], "Table": []}
    for f in floats:
        caption = words_only(f.find("figcaption").get_text(" "))
        m = re.match(r"(Figure|Table) (\d+): \S", caption)
        assert m, f"{f['id']}: caption {caption[:80]!r}"
        numbers[m.group(1)].append(int(m.group(2)))
        assert "Source:" in caption, f"{f['id']} caption names no source: {caption!r}"
        if f["id"].startswith("tbl-"):
            assert f.find("table") is not None and len(f.find_all("tr")) >= 2, f["id"]
        else:  # a chart drawn by the inlined Vega bundle, or the reason there is none
            chart = f.select_one("div.vega-chart[id]")
            assert chart is not None or "Not available in this build" in f.get_text(), f["id"]
            if chart is not None:
                assert f'vegaEmbed("#{chart["id"]}"' in smoke_paper.html, chart["id"]
    assert numbers == {"Figure": list(range(1, len(figs) + 1)),
                       "Table": list(range(1, len(tbls) + 1))}
    # the PDF: each caption once, numbered in order, and a source per float
    pdf = words_only(smoke_paper.pdf.text)
    for kind, n in (("Figure", len(figs)), ("Table", len(tbls))):
        found = [int(k) for k in re.findall(rf"\b{kind} (\d+): ", pdf)]
        assert found == list(range(1, n + 1)), (kind, found)
    assert pdf.count("Source:") >= len(labels)
    # every chart of the PDF is its SVG, written by vl-convert
    svgs = sorted((smoke_paper.paper / "figures").glob("*.svg"))
    assert len(svgs) == len(figs)


def test_html_loads_nothing_from_the_network(smoke_paper):
    soup, out = smoke_paper.soup, smoke_paper.out
    refs = ([t["src"] for t in soup.find_all(["script", "img", "iframe", "audio", "video",
                                              "source"], src=True)]
            + [t["href"] for t in soup.find_all("link", href=True)])
    remote = [u for u in refs if urlparse(u).scheme or u.startswith("//")]
    assert not remote, f"loaded from the network: {remote}"
    assert not [u for u in refs if "mathjax" in u.lower() or "katex" in u.lower()]
    for css in (u for u in refs if u.endswith(".css")):
        text = (out / css).read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"@import\s+(url\()?['\"]?(https?:)?//", text), css
        assert not re.search(r"url\(['\"]?(https?:)?//", text), css
    # the Vega bundle exactly once, inline, before the charts that use it
    bundles = [s for s in soup.find_all("script") if "window.vegaEmbed=" in (s.string or "")]
    charts = soup.select("div.vega-chart")
    assert len(bundles) == 1 and charts
    assert smoke_paper.html.index("window.vegaEmbed=") < smoke_paper.html.index('vegaEmbed("#')
    assert soup.find("math") is not None  # MathML: formulas without a MathJax CDN


def test_labels_and_counts_are_for_readers(smoke_paper):
    from analysis.report.paper_data import words

    smoke_workspace = smoke_paper.paper.parent
    soup = smoke_paper.soup
    import copy
    prose = copy.copy(soup)
    for tag in prose(["code", "pre"]):
        tag.decompose()
    # in the PDF, code spans are text too: a path or stage name broken across lines
    # ("results/embeddings/" + newline + "clip_text") is joined again
    pdf = re.sub(r"([/@])\s+", r"\1", smoke_paper.pdf.text)
    for where, text in (("HTML", visible_text(prose)), ("PDF", pdf)):
        raw = sorted(set(RAW_NAMES.findall(text)))
        assert not raw, f"{where} shows pipeline names: {raw}"
    for svg in sorted((smoke_paper.paper / "figures").glob("*.svg")):
        texts = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg.read_text()))
        assert texts.strip(), svg.name
        raw = sorted(set(RAW_NAMES.findall(texts)))
        assert not raw, f"{svg.name}: axis/legend/panel labels {raw}"
    n = len({p.parts[-4] for p in (smoke_workspace / "results/embeddings").glob("*/*/*/meta.json")})
    conditions = load_yaml((smoke_workspace / "params.yaml").read_text())["conditions"]
    assert n == len(conditions["text"]) + len(conditions["image"])
    sentence = f"{words(n).capitalize()} conditions were embedded in this build"
    assert sentence in visible_text(soup)
    assert sentence in words_only(smoke_paper.pdf.text)
    assert "All four conditions" not in visible_text(soup)


def test_references_appear_once_where_the_manuscript_puts_them(smoke_paper):
    soup = smoke_paper.soup
    refs = soup.select("div#refs")
    assert len(refs) == 1
    entries = refs[0].select(".csl-entry")
    cited = {k for s in soup.select("span.citation[data-cites]") for k in s["data-cites"].split()}
    assert cited and len(entries) == len(cited)
    assert {e["id"] for e in entries} == {f"ref-{k}" for k in cited}
    headings = [h for h in soup.find_all(re.compile("^h[1-6]$"))
                if words_only(h.get_text()) in ("References", "Bibliography")]
    assert [words_only(h.get_text()) for h in headings] == ["References"]
    html = smoke_paper.html
    assert html.index('id="refs"') < html.index('id="sec-appendix"')  # before the appendix
    lines = [words_only(line) for line in smoke_paper.pdf.text.splitlines()]
    assert lines.count("References") == 1 and "Bibliography" not in lines
    start = lines.index("References")
    appendix = next(i for i, line in enumerate(lines) if re.fullmatch(r"\d+ Reproducibility", line))
    assert start < appendix
    listed = " ".join(lines[start:appendix])
    for entry in entries:  # every reference of the HTML list is in the PDF's, in that place
        author = words_only(entry.get_text()).split(",")[0]
        assert author in listed, author


def test_pdf_text_stays_within_the_page_margins(smoke_paper):
    pdf = smoke_paper.pdf
    problems = check_margins(pdf)
    assert not problems, "\n".join(problems[:20])
    assert len(pdf.pages) < 40  # long tables are split or condensed, not exploded


def check_margins(pdf: Pdf, margin: float = A4_MARGIN_PT, tol: float = 1.5) -> list[str]:
    """Text drawn outside the type area: below the bottom margin (a table running off the
    page), above the top one, or starting left or right of the text column. The page number
    in the footer is the one thing allowed below the bottom margin."""
    problems = []
    for number, frags in enumerate(pdf.fragments, start=1):
        for f in frags:
            footer = f.text.isdigit() and abs(f.x - pdf.width / 2) < 40 and 0 < f.y < margin
            if footer:
                continue
            if not (margin - tol <= f.y <= pdf.height - margin + tol):
                problems.append(f"page {number}: {f.text[:40]!r} at y={f.y:.0f} pt, outside "
                                f"the vertical margins ({margin:.0f} pt)")
            if not (margin - tol <= f.x <= pdf.width - margin + tol):
                problems.append(f"page {number}: {f.text[:40]!r} at x={f.x:.0f} pt, outside "
                                f"the horizontal margins")
    return problems


def test_margin_check_catches_a_table_running_off_the_page(tmp_path):
    """The check above on a PDF whose table cannot break (what the paper's long tables did)."""
    need_quarto()
    rows = ", ".join(f"[row {i}], [{i}]" for i in range(120))
    (tmp_path / "t.typ").write_text(
        '#set page(paper: "a4", margin: 2cm)\n'
        "#figure(block(breakable: false, table(columns: 2, " + rows + ")), caption: [Long])\n")
    proc = run_tool(["quarto", "typst", "compile", "t.typ", "t.pdf"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    problems = check_margins(read_pdf(tmp_path / "t.pdf"))
    assert any("outside the vertical margins" in p for p in problems)


# --------------------------------------------------------------------------- empty values


def test_every_optional_value_empty_renders_as_nothing(tmp_path):
    """The paper against a minimal result set (one condition, no suite, statistics or RSA), plus
    a sentence of inline values that are all empty: nothing leaks, every figure and table
    is still numbered and captioned, and the absent analyses are said to be absent."""
    need_quarto()
    from tests.report.test_paper_check import paper_copy, write_results

    write_results(tmp_path, seed=11, optional=False, conditions=["sbert"])
    paper = paper_copy(tmp_path)
    qmd = paper / "_limitations.qmd"
    qmd.write_text(qmd.read_text() + "\nEmpty values: [`{python} Txt('')`] and "
                   "[`{python} P.Txt('') + Txt('')`] end.\n")
    render(paper, "--to", "html")
    result = read_rendered(paper, pdf=False)
    text = visible_text(result.soup)
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} in ...{text[max(0, text.find(leak) - 100):text.find(leak) + 100]}"
    para = next(p for p in result.soup.find_all("p") if "Empty values" in p.get_text())
    assert words_only(para.get_text("")) == "Empty values: [] and [] end."
    assert "results/stats/asymmetry.csv is absent from this build" in text
    assert "Not run in this build: CLIP text, CLIP image and CLIP image+text" in text
    labels = source_floats(result.sources)
    assert sorted(f["id"] for f in result.soup.select("div.quarto-float[id]")) == sorted(labels)
    assert all("Source:" in f.find("figcaption").get_text() for f in
               result.soup.select("div.quarto-float[id]"))
    assert "Not available in this build" in text
