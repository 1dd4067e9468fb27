"""The paper's figures as Altair charts: each builder takes a tidy DataFrame and returns a chart
(no I/O), so the same chart is interactive in HTML and a static SVG in the PDF. `render`
is the one I/O helper: it saves the SVG (vl-convert) and displays the right thing per format."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import altair as alt
import pandas as pd

WIDTH = 420
DIVERGING = "redblue"


def _need(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise ValueError(f"{what}: data lacks columns {absent} (has {list(df.columns)})")
    if df.empty:
        raise ValueError(f"{what}: no rows to plot")


def _ci_tooltip(value: str = "estimate") -> list[alt.Tooltip]:
    return [alt.Tooltip(f"{value}:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
            alt.Tooltip("ci_high:Q", format=".3f")]


def replication_dots(df: pd.DataFrame, folds: int | str | None = None) -> alt.Chart:
    """Original probe: macro F1 per relation (rows) and condition (colour); hollow marks are
    collapsed probes (one class predicted on every fold); the tick is majority-class F1.
    ``folds``: the number of CV folds, for the axis title.
    Columns: relation, condition, f1_macro_mean, f1_macro_std, collapsed[, f1_macro_majority]."""
    _need(df, ["relation", "condition", "f1_macro_mean", "f1_macro_std", "collapsed"],
          "replication_dots")
    order = (df.groupby("relation")["f1_macro_mean"].mean().sort_values(ascending=False)
             .index.tolist())
    base = alt.Chart(df).encode(y=alt.Y("relation:N", sort=order, title=None))
    dots = base.mark_point(size=45, filled=True).encode(
        x=alt.X("f1_macro_mean:Q", title=f"macro F1 (mean over {folds} folds)" if folds
                else "macro F1 (mean over folds)",
                scale=alt.Scale(zero=False)),
        color=alt.Color("condition:N", title="condition"),
        shape=alt.Shape("collapsed:N", title="collapsed",
                        scale=alt.Scale(domain=[False, True], range=["circle", "triangle"])),
        tooltip=["relation", "condition", alt.Tooltip("f1_macro_mean:Q", format=".3f"),
                 alt.Tooltip("f1_macro_std:Q", format=".3f"), "collapsed"],
    )
    layers = [dots]
    if "f1_macro_majority" in df.columns:
        maj = df.groupby("relation", as_index=False)["f1_macro_majority"].mean()
        layers.insert(0, alt.Chart(maj).mark_tick(color="gray", thickness=2).encode(
            y=alt.Y("relation:N", sort=order), x="f1_macro_majority:Q",
            tooltip=[alt.Tooltip("f1_macro_majority:Q", format=".3f", title="majority F1")]))
    return alt.layer(*layers).properties(width=WIDTH, height=alt.Step(12))


def relation_heatmap(df: pd.DataFrame, value_title: str = "macro F1") -> alt.Chart:
    """Relation x condition heatmap of ``estimate`` with the CI in each cell's text and tooltip.
    Columns: target, condition, estimate, ci_low, ci_high."""
    _need(df, ["target", "condition", "estimate", "ci_low", "ci_high"], "relation_heatmap")
    df = df[["target", "condition", "estimate", "ci_low", "ci_high"]]  # only what is drawn
    df = df.assign(text=[f"{e:.2f} [{lo:.2f}, {hi:.2f}]" for e, lo, hi in
                         zip(df["estimate"], df["ci_low"], df["ci_high"])])
    order = (df.groupby("target")["estimate"].mean().sort_values(ascending=False).index.tolist())
    base = alt.Chart(df).encode(
        x=alt.X("condition:N", title=None, axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("target:N", sort=order, title=None))
    rect = base.mark_rect().encode(
        color=alt.Color("estimate:Q", title=value_title, scale=alt.Scale(scheme="viridis")),
        tooltip=["target", "condition", *_ci_tooltip()])
    text = base.mark_text(fontSize=8).encode(
        text="text:N",
        color=alt.condition(alt.datum.estimate > df["estimate"].median(), alt.value("black"),
                            alt.value("white")))
    return (rect + text).properties(width=alt.Step(130), height=alt.Step(14))


def forest(df: pd.DataFrame, title: str = "CLIP text − SBERT (macro F1)") -> alt.Chart:
    """Paired differences with CIs, one row per relation, grouped by meta-category; filled marks
    are significant after Holm correction where ``p_holm`` is given.
    Columns: target, meta_category, estimate, ci_low, ci_high[, p_holm]."""
    _need(df, ["target", "meta_category", "estimate", "ci_low", "ci_high"], "forest")
    df = df[[c for c in ("target", "meta_category", "estimate", "ci_low", "ci_high", "p_holm") if c in df]]
    df = df.assign(significant=(df["p_holm"] < 0.05) if "p_holm" in df else False)
    base = alt.Chart().encode(y=alt.Y("target:N", title=None,
                                      sort=alt.EncodingSortField("estimate", order="descending")))
    rule = base.mark_rule().encode(x=alt.X("ci_low:Q", title=title), x2="ci_high:Q")
    point = base.mark_point(size=40, filled=True).encode(
        x="estimate:Q", color=alt.Color("meta_category:N", title="meta-category"),
        opacity=alt.condition(alt.datum.significant, alt.value(1.0), alt.value(0.45)),
        tooltip=["target", "meta_category", *_ci_tooltip(),
                 *([alt.Tooltip("p_holm:Q", format=".3g")] if "p_holm" in df else [])])
    zero = alt.Chart().mark_rule(strokeDash=[4, 3], color="gray").encode(x=alt.datum(0))
    return alt.layer(zero, rule, point, data=df).properties(width=WIDTH, height=alt.Step(12)) \
        .facet(row=alt.Row("meta_category:N", title=None,
                           header=alt.Header(labelAngle=0, labelAlign="left"))) \
        .resolve_scale(y="independent")


def contrast(df: pd.DataFrame, title: str = "(CLIP − SBERT) vertical − horizontal") -> alt.Chart:
    """Estimates with CIs against zero, one row per ``target`` (e.g. the asymmetry contrast
    per task). Columns: target, estimate, ci_low, ci_high."""
    _need(df, ["target", "estimate", "ci_low", "ci_high"], "contrast")
    df = df[["target", "estimate", "ci_low", "ci_high"]]  # only what is drawn
    # rows in the data's order (e.g. primary, secondary, exploratory), labels in full
    base = alt.Chart(df).encode(y=alt.Y("target:N", title=None, sort=None,
                                        axis=alt.Axis(labelLimit=400)))
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 3], color="gray") \
        .encode(x="x:Q")
    rule = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title=title), x2="ci_high:Q")
    point = base.mark_point(size=70, filled=True).encode(
        x="estimate:Q", tooltip=["target", *_ci_tooltip()])
    return alt.layer(zero, rule, point).properties(width=WIDTH, height=alt.Step(28))


def axis_scores(df: pd.DataFrame, title: str = "accuracy",
                chance: float = 0.5) -> alt.Chart:
    """One panel per ``axis``: each condition's score with its CI, the chance level dashed
    (``title`` is repeated under every panel: keep it short).
    Columns: axis, condition, estimate, ci_low, ci_high."""
    _need(df, ["axis", "condition", "estimate", "ci_low", "ci_high"], "axis_scores")
    df = df[["axis", "condition", "estimate", "ci_low", "ci_high"]]  # only what is drawn
    axes = [a for a in ("vertical", "horizontal", "depth") if a in set(df["axis"])] + sorted(
        set(df["axis"]) - {"vertical", "horizontal", "depth"})
    base = alt.Chart().encode(y=alt.Y("condition:N", title=None, sort=None))
    rule = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=title, scale=alt.Scale(domain=[0, 1])), x2="ci_high:Q")
    point = base.mark_point(size=60, filled=True).encode(
        x="estimate:Q", tooltip=["axis", "condition", *_ci_tooltip()])
    line = alt.Chart().mark_rule(strokeDash=[4, 3], color="gray").encode(x=alt.datum(chance))
    return alt.layer(line, rule, point, data=df).properties(width=150, height=alt.Step(16)) \
        .facet(column=alt.Column("axis:N", title=None, sort=axes))


def grounding_effects(df: pd.DataFrame, title: str = "after − before (log-odds, 95% CI)") -> alt.Chart:
    """The grounding effect of each matched pair and across pairs (rows), one panel per
    contrast (an axis, their mean, vertical − horizontal); zero dashed.
    Columns: pair, name, estimate, ci_low, ci_high."""
    _need(df, ["pair", "name", "estimate", "ci_low", "ci_high"], "grounding_effects")
    df = df[["pair", "name", "estimate", "ci_low", "ci_high"]]
    names = list(dict.fromkeys(df["name"]))
    base = alt.Chart().encode(y=alt.Y("pair:N", title=None, sort=None))
    rule = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title=title), x2="ci_high:Q")
    point = base.mark_point(size=60, filled=True).encode(
        x="estimate:Q", tooltip=["pair", "name", *_ci_tooltip()])
    zero = alt.Chart().mark_rule(strokeDash=[4, 3], color="gray").encode(x=alt.datum(0))
    return alt.layer(zero, rule, point, data=df).properties(width=120, height=alt.Step(16)) \
        .facet(column=alt.Column("name:N", title=None, sort=names), spacing=8) \
        .resolve_scale(x="independent")


def encoder_kinds(df: pd.DataFrame, title: str = "accuracy", chance: float = 0.5) -> alt.Chart:
    """Every encoder's score with its CI per ``axis`` panel, coloured by ``kind`` (grounded,
    text-only, random weights); chance dashed. Columns: axis, condition, kind, estimate,
    ci_low, ci_high."""
    _need(df, ["axis", "condition", "kind", "estimate", "ci_low", "ci_high"], "encoder_kinds")
    df = df[["axis", "condition", "kind", "estimate", "ci_low", "ci_high"]]
    axes = [a for a in ("vertical", "horizontal", "depth") if a in set(df["axis"])]
    colour = alt.Color("kind:N", title=None, scale=alt.Scale(
        domain=["grounded", "text-only", "random weights"], range=["#1b9e77", "#d95f02", "#999999"]),
        legend=alt.Legend(orient="bottom"))
    base = alt.Chart().encode(y=alt.Y("condition:N", title=None, sort=None), color=colour)
    rule = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=title, scale=alt.Scale(domain=[0, 1])), x2="ci_high:Q")
    point = base.mark_point(size=60, filled=True).encode(
        x="estimate:Q", tooltip=["axis", "condition", "kind", *_ci_tooltip()])
    line = alt.Chart().mark_rule(strokeDash=[4, 3], color="gray").encode(x=alt.datum(chance))
    return alt.layer(line, rule, point, data=df).properties(width=140, height=alt.Step(14)) \
        .facet(column=alt.Column("axis:N", title=None, sort=axes), spacing=8)


def layer_curves(df: pd.DataFrame, title: str = "macro F1") -> alt.Chart:
    """Score by layer with a CI band, one line per condition, one panel per ``panel``.
    Columns: layer, condition, estimate, ci_low, ci_high, panel."""
    _need(df, ["layer", "condition", "estimate", "ci_low", "ci_high", "panel"], "layer_curves")
    df = df[["layer", "condition", "estimate", "ci_low", "ci_high", "panel"]]  # only what is drawn
    layers = sorted(int(v) for v in df["layer"].unique())
    # explicit ticks: Vega ignores tickMinStep in wrapped facets and prints "0 1 1 2 2"
    ticks = alt.Axis(values=layers, format="d") if len(layers) <= 25 else alt.Axis(tickMinStep=1, format="d")
    base = alt.Chart().encode(x=alt.X("layer:Q", title="layer (0 = embeddings)", axis=ticks),
                              color=alt.Color("condition:N", title="condition"))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("ci_low:Q", title=title), y2="ci_high:Q")
    line = base.mark_line(point=True).encode(y="estimate:Q",
                                              tooltip=["condition", "layer", *_ci_tooltip()])
    return alt.layer(band, line, data=df).properties(width=260, height=170) \
        .facet(facet=alt.Facet("panel:N", title=None), columns=2)


def pair_matrix(df: pd.DataFrame, title: str = "similarity", names=None) -> alt.Chart:
    """Symmetric condition x condition matrix (RSA or CKA) from pairwise rows whose
    ``comparison`` is "a-b" (or "a vs b"); one panel per ``method``. ``names`` maps a
    condition to the label shown on the axes.
    Columns: comparison, method, estimate[, ci_low, ci_high]."""
    _need(df, ["comparison", "method", "estimate"], "pair_matrix")
    cells = matrix_cells(df)
    if names is not None:
        cells = cells.assign(a=cells["a"].map(lambda c: str(names(c))),
                             b=cells["b"].map(lambda c: str(names(c))))
    base = alt.Chart().encode(x=alt.X("a:N", title=None), y=alt.Y("b:N", title=None))
    rect = base.mark_rect().encode(
        color=alt.Color("estimate:Q", title=title, scale=alt.Scale(scheme="viridis")),
        tooltip=["a", "b", "method", alt.Tooltip("estimate:Q", format=".3f")])
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("estimate:Q", format=".2f"),
        color=alt.condition(alt.datum.estimate > 0.6, alt.value("black"), alt.value("white")))
    return alt.layer(rect, text, data=cells).properties(width=alt.Step(34), height=alt.Step(22)) \
        .facet(facet=alt.Facet("method:N", title=None), columns=2)


def layer_cka_map(df: pd.DataFrame) -> alt.Chart:
    """Layer x layer linear CKA between two encoders (heatmap; x: ``condition_b`` layers,
    y: ``condition_a`` layers), one panel per ``panel`` (the condition pair).
    Columns: layer_a, layer_b, cka, panel."""
    _need(df, ["layer_a", "layer_b", "cka", "panel"], "layer_cka_map")
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("layer_b:O", title="layer (second encoder)"),
        y=alt.Y("layer_a:O", title="layer (first encoder)", sort="descending"),
        color=alt.Color("cka:Q", title="linear CKA", scale=alt.Scale(scheme="viridis", domain=[0, 1])),
        tooltip=["panel", "layer_a", "layer_b", alt.Tooltip("cka:Q", format=".3f")],
    ).properties(width=170, height=170).facet(
        facet=alt.Facet("panel:N", title=None, header=alt.Header(labelLimit=200)), columns=3)


def split_pair(comparison: str) -> tuple[str, str]:
    """'clip_text-sbert' -> ('clip_text', 'sbert'); also 'a vs b' and 'a|b'. Condition names
    may hold '_' but not '-'."""
    for sep in (" vs ", "|", "-"):
        if sep in comparison:
            a, b = comparison.split(sep, 1)
            return a.strip(), b.strip()
    raise ValueError(f"cannot split comparison {comparison!r} into two conditions")


def matrix_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Pairwise rows -> both triangles plus a unit diagonal, one frame per method."""
    rows = []
    for r in df.itertuples(index=False):
        a, b = split_pair(r.comparison)
        rows += [{"method": r.method, "a": a, "b": b, "estimate": r.estimate},
                 {"method": r.method, "a": b, "b": a, "estimate": r.estimate}]
    cells = pd.DataFrame(rows).drop_duplicates(["method", "a", "b"])
    diag = cells[["method", "a"]].drop_duplicates().assign(b=lambda d: d["a"], estimate=1.0)
    return pd.concat([cells, diag], ignore_index=True)


def selectivity(df: pd.DataFrame) -> alt.Chart:
    """Task − control score with CI, per target (rows) and condition (colour).
    Columns: target, condition, estimate, ci_low, ci_high."""
    _need(df, ["target", "condition", "estimate", "ci_low", "ci_high"], "selectivity")
    df = df[["target", "condition", "estimate", "ci_low", "ci_high"]]  # only what is drawn
    base = alt.Chart().encode(y=alt.Y("condition:N", title=None),
                              color=alt.Color("condition:N", legend=None))
    rule = base.mark_rule().encode(x=alt.X("ci_low:Q", title="selectivity (task − control)"),
                                   x2="ci_high:Q")
    point = base.mark_point(filled=True, size=50).encode(
        x="estimate:Q", tooltip=["target", "condition", *_ci_tooltip()])
    return alt.layer(rule, point, data=df).properties(width=WIDTH, height=alt.Step(14)) \
        .facet(row=alt.Row("target:N", title=None,
                           header=alt.Header(labelAngle=0, labelAlign="left")))


# --------------------------------------------------------------------------- output


def output_format() -> str | None:
    """The format Quarto is rendering ('html', 'typst', ...) or None outside Quarto."""
    info = os.environ.get("QUARTO_EXECUTE_INFO")
    if info and Path(info).exists():
        ident = json.loads(Path(info).read_text()).get("format", {}).get("identifier", {})
        return ident.get("base-format") or ident.get("target-format")
    return None


def _svg_width(svg: str) -> float | None:
    import re

    m = re.search(r'<svg[^>]*\swidth="([\d.]+)', svg)
    return float(m.group(1)) if m else None


# The PDF's text width in CSS px (A4, 2 cm margins: 17 cm at 96 px/in); wider charts are scaled
# to fit it, narrower ones keep their size.
TEXT_WIDTH_PX = 17 / 2.54 * 96

_bundle_sent = False  # the Vega bundle goes into the first chart of each rendered document


def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script (vl-convert's bundle, the versions Altair
    uses), so the HTML draws its charts without loading anything from the network."""
    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    js = vlc.javascript_bundle(vl_version=vl_version_for_vl_convert())
    # "<table" in the bundle's strings (tooltips) makes Quarto try to parse the raw HTML block
    # as a table and warn; the escapes mean the same inside JavaScript strings
    return js.replace("</table", "<\\/table").replace("<table", "<\\x74able")


class Figure:
    """A chart for each format: in HTML the interactive chart (Vega-Lite spec drawn by the
    inlined Vega bundle, which the first figure of a document carries); elsewhere (Typst PDF,
    notebooks) a Markdown image of the saved SVG, scaled to the text width where it is wider.
    Shown inside a `paper_data.captioned` float; on its own it displays the same."""

    def __init__(self, chart: alt.TopLevelMixin, svg_path: Path, fmt: str | None):
        self.chart, self.svg_path, self.fmt = chart, svg_path, fmt

    def html(self, with_bundle: bool | None = None) -> str:
        global _bundle_sent
        if with_bundle is None:
            with_bundle, _bundle_sent = not _bundle_sent, True
        spec = json.dumps(self.chart.to_dict(), separators=(",", ":")).replace("<", "\\u003c")
        div = f"vega-{self.svg_path.stem}"
        parts = []
        if with_bundle:
            parts.append('<script type="text/javascript">\n' + vega_bundle() + "\n</script>")
        parts.append(f'<div id="{div}" class="vega-chart"></div>')
        parts.append(f'<script type="text/javascript">vegaEmbed("#{div}", {spec}, '
                     '{"mode": "vega-lite", "renderer": "svg", "actions": false})'
                     ".catch(console.error);</script>")
        return "\n".join(parts)

    def image(self) -> str:
        width = _svg_width(self.svg_path.read_text())
        size = (f"{{width={min(100.0, 100 * width / TEXT_WIDTH_PX):.0f}%}}"
                if width and width > 0.9 * TEXT_WIDTH_PX else "")
        return f"![]({self.svg_path.as_posix()}){size}"

    def markdown(self, fmt: str | None = None) -> str:
        if fmt == "html":
            return "```{=html}\n" + self.html() + "\n```"
        return self.image()

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle: dict[str, str] = {"text/plain": f"<figure {self.svg_path.name}>",
                                  "text/markdown": self.markdown(self.fmt)}
        if self.fmt is None:
            bundle["image/svg+xml"] = self.svg_path.read_text()
        return bundle


FIGURES_ENV = "SPATIAL_FIGURES_DIR"  # where figures go (paper_check: beside its outputs)


def render(chart: alt.TopLevelMixin, stem: str, directory: str | Path | None = None) -> Figure:
    """Save ``chart`` as ``<directory>/<stem>.svg`` (vl-convert, no browser; default
    ``$SPATIAL_FIGURES_DIR``, else ``figures/`` beside the manuscript) and return what the cell
    should display."""
    import os

    import vl_convert as vlc

    from analysis.common.io import atomic_path

    directory = directory or os.environ.get(FIGURES_ENV) or "figures"
    path = Path(directory) / f"{stem}.svg"
    with atomic_path(path) as tmp:
        tmp.write_text(vlc.vegalite_to_svg(chart.to_json()))
    return Figure(chart, path, output_format())
