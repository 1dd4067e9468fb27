"""The manuscript's computed content: every cell runs against synthetic result sets written in
the pipeline's layout, the prose changes with the results (nothing is typed), and the checker
fails on a broken cell, an unresolved cross-reference and a missing required output."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.report import paper_check
from analysis.report import paper_data

ROOT = Path(__file__).resolve().parents[2]
RELATIONS = ["above", "below", "left of", "right of", "on", "under", "near", "behind"]
CONDITIONS = ["sbert", "clip_text"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_results(root: Path, seed: int, optional: bool = True,
                  conditions: list[str] = CONDITIONS) -> dict:
    """A synthetic set of pipeline outputs under ``root`` (results/, dvc.lock, dvc.yaml), in the
    formats of ARCHITECTURE.md; returns the values the paper should show."""
    rng = np.random.default_rng(seed)
    res = root / "results"
    rep = res / "probes/replication"
    rep.mkdir(parents=True, exist_ok=True)
    summary, per = [], {}
    for c in conditions:
        f1 = rng.uniform(0.45, 0.95, len(RELATIONS))
        collapsed = f1 < 0.5
        df = pd.DataFrame({
            "relation": RELATIONS, "n_samples": rng.integers(50, 400, len(RELATIONS)),
            "n_positive": 30, "n_negative": 20, "accuracy_mean": f1 + 0.01,
            "accuracy_std": 0.01, "f1_macro_mean": f1, "f1_macro_std": 0.02,
            "f1_weighted_mean": f1, "precision_macro_mean": f1, "recall_macro_mean": f1,
            "collapsed": collapsed, "f1_macro_majority": 0.49})
        df.to_csv(rep / f"{c}.csv", index=False)
        per[c] = df
        summary.append({"condition": c, "mean": f1.mean(), "std": f1.std(ddof=1),
                        "median": np.median(f1), "min": f1.min(), "max": f1.max(),
                        "n_relations": len(f1), "n_collapsed": int(collapsed.sum())})
    pd.DataFrame(summary).to_csv(rep / "summary.csv", index=False)
    comp = pd.DataFrame({"relation": RELATIONS,
                         **{f"{c}_f1": per[c]["f1_macro_mean"] for c in conditions}})
    comp.to_csv(rep / "comparison.csv", index=False)
    (res / "metrics").mkdir(parents=True, exist_ok=True)
    (res / "metrics/replication.json").write_text(json.dumps(
        {c: {"mean_f1_macro": s["mean"]} for c, s in zip(conditions, summary)}))

    n_rows = int(rng.integers(500, 900))
    (res / "vsr").mkdir(parents=True, exist_ok=True)
    (res / "vsr/report.json").write_text(json.dumps({
        "source": "mirror:synthetic", "meta_category_decisions": {},
        "totals": {"rows": n_rows, "unparsed": 3, "parse_rate": 1 - 3 / n_rows},
        "splits": {"random/train": {
            "rows": n_rows, "sha256": hashlib.sha256(str(seed).encode()).hexdigest(),
            "labels": {"0": n_rows // 2, "1": n_rows - n_rows // 2}, "parsed": n_rows - 3,
            "unparsed": 3, "parse_rate": 1 - 3 / n_rows,
            "relations": {r: 60 for r in RELATIONS},
            "meta_categories": {"Directional": 4, "Topological": 4}}}}))
    for c in conditions:
        d = res / "embeddings" / c / "random/train"
        d.mkdir(parents=True, exist_ok=True)
        (d / "meta.json").write_text(json.dumps({
            "condition": c, "model_id": f"hub/{c}-model", "revision": "a" * 40,
            "pooling": "mean", "dims": {"mean": 8}, "dataset_sha256": "b" * 64,
            "row_ids": [f"random/train/{i:05d}" for i in range(5)], "excluded": [],
            "device": "cpu", "dtype": "float32", "versions": {"torch": "2.13.0"},
            "views": ["mean"]}))

    expected = {"summary": pd.DataFrame(summary)}
    outs = {"probe_replication": ["results/probes/replication"],
            "vsr": ["results/vsr/report.json"],
            **{f"embed@{c}": [f"results/embeddings/{c}"] for c in conditions}}
    if optional:
        suite_rows = []
        for c in conditions:
            for t in RELATIONS + ["__all__"]:
                for layer in [-1, 0, 1, 2]:
                    e = rng.uniform(0.4, 0.9)
                    task = "T1" if t == "__all__" else "T1_ovr"  # the suite's task names
                    suite_rows.append((task, c, layer, t, "macro_f1", e, e - 0.05,
                                       e + 0.05, 400, 0.5))
            for split in ("T3_truth_random", "T3_truth_zeroshot"):
                e = rng.uniform(0.5, 0.8)
                suite_rows.append((split, c, -1, "__all__", "macro_f1", e, e - 0.04, e + 0.04,
                                   300, 0.5))
        cols = ["task", "condition", "layer", "target", "metric", "estimate", "ci_low",
                "ci_high", "n", "chance"]
        (res / "probes/suite/sbert").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(suite_rows, columns=cols).assign(p_value=np.nan, p_holm=np.nan,
                                                      p_bh=np.nan) \
            .to_csv(res / "probes/suite/sbert/scores.csv", index=False)
        (res / "stats").mkdir(parents=True, exist_ok=True)
        d = rng.normal(0, 0.05, len(RELATIONS))
        pd.DataFrame({"comparison": "clip_text - sbert", "task": "T1_ovr",
                      "condition": "clip_text - sbert", "layer": -1, "target": RELATIONS,
                      "metric": "macro_f1", "estimate": d, "ci_low": d - 0.03,
                      "ci_high": d + 0.03, "n": 400, "chance": 0.0,
                      "p_value": rng.uniform(0, 0.1, len(RELATIONS)),
                      "p_holm": rng.uniform(0, 0.2, len(RELATIONS)),
                      "p_bh": rng.uniform(0, 0.1, len(RELATIONS))}) \
            .to_csv(res / "stats/comparisons.csv", index=False)
        a = rng.normal(0, 0.05, 3)
        pd.DataFrame({"task": ["T1_ovr", "T2_polarity", "T3"], "condition": "clip_text - sbert",
                      "layer": -1, "target": "vertical-horizontal", "metric": "macro_f1",
                      "estimate": a, "ci_low": a - 0.02, "ci_high": a + 0.02, "n": 200,
                      "chance": 0.0, "p_value": rng.uniform(0, 1, 3)}) \
            .to_csv(res / "stats/asymmetry.csv", index=False)
        s = rng.uniform(0.05, 0.3, 2)
        pd.DataFrame({"task": "T1", "condition": conditions, "layer": -1,
                      "target": "__all__", "metric": "selectivity", "estimate": s,
                      "ci_low": s - 0.02, "ci_high": s + 0.02, "n": 400, "chance": 0.0}) \
            .to_csv(res / "stats/selectivity.csv", index=False)
        (res / "rsa").mkdir(parents=True, exist_ok=True)
        r = rng.uniform(0.2, 0.8, 2)
        pd.DataFrame({"comparison": ["clip_text - sbert", "clip_text - sbert"],
                      "method": ["spearman", "linear_cka"], "estimate": r, "ci_low": r - 0.05,
                      "ci_high": r + 0.05, "n_stimuli": 500, "p_value": 0.001}) \
            .to_csv(res / "rsa/items.csv", index=False)
        outs.update({"probe_suite": ["results/probes/suite"], "stats": ["results/stats"],
                     "rsa": ["results/rsa"]})
        expected.update(asymmetry=a, selectivity=s, rsa=r)

    lock = {"schema": "2.0", "stages": {}}
    for stage, paths in outs.items():
        entries = []
        for p in paths:
            full = root / p
            files = sorted(full.rglob("*")) if full.is_dir() else [full]
            digest = hashlib.md5("".join(_md5(f) for f in files if f.is_file()).encode())
            entries.append({"path": p, "md5": digest.hexdigest() + (".dir" if full.is_dir()
                                                                     else "")})
        lock["stages"][stage] = {"cmd": f"python -m analysis {stage}", "outs": entries,
                                 "params": {"params.yaml": {"probe_replication": {
                                     "min_count": 50, "C": 1.0, "solver": "lbfgs",
                                     "max_iter": 1000, "random_state": 42, "n_splits": 5,
                                     "variant": "random", "split": "train"}}}
                                 if stage == "probe_replication" else {}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    (root / "dvc.yaml").write_text("stages: {}\n")
    expected["lock"] = lock
    return expected


def paper_copy(tmp: Path) -> Path:
    shutil.copytree(ROOT / "paper", tmp / "paper",
                    ignore=shutil.ignore_patterns("_output", "_check", "figures", ".quarto"))
    return tmp / "paper"


def run_check(tmp: Path) -> str:
    summary = paper_check.check(tmp / "paper", root=tmp)
    return Path(summary["prose"]).read_text()


def fmt3(x: float) -> str:
    return f"{x:.3f}"


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    builds = []
    for seed in (1, 2):
        tmp = tmp_path_factory.mktemp(f"build{seed}")
        expected = write_results(tmp, seed)
        paper_copy(tmp)
        builds.append((tmp, expected, run_check(tmp)))
    return builds


def test_prose_numbers_follow_the_results(two_builds):
    (tmp_a, exp_a, prose_a), (tmp_b, exp_b, prose_b) = two_builds
    assert prose_a != prose_b
    for exp, prose, other in ((exp_a, prose_a, prose_b), (exp_b, prose_b, prose_a)):
        sbert = exp["summary"].set_index("condition").loc["sbert", "mean"]
        assert f"{fmt3(sbert)} for SBERT" in prose
        assert f"{fmt3(sbert)} for SBERT" not in other
        n_collapsed = int(exp["summary"]["n_collapsed"].sum())
        assert f"{n_collapsed} of the 16 condition × relation probes" in prose
        for a in exp["asymmetry"]:
            assert f"{a:.3f} [{a - 0.02:.3f}, {a + 0.02:.3f}]" in prose
        assert any(f"{r:.3f}" in prose for r in exp["rsa"])


def test_captions_carry_dvc_provenance(two_builds):
    tmp, exp, prose = two_builds[0]
    md5 = exp["lock"]["stages"]["probe_replication"]["outs"][0]["md5"]
    assert f"DVC stage `probe_replication`, `results/probes/replication` md5 `{md5[:12]}`" in prose
    assert "git commit `" in prose
    assert (tmp / "paper/_check/figures/forest.svg").read_text().lstrip().startswith("<svg")


def test_no_inline_expression_left_and_no_python_repr(two_builds):
    for _, _, prose in two_builds:
        assert "{python}" not in prose
        assert "<IPython" not in prose and "Txt(" not in prose


def test_absent_outputs_are_stated_and_unresolved_references_fail(tmp_path):
    """One execution, two checks: optional outputs missing are stated in the prose (the prose is
    written before the reference check fails), and a dangling @fig label and citation fail."""
    write_results(tmp_path, seed=3, optional=False, conditions=["sbert"])
    paper = paper_copy(tmp_path)
    qmd = paper / "_limitations.qmd"
    qmd.write_text(qmd.read_text() + "\nAs @fig-nowhere shows, and [@nobody2099]."
                   " Empty: `{python} ''`, nothing: `{python} Txt('')`.\n\n"
                   "::: {#fig-wrapped}\n```{python}\nP.not_available()\n```\n\nCaption.\n:::\n")
    with pytest.raises(paper_check.PaperCheckError) as err:
        paper_check.check(paper, root=tmp_path)
    assert "@fig-nowhere" in str(err.value) and "@nobody2099" in str(err.value)
    # the two patterns a real Quarto renders wrongly: a float div around a code cell, and an
    # inline value that is empty text (Quarto prints the expression's source instead)
    assert "figure/table div fig-wrapped wraps a code cell" in str(err.value)
    assert "inline expression `{python} ''` renders as empty" in str(err.value)
    assert "`{python} Txt('')`" not in str(err.value)  # renders as an empty span: fine
    assert "@fig-forest" not in str(err.value)  # defined even when its data is absent
    prose = (paper / "_check/index.md").read_text()
    assert "`results/stats/asymmetry.csv` is absent from this build" in prose
    assert "`results/rsa` is absent from this build" in prose
    assert re.search(r"Conditions not run in this build: CLIP text, CLIP image and CLIP image\+text",
                     prose)


def test_missing_required_output_fails_naming_it(tmp_path):
    write_results(tmp_path, seed=4, optional=False)
    (tmp_path / "results/probes/replication/summary.csv").unlink()
    paper_copy(tmp_path)
    with pytest.raises(paper_check.PaperCheckError,
                       match=r"results/probes/replication/summary.csv \(stage 'probe_replication'\)"):
        paper_check.check(tmp_path / "paper", root=tmp_path)


def test_broken_cell_fails(tmp_path):
    write_results(tmp_path, seed=5, optional=False)
    paper = paper_copy(tmp_path)
    qmd = paper / "_intro.qmd"  # early, so the check stops after a few cells
    qmd.write_text("```{python}\n1 / 0\n```\n\n" + qmd.read_text())
    with pytest.raises(paper_check.PaperCheckError, match=r"(?s)cell failed: code cell .*1 / 0.*"
                                                          r"ZeroDivisionError"):
        paper_check.check(paper, root=tmp_path)


def test_reference_scanner_on_hand_made_prose():
    xrefs, cites = paper_check.references(
        "See @fig-a and @tbl-b-c, [@smith2020; @doe_1999, p. 3], mail a@b.org, `@fig-code`.")
    assert xrefs == {"fig-a", "tbl-b-c"}
    assert cites == {"smith2020", "doe_1999"}


def test_provenance_from_lock(tmp_path, monkeypatch):
    exp = write_results(tmp_path, seed=7, optional=False)
    monkeypatch.setenv(paper_data.ROOT_ENV, str(tmp_path))
    [prov] = paper_data.provenance("results/probes/replication/sbert.csv")
    assert prov.stage == "probe_replication"
    assert prov.md5 == exp["lock"]["stages"]["probe_replication"]["outs"][0]["md5"]
    embeds = paper_data.provenance("results/embeddings")
    assert {p.stage for p in embeds} == {"embed@sbert", "embed@clip_text"}
    [untracked] = paper_data.provenance("results/nothing.csv")
    assert untracked.stage is None


def test_md_table_rounds_escapes_and_spells_out_mappings():
    df = pd.DataFrame({"a": ["x|y", "z"], "b": [0.12345, float("nan")], "n": [1, 2],
                       "pooling": [{"mean": "mean pooling over tokens, normalized"}, None]})
    lines = paper_data.md_table(df).splitlines()
    assert lines[0] == "| a | b | n | pooling |"
    assert re.fullmatch(r"\|:-+\|-+:\|-+:\|:-+\|", lines[1])  # text left, numbers right
    assert lines[2:] == ["| x\\|y | 0.123 | 1 | mean: mean pooling over tokens, normalized |",
                         "| z |  | 2 |  |"]
    dashes = [len(c.strip(":")) for c in lines[1].strip("|").split("|")]
    assert dashes[3] > 3 * dashes[2]  # the text column gets the room in a wide table
    assert paper_data.cell_text({"a": 1, "b": [2, 3]}) == "a: 1; b: 2, 3"
    assert paper_data.cell_text(np.array([1.5, 2.0])) == "1.500, 2.000"
    with pytest.raises(ValueError, match="no rows"):
        paper_data.table(df.iloc[0:0])


def test_labels_for_readers():
    L = paper_data.label
    assert L("T1") == "T1 relation identity" and L("T1_ovr") == "T1 one-vs-rest"
    assert L("__all__") == "all relations" and L("__all__", "T2_axis") == "all axes"
    assert L("clip_text - sbert") == "CLIP text − SBERT"
    assert L("sbert_random_s3") == "SBERT (random weights, seed 3)"
    assert L("meta:Projective") == "Projective (meta-category)"
    assert L("model:axis") == "axis model" and L("tau_a") == "Kendall τa"
    # every task and condition name the pipeline writes (params.smoke.yaml runs them all) has
    # a reader's label, without the pipeline's underscores
    names = ["T1", "T1_control", "T1_control_ovr", "T1_ovr", "T2_axis", "T2_polarity", "T3",
             "M_polarity", "C_polarity", "C_scene",
             "T3_holdout_random", "T3_holdout_zeroshot", "bow", "clip_concat", "clip_image",
             "clip_image_random", "clip_interaction", "clip_random_concat",
             "clip_random_interaction", "clip_random_zeroshot", "clip_text", "clip_text_random",
             "clip_zeroshot", "sbert", "sbert_random", "spearman", "linear_cka",
             "sbert_clip_concat", "sbert_clip_interaction"]
    assert [n for n in names if "_" in L(n) or L(n) == n] == []


def test_counts_in_words():
    assert [paper_data.words(n) for n in (0, 4, 7, 13, 20, 21, 99, 100, 1234)] == [
        "zero", "four", "seven", "thirteen", "twenty", "twenty-one", "ninety-nine", "100",
        "1,234"]
    assert paper_data.plural(7, "condition") == "seven conditions"
    assert paper_data.plural(1, "condition") == "one condition"
    assert [paper_data.times(n) for n in (1, 2, 5)] == ["once", "twice", "five times"]


def test_empty_inline_value_renders_as_nothing_not_as_its_source():
    empty = paper_data.Txt("")
    assert empty._repr_markdown_() == paper_data.EMPTY_MARKDOWN == repr(empty)
    assert (empty + "")._repr_markdown_() == paper_data.EMPTY_MARKDOWN
    assert paper_data.Txt("x")._repr_markdown_() == "x"


def test_captioned_float_is_whole_in_one_output(tmp_path, monkeypatch):
    monkeypatch.delenv("QUARTO_EXECUTE_INFO", raising=False)
    table = paper_data.table(pd.DataFrame({"a": [1]}))
    md = paper_data.captioned("tbl-x", table, "A caption. Source: here.").markdown("typst")
    assert md.startswith("::: {#tbl-x}\n\n| a |") and md.endswith("A caption. Source: here.\n\n:::\n")
    bundle = paper_data.captioned("fig-y", paper_data.not_available(), "Cap.")._repr_mimebundle_()
    assert "::: {#fig-y}" in bundle["text/markdown"] and "*Not available" in bundle["text/markdown"]
    with pytest.raises(ValueError, match="caption"):
        paper_data.captioned("fig-z", table, " ")
    with pytest.raises(ValueError, match="label"):
        paper_data.captioned("figure-z", table, "Cap.")
    with pytest.raises(ValueError, match="no content"):
        paper_data.captioned("fig-z", paper_data.Txt(""), "Cap.").markdown()


def test_adjacent_inline_expressions_are_caught():
    assert paper_check.ADJACENT.search("x `{python} a``{python} b` y")
    assert not paper_check.ADJACENT.search("x `{python} a` `{python} b` y\n```{python}\n")


def test_absent_says_whether_the_output_is_missing_or_lacks_rows(tmp_path, monkeypatch):
    from analysis.report import paper_data as P

    monkeypatch.setenv(P.ROOT_ENV, str(tmp_path))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert "is absent from this build" in str(P.absent("results/stats/asymmetry.csv", "The contrast"))
    (tmp_path / "results/stats").mkdir(parents=True)
    (tmp_path / "results/stats/asymmetry.csv").write_text("task,estimate\n")
    text = str(P.absent("results/stats/asymmetry.csv", "The contrast"))
    assert "has no rows for it" in text and "absent" not in text


def test_figures_land_beside_the_check_outputs_not_in_the_manuscript(two_builds):
    """`make smoke` checks the real `paper/` against `.smoke/` results: its figures must stay
    with the check's outputs (`<out>/figures`), never in `paper/figures`."""
    tmp, _, prose = two_builds[0]
    assert "](_check/figures/replication.svg)" in prose and str(tmp) not in prose
    svgs = sorted(p.name for p in (tmp / "paper/_check/figures").glob("*.svg"))
    assert "replication.svg" in svgs, svgs
    assert not (tmp / "paper/figures").exists()
