"""Figure builders: valid Vega-Lite, one mark per data row (facets split the data rather than
repeat it), static SVG via vl-convert, clear errors on wrong input."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import vl_convert as vlc

from analysis.report import figures as F


def marks(svg: str, kind: str) -> int:
    """Number of drawn items in every ``mark-<kind>`` group of a Vega SVG."""
    groups = re.findall(rf'<g class="mark-{kind} role-mark[^"]*"[^>]*>(.*?)</g>', svg, re.S)
    return sum(g.count("<path") + g.count("<text") + g.count("<line") for g in groups)


@pytest.fixture
def diffs():
    rng = np.random.default_rng(0)
    est = rng.normal(0, 0.05, 7)
    return pd.DataFrame({"target": list("abcdefg"), "meta_category": list("XXXYYZZ"),
                         "estimate": est, "ci_low": est - 0.02, "ci_high": est + 0.02,
                         "p_holm": [0.01, 0.2, 0.03, 0.5, 0.9, 0.001, 0.04]})


def test_forest_draws_each_relation_once_across_facets(diffs):
    svg = vlc.vegalite_to_svg(F.forest(diffs).to_json())
    assert marks(svg, "symbol") == len(diffs)
    assert all(f">{t}<" in svg for t in diffs["target"])
    assert all(f">{m}<" in svg for m in ("X", "Y", "Z"))


def test_axis_scores_one_point_per_condition_and_axis_in_axis_order():
    df = pd.DataFrame({"axis": ["horizontal", "vertical", "depth"] * 2,
                       "condition": ["SBERT"] * 3 + ["bag of words"] * 3,
                       "estimate": [0.9, 0.95, 0.7, 0.5, 0.55, 0.45]})
    df = df.assign(ci_low=df["estimate"] - 0.05, ci_high=df["estimate"] + 0.05)
    svg = vlc.vegalite_to_svg(F.axis_scores(df).to_json())
    assert marks(svg, "symbol") == 6
    heads = [svg.index(f">{a}<") for a in ("vertical", "horizontal", "depth")]
    assert heads == sorted(heads)  # panels left to right: vertical, horizontal, depth
    with pytest.raises(ValueError, match="axis_scores: data lacks columns"):
        F.axis_scores(df.drop(columns="axis"))


def test_heatmap_one_cell_and_one_label_per_row():
    df = pd.DataFrame({"target": ["above", "above", "left of", "left of"],
                       "condition": ["SBERT", "CLIP text"] * 2, "estimate": [0.8, 0.7, 0.6, 0.5],
                       "ci_low": [0.75, 0.65, 0.55, 0.45], "ci_high": [0.85, 0.75, 0.65, 0.55]})
    svg = vlc.vegalite_to_svg(F.relation_heatmap(df).to_json())
    assert marks(svg, "rect") == 4
    assert "0.80 [0.75, 0.85]" in svg and "0.50 [0.45, 0.55]" in svg


def test_replication_marks_collapsed_and_majority():
    df = pd.DataFrame({"relation": ["on", "near", "on", "near"], "condition": ["a", "a", "b", "b"],
                       "f1_macro_mean": [0.9, 0.49, 0.8, 0.49], "f1_macro_std": 0.01,
                       "collapsed": [False, True, False, True], "f1_macro_majority": 0.49})
    spec = F.replication_dots(df).to_dict()
    svg = vlc.vegalite_to_svg(spec)
    assert marks(svg, "symbol") >= 4  # the points (legend symbols may add more)
    assert marks(svg, "rect") == 2    # one majority tick (drawn as a rect) per relation


def test_layer_curves_and_selectivity_and_contrast_render():
    layers = pd.DataFrame({"layer": [0, 1, 2] * 2, "condition": ["a"] * 3 + ["b"] * 3,
                           "estimate": [0.5, 0.6, 0.7, 0.4, 0.5, 0.5], "ci_low": 0.3,
                           "ci_high": 0.8, "panel": "T1"})
    assert marks(vlc.vegalite_to_svg(F.layer_curves(layers).to_json()), "line") == 2
    # one tick label per layer, each once (wrapped facets once printed "0 1 1 2 2")
    two_panels = layers.assign(panel=["T1"] * 3 + ["T2"] * 3)
    svg = vlc.vegalite_to_svg(F.layer_curves(two_panels).to_json())
    assert re.findall(r">(\d+)</text>", svg) == ["0", "1", "2"] * 2  # y labels are 0.0, 0.2, ...
    sel = pd.DataFrame({"target": ["T1", "T1", "T2"], "condition": ["a", "b", "a"],
                        "estimate": [0.1, 0.2, 0.3], "ci_low": 0.0, "ci_high": 0.4})
    svg = vlc.vegalite_to_svg(F.selectivity(sel).to_json())
    assert marks(svg, "symbol") == 3
    con = pd.DataFrame({"target": ["T1", "T2"], "estimate": [0.02, -0.01],
                        "ci_low": [-0.01, -0.03], "ci_high": [0.05, 0.01]})
    assert marks(vlc.vegalite_to_svg(F.contrast(con).to_json()), "symbol") == 2


def test_layer_cka_map_draws_one_cell_per_layer_pair():
    df = pd.DataFrame([(a, b, 1.0 - abs(a - b) / 4) for a in range(3) for b in range(4)],
                      columns=["layer_a", "layer_b", "cka"]).assign(panel="SBERT vs CLIP text")
    assert marks(vlc.vegalite_to_svg(F.layer_cka_map(df).to_json()), "rect") >= 12
    with pytest.raises(ValueError, match="layer_cka_map"):
        F.layer_cka_map(df.drop(columns="cka"))


def test_matrix_cells_symmetric_with_unit_diagonal():
    df = pd.DataFrame({"comparison": ["clip_text-sbert", "clip_image-sbert", "clip_text-sbert"],
                       "method": ["spearman", "spearman", "linear_cka"],
                       "estimate": [0.3, 0.1, 0.6]})
    cells = F.matrix_cells(df)
    sp = cells[cells["method"] == "spearman"].set_index(["a", "b"])["estimate"]
    assert sp[("clip_text", "sbert")] == sp[("sbert", "clip_text")] == 0.3
    assert sp[("sbert", "sbert")] == 1.0
    assert len(sp) == 3 * 3 - 2  # clip_text-clip_image never compared
    svg = vlc.vegalite_to_svg(F.pair_matrix(df).to_json())
    assert marks(svg, "rect") == len(cells)


def test_split_pair():
    assert F.split_pair("clip_text-sbert") == ("clip_text", "sbert")
    assert F.split_pair("sbert vs clip_image") == ("sbert", "clip_image")
    with pytest.raises(ValueError, match="cannot split"):
        F.split_pair("sbert")


def test_missing_columns_and_empty_data_are_errors(diffs):
    with pytest.raises(ValueError, match=r"forest: data lacks columns \['meta_category'\]"):
        F.forest(diffs.drop(columns="meta_category"))
    with pytest.raises(ValueError, match="no rows"):
        F.contrast(diffs.iloc[0:0])


def test_render_saves_svg_and_shows_it_per_format(tmp_path, monkeypatch, diffs):
    chart = F.contrast(diffs)
    monkeypatch.delenv("QUARTO_EXECUTE_INFO", raising=False)
    monkeypatch.setattr(F, "_bundle_sent", False)
    fig = F.render(chart, "c", tmp_path)
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<svg")
    assert {"image/svg+xml", "text/markdown"} <= set(fig._repr_mimebundle_())
    info = tmp_path / "info.json"
    info.write_text('{"format": {"identifier": {"base-format": "typst"}}}')
    monkeypatch.setenv("QUARTO_EXECUTE_INFO", str(info))
    bundle = F.render(chart, "c", tmp_path)._repr_mimebundle_()
    assert "text/html" not in bundle and "image/svg+xml" not in bundle
    assert bundle["text/markdown"] == f"![]({(tmp_path / 'c.svg').as_posix()})"  # fits the page
    info.write_text('{"format": {"identifier": {"base-format": "html"}}}')
    first = F.render(chart, "c", tmp_path)._repr_mimebundle_()
    second = F.render(chart, "d", tmp_path)._repr_mimebundle_()
    # HTML: Markdown with a raw HTML block (Quarto prefers text/html over the float around it)
    assert "text/html" not in first and first["text/markdown"].startswith("```{=html}\n")
    assert first["text/markdown"].endswith("\n```")
    # the Vega bundle once per document, in the first chart; no script from a CDN
    assert "window.vegaEmbed=" in first["text/markdown"]
    assert "window.vegaEmbed=" not in second["text/markdown"]
    assert 'vegaEmbed("#vega-d", {' in second["text/markdown"]
    for b in (first, second):
        assert "<script src" not in b["text/markdown"] and "cdn.jsdelivr" not in b["text/markdown"]
        assert "<table" not in b["text/markdown"]  # Quarto would try to parse it as a table


def test_wide_charts_are_scaled_to_the_pdf_text_width(tmp_path, monkeypatch):
    monkeypatch.delenv("QUARTO_EXECUTE_INFO", raising=False)
    df = pd.DataFrame([(t, f"condition {c}", 0.5, 0.4, 0.6) for t in "ab" for c in range(8)],
                      columns=["target", "condition", "estimate", "ci_low", "ci_high"])
    fig = F.render(F.relation_heatmap(df), "wide", tmp_path)
    width = float(re.search(r'<svg[^>]*width="([\d.]+)', fig.svg_path.read_text()).group(1))
    assert width > F.TEXT_WIDTH_PX
    m = re.fullmatch(r"!\[\]\((.+)\)\{width=(\d+)%\}", fig.markdown("typst"))
    assert m and m.group(1).endswith("wide.svg") and m.group(2) == "100"


def test_grounding_effects_one_point_per_pair_and_contrast_in_the_given_order():
    names = ["mean over axes", "vertical − horizontal", "vertical"]
    df = pd.DataFrame([{"pair": p, "name": n, "estimate": e}
                       for p, e0 in (("across pairs", 0.2), ("RoBERTa → OpenCLIP", 0.5))
                       for n, e in zip(names, (e0, -e0, 2 * e0))])
    df = df.assign(ci_low=df["estimate"] - 0.3, ci_high=df["estimate"] + 0.3)
    svg = vlc.vegalite_to_svg(F.grounding_effects(df).to_json())
    assert marks(svg, "symbol") == len(df)
    heads = [svg.index(f">{n}<") for n in names]
    assert heads == sorted(heads)
    with pytest.raises(ValueError, match="grounding_effects: no rows"):
        F.grounding_effects(df.iloc[:0])


def test_encoder_kinds_colours_each_kind_and_draws_every_encoder_once_per_axis():
    df = pd.DataFrame({"axis": ["vertical", "horizontal"] * 3,
                       "condition": ["SigLIP text"] * 2 + ["RoBERTa-base"] * 2 + ["RoBERTa-base (random weights)"] * 2,
                       "kind": ["grounded"] * 2 + ["text-only"] * 2 + ["random weights"] * 2,
                       "estimate": [0.8, 0.6, 0.7, 0.5, 0.5, 0.9]})
    df = df.assign(ci_low=df["estimate"] - 0.05, ci_high=df["estimate"] + 0.05)
    spec = F.encoder_kinds(df).to_dict()
    svg = vlc.vegalite_to_svg(F.encoder_kinds(df).to_json())
    assert marks(svg, "symbol") >= len(df)  # the points (+ legend symbols)
    assert all(f">{k}<" in svg for k in ("grounded", "text-only", "random weights"))
    colour = spec["spec"]["layer"][1]["encoding"]["color"]["scale"]
    assert colour["domain"] == ["grounded", "text-only", "random weights"]
    with pytest.raises(ValueError, match="lacks columns"):
        F.encoder_kinds(df.drop(columns="kind"))
