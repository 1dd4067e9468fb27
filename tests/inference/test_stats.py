"""Tests for the `stats` stage on synthetic OOF predictions with known effects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.common import store
from sklearn.metrics import f1_score

from analysis.common.io import load_yaml
from analysis.common.params import stage_settings
from analysis.inference import stats as stats_stage

RELATIONS = {"above": "Projective", "below": "Projective", "left of": "Projective",
             "right of": "Projective", "near": "Proximity", "on": "Topological"}
VERTICAL = {"above", "below"}
ROWS_PER_RELATION = 60


def _vsr_table() -> pd.DataFrame:
    rels = np.repeat(list(RELATIONS), ROWS_PER_RELATION)
    n = len(rels)
    return pd.DataFrame({"row_id": [f"random/train/{i + 1:05d}" for i in range(n)], "line": np.arange(1, n + 1),
                         "relation": rels, "meta_category": [RELATIONS[r] for r in rels],
                         "label": np.random.default_rng(0).integers(0, 2, n),
                         "caption": [f"cap {i // 2}" for i in range(n)]})


def _noisy(rng, y, accuracy, n_classes=2):
    wrong = (y + rng.integers(1, n_classes, len(y))) % n_classes
    return np.where(rng.random(len(y)) < accuracy, y, wrong)


def _oof(table: pd.DataFrame, seed: int = 0) -> dict[str, pd.DataFrame]:
    """T3: truth probe per relation; clip_text beats sbert by a lot on vertical relations only.
    T3_control: the same rows with labels random per group. T1: multiclass, sbert only.
    T2_polarity: up/down and left/right, each repeat (held-out word) predicting its own rows."""
    rng = np.random.default_rng(seed)
    frames: dict[str, list[pd.DataFrame]] = {"T3": [], "T3_control": [], "T1": [], "T2_polarity": []}
    groups = "cap:" + table["caption"]

    def block(task, cond, layer, target, idx, y, acc, n_classes=2, held=None):
        out = []
        for repeat in range(2):
            if held is not None:  # T2: this repeat's test rows are its held-out words' rows
                idx_r, y_r = idx[held == repeat], y[held == repeat]
                out += block(task, cond, layer, target, idx_r, y_r, acc)[repeat:repeat + 1]
                out[-1]["repeat"] = repeat
                continue
            pred = _noisy(rng, y, acc, n_classes)
            score = np.clip(0.5 + (2 * pred - 1) * rng.uniform(0.05, 0.5, len(y)), 0, 1)
            out.append(pd.DataFrame({"task": task, "condition": cond, "layer": layer, "target": target,
                                     "repeat": repeat, "row_id": table["row_id"].to_numpy()[idx],
                                     "group": groups.to_numpy()[idx], "fold": rng.integers(0, 5, len(idx)),
                                     "y_true": y, "y_pred": pred, "score": score, "C": 1.0}))
        return out

    for rel in RELATIONS:
        idx = np.flatnonzero(table["relation"].to_numpy() == rel)
        y = table["label"].to_numpy()[idx]
        for cond, acc in (("clip_text", 0.97 if rel in VERTICAL else 0.7), ("sbert", 0.7)):
            for layer in (-1, 0):
                frames["T3"] += block("T3", cond, layer, rel, idx, y, acc)
            ctrl_y = pd.Series(rng.integers(0, 2, len(idx))).groupby(groups.to_numpy()[idx]).transform("first")
            frames["T3_control"] += block("T3_control", cond, -1, rel, idx, ctrl_y.to_numpy(), 0.5)
    y_rel = pd.factorize(table["relation"])[0]
    frames["T1"] += block("T1", "sbert", -1, "__all__", np.arange(len(table)), y_rel, 0.6, len(RELATIONS))
    rel = table["relation"].to_numpy()
    for axis, (pos, neg) in {"vertical": ("above", "below"), "horizontal": ("left of", "right of")}.items():
        idx = np.flatnonzero(np.isin(rel, [pos, neg]))
        y = (rel[idx] == pos).astype(int)
        held = (np.arange(len(idx)) % 4 < 2).astype(int)  # two "word" assignments, disjoint rows
        for cond, acc in (("clip_text", 0.97 if axis == "vertical" else 0.75), ("sbert", 0.75)):
            frames["T2_polarity"] += block("T2_polarity", cond, -1, axis, idx, y, acc, held=held)
    return {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}


def suite_scores(oof: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The suite's scores.csv as far as `stats` reads it: a chance level per probe and metric
    (distinct made-up values, so the test can see they are copied, not recomputed)."""
    rows = []
    keys = ["task", "condition", "layer", "target"]
    probes = pd.concat(oof.values())[keys].drop_duplicates().itertuples(index=False)
    for k, (task, cond, layer, target) in enumerate(probes):
        base = {"task": task, "condition": cond, "layer": layer, "target": target}
        rows += [{**base, "metric": "macro_f1", "estimate": 0.0, "chance": 0.40 + k / 1000},
                 {**base, "metric": "macro_f1_majority", "estimate": 0.30 + k / 1000, "chance": np.nan},
                 {**base, "metric": "macro_f1_stratified", "estimate": 0.40 + k / 1000, "chance": np.nan},
                 {**base, "metric": "auprc", "estimate": 0.0, "chance": 0.20 + k / 1000},
                 {**base, "metric": "accuracy", "estimate": 0.0, "chance": 0.60 + k / 1000}]
    return pd.DataFrame(rows)


@pytest.fixture
def workspace(tmp_path, monkeypatch, repo_root):
    """A repo-shaped tmp dir with a VSR table, OOF files and the smoke params (stats section)."""
    monkeypatch.chdir(tmp_path)
    table = _vsr_table()
    (tmp_path / "data/vsr/random").mkdir(parents=True)
    table.to_parquet(tmp_path / "data/vsr/random/train.parquet")
    oof = _oof(table)
    scores = suite_scores(oof)
    units = ["sbert", "clip_text"]
    for unit in units + ["bow"]:  # one folder per unit, as the suite's stages write them
        d = tmp_path / "results/probes/suite" / unit
        (d / "oof").mkdir(parents=True)
        for task, df in oof.items():
            part = df[df["condition"] == unit]
            if len(part):
                part.to_parquet(d / "oof" / f"{task}.parquet")
        scores[scores["condition"] == unit].to_csv(d / "scores.csv", index=False)
    stale = tmp_path / "results/probes/suite/clip_old"  # a unit no longer selected: not read
    (stale / "oof").mkdir(parents=True)
    oof["T3"].assign(condition="clip_old").to_parquet(stale / "oof" / "T3.parquet")
    params = load_yaml((repo_root / "params.smoke.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"stats": params["stats"], "conditions": {"text": units}}))
    return tmp_path


def _raw(workspace, task):
    """A task's OOF predictions over the selected units."""
    return pd.concat([pd.read_parquet(p) for p in sorted(
        (workspace / "results/probes/suite").glob(f"*/oof/{task}.parquet")) if "clip_old" not in str(p)],
        ignore_index=True)


NULL = "results/probes/suite/sbert/null.parquet"


def test_stage_outputs_and_known_effects(workspace):
    assert stats_stage.main(["--params", "params.yaml"]) == 0
    out = workspace / "results/stats"
    tables = {name: pd.read_csv(out / f"{name}.csv")
              for name in ("scores", "comparisons", "meta_categories", "asymmetry", "selectivity")}
    # the selected units only (params `conditions`): a stale unit's folder is not read
    assert json.loads((out / "report.json").read_text())["units"] == ["sbert", "clip_text", "bow"]
    assert "clip_old" not in set(tables["scores"]["condition"])
    for name, df in tables.items():
        assert list(df.columns[:len(stats_stage.TIDY)]) == stats_stage.TIDY, name
        assert not df.duplicated(["task", "condition", "layer", "target", "metric"]).any(), name
        assert ((df["ci_low"] <= df["estimate"] + 1e-12) & (df["estimate"] <= df["ci_high"] + 1e-12)).all(), name

    # scores: the estimate is sklearn's macro F1 averaged over repeats, from the raw OOF file
    scores = tables["scores"]
    raw = _raw(workspace, "T3")
    one = raw[(raw["condition"] == "sbert") & (raw["layer"] == -1) & (raw["target"] == "near")]
    expect = np.mean([f1_score(d["y_true"], d["y_pred"], average="macro") for _, d in one.groupby("repeat")])
    row = scores.query("task == 'T3' and condition == 'sbert' and layer == -1 and target == 'near' "
                       "and metric == 'macro_f1'").iloc[0]
    assert row["estimate"] == pytest.approx(expect) and row["n"] == ROWS_PER_RELATION
    assert row["n_groups"] == ROWS_PER_RELATION // 2 and row["n_repeats"] == 2
    assert set(scores.query("layer == 0")["metric"]) == {"macro_f1"}  # layer_metrics
    assert set(scores.query("task == 'T1'")["metric"]) == {"macro_f1", "accuracy"}  # no AUPRC for multiclass
    # chance levels are the suite's (computed on the probe's own rows and folds), copied
    suite = pd.concat([pd.read_csv(workspace / f"results/probes/suite/{u}/scores.csv")
                       for u in ("sbert", "clip_text")])
    merged = scores.merge(suite[["task", "condition", "layer", "target", "metric", "chance"]],
                          on=["task", "condition", "layer", "target", "metric"], suffixes=("", "_suite"))
    assert len(merged) == len(scores)
    np.testing.assert_allclose(merged["chance"], merged["chance_suite"])
    t1 = scores.query("task == 'T1' and metric == 'macro_f1'").iloc[0]
    maj = suite.query("task == 'T1' and metric == 'macro_f1_majority'")["estimate"].iloc[0]
    assert t1["chance_majority"] == pytest.approx(maj)

    # comparisons: clip_text - sbert at the primary layer, large on vertical relations only
    comp = tables["comparisons"].query("task == 'T3' and metric == 'macro_f1'")
    assert set(comp["condition"]) == {"clip_text - sbert"} and set(comp["layer"]) == {-1}
    assert len(comp) == len(RELATIONS)
    vert = comp[comp["target"].isin(VERTICAL)]
    assert (vert["estimate"] > 0.1).all() and (vert["ci_low"] > 0).all() and (vert["p_holm"] < 0.05).all()
    assert (comp["p_holm"] >= comp["p_value"] - 1e-12).all() and (comp["p_bh"] <= comp["p_holm"] + 1e-12).all()
    assert comp["estimate"].to_numpy() == pytest.approx((comp["estimate_a"] - comp["estimate_b"]).to_numpy())
    assert tables["comparisons"].query("task == 'T1'").empty  # clip_text has no T1 probe: nothing filled

    # meta-categories: the mean over member relations of the per-relation scores
    meta = tables["meta_categories"].query("task == 'T3' and condition == 'sbert' and metric == 'macro_f1'")
    proj = meta[meta["target"] == "Projective"].iloc[0]
    per_rel = scores.query("task == 'T3' and condition == 'sbert' and layer == -1 and metric == 'macro_f1'")
    members = [r for r, c in RELATIONS.items() if c == "Projective"]
    assert proj["estimate"] == pytest.approx(per_rel[per_rel["target"].isin(members)]["estimate"].mean())
    assert proj["n_targets"] == 4 and proj["n"] == 4 * ROWS_PER_RELATION
    diff = tables["meta_categories"].query("task == 'T3' and condition == 'clip_text - sbert' and "
                                           "target == 'Projective' and metric == 'macro_f1'").iloc[0]
    assert diff["estimate"] == pytest.approx(comp[comp["target"].isin(members)]["estimate"].mean())
    assert diff["ci_low"] > 0  # vertical relations carry a large clip_text advantage
    assert tables["meta_categories"].query("task == 'T3_control'").empty

    # asymmetry: vertical advantage of clip_text; relations are the units of the test, and with
    # two relations a side there are only C(4, 2) = 6 splits: p = 1/6 at best, reported as such
    asym = tables["asymmetry"].query("task == 'T3' and metric == 'macro_f1'").iloc[0]
    assert asym["estimate"] > 0.1 and asym["ci_low"] > 0
    assert asym["exact_permutation"] and asym["min_attainable_p"] == pytest.approx(1 / 6)
    assert asym["p_value"] == pytest.approx(1 / 6) and asym["alternative"] == "greater"
    assert asym["n_vertical"] == asym["n_horizontal"] == 2 * ROWS_PER_RELATION
    assert asym["n_vertical_targets"] == asym["n_horizontal_targets"] == 2

    # T2: repeats (held-out-word assignments) predict different rows; sides are named targets
    t2 = tables["scores"].query("task == 'T2_polarity' and condition == 'sbert' and target == 'vertical' "
                                "and metric == 'macro_f1'").iloc[0]
    assert t2["n"] == 2 * ROWS_PER_RELATION and t2["n_repeats"] == 2
    raw2 = _raw(workspace, "T2_polarity").query(
        "condition == 'sbert' and target == 'vertical'")
    assert t2["estimate"] == pytest.approx(np.mean([f1_score(d["y_true"], d["y_pred"], average="macro")
                                                    for _, d in raw2.groupby("repeat")]))
    asym2 = tables["asymmetry"].query("task == 'T2_polarity' and metric == 'macro_f1'").iloc[0]
    assert asym2["vertical_targets"] == "vertical" and asym2["horizontal_targets"] == "horizontal"
    assert asym2["estimate"] > 0.1 and asym2["ci_low"] > 0
    assert asym2["min_attainable_p"] == 0.5  # one target a side: no test is possible below 1/2

    # selectivity: task minus control on the same rows
    sel = tables["selectivity"].query("metric == 'macro_f1'")
    assert len(sel) == 2 * len(RELATIONS) and set(sel["task"]) == {"T3"}
    assert sel["estimate"].to_numpy() == pytest.approx((sel["estimate_task"] - sel["estimate_control"]).to_numpy())
    assert (sel["estimate"] > 0).all()

    report = json.loads((out / "report.json").read_text())
    assert any(m.startswith("asymmetry T1_ovr: no OOF") for m in report["missing"])
    assert not any(m.startswith("asymmetry T2_polarity") for m in report["missing"])
    # the headline metrics (`dvc metrics show`): only stats.headline's tasks, in one metric
    metrics = json.loads((workspace / "results/metrics.json").read_text())["stats"]
    assert metrics["metric"] == "macro_f1" and set(metrics["scores"]) == {"T2_polarity"}
    all_t2 = _raw(workspace, "T2_polarity").query("layer == -1")
    for cond, rows in all_t2.groupby("condition"):
        per_target = [np.mean([f1_score(d["y_true"], d["y_pred"], average="macro") for _, d in t.groupby("repeat")])
                      for _, t in rows.groupby("target")]
        assert metrics["scores"]["T2_polarity"][cond] == pytest.approx(np.mean(per_target), abs=1e-6)
    assert metrics["asymmetry"]["T3"] == pytest.approx(
        {k: asym[k] for k in ("estimate", "ci_low", "ci_high")}, abs=1e-6)
    assert set(metrics["asymmetry"]) == set(tables["asymmetry"]["task"])
    n_values = sum(len(v) for v in metrics["scores"].values()) + 3 * len(metrics["asymmetry"])
    assert n_values <= 24


def test_rerun_is_deterministic(workspace):
    stats_stage.main(["--params", "params.yaml"])
    first = (workspace / "results/stats/comparisons.csv").read_text()
    stats_stage.main(["--params", "params.yaml"])
    assert (workspace / "results/stats/comparisons.csv").read_text() == first


def _estimate(workspace, cond, target):
    raw = _raw(workspace, "T3")
    one = raw[(raw["condition"] == cond) & (raw["layer"] == -1) & (raw["target"] == target)]
    return np.mean([f1_score(d["y_true"], d["y_pred"], average="macro") for _, d in one.groupby("repeat")])


def test_null_scores_give_pvalues_of_the_printed_statistic(workspace):
    obs = _estimate(workspace, "clip_text", "above")
    sampled = [{"task": "T3", "condition": "clip_text", "layer": -1, "target": "above",
                "metric": "macro_f1", "permutation": i, "estimate": e, "observed": obs,
                "exact": False, "scheme": "group labels exchanged"}
               for i, e in enumerate(np.r_[np.linspace(0.3, 0.6, 18), obs + 0.01])]
    obs2 = _estimate(workspace, "sbert", "above")
    exact = [{"task": "T3", "condition": "sbert", "layer": -1, "target": "above", "metric": "macro_f1",
              "permutation": i, "estimate": e, "observed": obs2, "exact": True, "scheme": "words relabelled"}
             for i, e in enumerate([obs2, obs2, 0.5, 0.4, 0.45, 0.41])]
    pd.DataFrame(sampled + exact).to_parquet(workspace / NULL)
    stats_stage.main(["--params", "params.yaml"])
    scores = pd.read_csv(workspace / "results/stats/scores.csv")
    q = "task == 'T3' and layer == -1 and target == 'above' and metric == 'macro_f1'"
    row = scores.query(q + " and condition == 'clip_text'").iloc[0]
    assert row["p_value"] == pytest.approx(2 / 20) and row["n_null"] == 19  # add-one: (1 + 1) / (1 + 19)
    row = scores.query(q + " and condition == 'sbert'").iloc[0]
    assert row["p_value"] == pytest.approx(2 / 6) and row["min_attainable_p"] == pytest.approx(1 / 6)
    assert row["null_exact"] and row["null_scheme"] == "words relabelled"
    assert scores.query("target == 'below'")["p_value"].isna().all()  # no null: no p-value invented


def test_a_null_of_another_statistic_is_refused(workspace):
    rows = [{"task": "T3", "condition": "clip_text", "layer": -1, "target": "above", "metric": "macro_f1",
             "permutation": i, "estimate": 0.5, "observed": 0.123, "exact": False, "scheme": "x"}
            for i in range(5)]
    pd.DataFrame(rows).to_parquet(workspace / NULL)
    with pytest.raises(ValueError, match="is not the estimate"):
        stats_stage.main(["--params", "params.yaml"])


def test_bad_oof_is_a_clear_error(tmp_path):
    table = _vsr_table()
    df = _oof(table)["T1"]
    df.drop(columns=["C"]).to_parquet(tmp_path / "T1.parquet")
    with pytest.raises(ValueError, match=r"T1\.parquet: missing columns \['C'\]"):
        stats_stage.read_oof(tmp_path)
    dup = pd.concat([df, df.iloc[:1]])  # a row predicted twice in one repeat
    dup.to_parquet(tmp_path / "T1.parquet")
    with pytest.raises(ValueError, match="appears twice in repeat 0"):
        stats_stage.to_predictions(stats_stage.read_oof(tmp_path), ("T1", "sbert", -1, "__all__"))
    flip = df.copy()
    flip.loc[flip.index[-1], "y_true"] = (flip["y_true"].iloc[-1] + 1) % len(RELATIONS)  # label differs by repeat
    flip.to_parquet(tmp_path / "T1.parquet")
    with pytest.raises(ValueError, match="differs between repeats"):
        stats_stage.to_predictions(stats_stage.read_oof(tmp_path), ("T1", "sbert", -1, "__all__"))
    assert stats_stage.base_task("T1_control_ovr") == "T1_ovr" and stats_stage.base_task("T3") is None
    with pytest.raises(FileNotFoundError, match="probe suite's stages"):
        stats_stage.oof_files([store.SuiteUnit("sbert", tmp_path / "nowhere")])
    with pytest.raises(FileNotFoundError, match=r"probe suite units without output .*\['bow'\]"):
        store.suite_units(["bow"], tmp_path / "nowhere")


def test_to_predictions_sorts_items_and_links_groups_across_repeats():
    df = pd.DataFrame({"row_id": ["r2", "r1", "r3", "r1", "r2", "r3"], "repeat": [0, 0, 0, 1, 1, 1],
                       "group": ["g2", "g1", "g3", "g1", "g9", "g3"],  # r2: g2 in repeat 0, g9 in repeat 1
                       "y_true": [1, 0, 1, 0, 1, 1], "y_pred": [1, 1, 0, 0, 1, 1],
                       "score": [0.9, 0.6, 0.4, 0.2, 0.8, 0.7]})
    df = df.astype({"row_id": "category", "group": "category"})
    pred = stats_stage.to_predictions(df, ("T", "c", -1, "t"))
    codes = dict(zip(df["row_id"].cat.categories, range(3)))
    np.testing.assert_array_equal(pred.repeat, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(pred.rows, [codes["r1"], codes["r2"], codes["r3"]] * 2)
    np.testing.assert_array_equal(pred.score, [0.6, 0.9, 0.4, 0.2, 0.8, 0.7])
    g = pred.groups
    assert g[1] == g[4] and len({g[0], g[1], g[2]}) == 3  # g2 and g9 merged (both hold r2), others apart


def test_plot_tables_by_hand():
    """dvc.yaml's `plots:` data: per-relation rows of the headline task at the primary layer,
    one curve per task and condition (pooled score, else the mean over targets), the contrasts."""
    rows = [  # task, condition, layer, target, metric, estimate
        ("T1_ovr", "sbert", -1, "above", "macro_f1", 0.9), ("T1_ovr", "sbert", -1, "above", "auprc", 0.1),
        ("T1_ovr", "sbert", 0, "above", "macro_f1", 0.5), ("T1_ovr", "bow", -1, "left of", "macro_f1", 0.7),
        ("T3", "sbert", -1, "above", "macro_f1", 0.3),
        ("T1", "sbert", 0, "__all__", "macro_f1", 0.6), ("T1", "sbert", 1, "__all__", "macro_f1", 0.8),
        ("T2_axis", "sbert", 0, "vertical", "macro_f1", 0.2), ("T2_axis", "sbert", 0, "horizontal", "macro_f1", 0.4),
    ]
    scores = pd.DataFrame(rows, columns=["task", "condition", "layer", "target", "metric", "estimate"])
    scores["ci_low"], scores["ci_high"] = scores["estimate"] - 0.1, scores["estimate"] + 0.1
    asym = pd.DataFrame([("T3", -1, "macro_f1", 0.05, -0.1, 0.2, 0.3), ("T3", -1, "auprc", 9, 9, 9, 9),
                         ("T3", 0, "macro_f1", 9, 9, 9, 9)],
                        columns=["task", "layer", "metric", "estimate", "ci_low", "ci_high", "p_value"])
    params = load_yaml(Path(__file__).resolve().parents[2] / "params.smoke.yaml")
    cfg = stage_settings(stats_stage.StatsSettings, params, "stats")
    assert cfg.headline.relation_task == "T1_ovr" and cfg.headline.metric == "macro_f1"
    out = stats_stage.plot_tables(scores, asym, cfg)
    rel = out["relations"].sort_values("relation").reset_index(drop=True)
    assert rel.to_dict("list") == {"relation": ["above", "left of"], "condition": ["sbert", "bow"],
                                   "estimate": [0.9, 0.7], "ci_low": pytest.approx([0.8, 0.6]),
                                   "ci_high": pytest.approx([1.0, 0.8])}
    curves = {(r.series, r.layer): r.estimate for r in out["layers"].itertuples()}
    assert curves == pytest.approx({("T1 sbert", 0): 0.6, ("T1 sbert", 1): 0.8,
                                    ("T1_ovr sbert", 0): 0.5, ("T2_axis sbert", 0): 0.3})
    assert out["asymmetry"].to_dict("records") == [
        {"task": "T3", "estimate": 0.05, "ci_low": -0.1, "ci_high": 0.2, "p_value": 0.3}]


def test_controlled_splits_are_per_held_out_form_pair(tmp_path):
    """controlled_splits: one row per (task, condition, axis, split) of the C_* tasks with the
    split's form pairs from the unit's report, its primary-layer rows and accuracy (by hand)."""
    from analysis.inference.stats import controlled_splits
    rng = np.random.default_rng(0)
    unit = store.SuiteUnit("sbert", tmp_path)
    unit.oof_dir.mkdir(parents=True)
    n = 40
    oof = pd.DataFrame({"task": "C_scene", "condition": "sbert", "layer": np.r_[[-1] * n, [0] * n],
                        "target": "vertical", "repeat": np.tile(np.repeat([0, 1], n // 2), 2),
                        "row_id": [f"templates/spatial/{i:05d}" for i in range(2 * n)],
                        "group": "a|b", "fold": 0, "y_true": rng.integers(0, 2, 2 * n),
                        "y_pred": rng.integers(0, 2, 2 * n), "score": 0.5, "C": 1.0})
    oof.to_parquet(unit.oof_dir / "C_scene.parquet")
    oof.assign(task="T1").to_parquet(unit.oof_dir / "T1.parquet")  # not a controlled task
    splits = [{"split": 0, "train_pairs": ["over / under", "higher than / lower than"],
               "test_pair": "above / below"},
              {"split": 1, "train_pairs": ["above / below", "higher than / lower than"],
               "test_pair": "over / under"}]
    (unit.dir / "report.json").write_text(json.dumps(
        {"controlled": {"C_scene:vertical": {"splits": splits}}}))
    out = controlled_splits(sorted(unit.oof_dir.glob("*.parquet")), [unit])
    assert len(out) == 2 and set(out["task"]) == {"C_scene"}
    prim = oof[oof["layer"] == -1]
    for r, row in out.set_index("split").iterrows():
        part = prim[prim["repeat"] == r]
        assert row["n"] == len(part)
        assert row["accuracy"] == pytest.approx((part["y_true"] == part["y_pred"]).mean())
    assert out.loc[0, "test_pair"] == "above / below"
    assert out.loc[0, "train_pairs"] == "over / under + higher than / lower than"
    assert controlled_splits([unit.oof_dir / "T1.parquet"], [unit]).empty


def test_dimension_controls_pool_projection_seeds(tmp_path):
    """dimension_controls: per (task, condition, axis, method, size), the accuracy over both
    seeds' OOF rows (= the mean of the seeds' accuracies on equal rows), the seeds' sd by
    hand, an interval around it over noun-pair groups; code_lengths joins the units' tables."""
    from analysis.inference.stats import code_lengths, dimension_controls
    rng = np.random.default_rng(0)
    unit = store.SuiteUnit("sbert", tmp_path)
    (unit.dir / "controls").mkdir(parents=True)
    n = 60
    parts = []
    y = rng.integers(0, 2, n)  # a row's label is the same under every projection
    for seed, p_correct in ((0, 0.9), (1, 0.6)):
        pred = np.where(rng.random(n) < p_correct, y, 1 - y)
        parts.append(pd.DataFrame({
            "task": "M_polarity", "condition": "sbert", "layer": -1, "target": "vertical",
            "repeat": 0, "fold": 0, "row_id": [f"random/train/{i:05d}" for i in range(n)],
            "group": [f"g{i % 12}" for i in range(n)], "y_true": y, "y_pred": pred, "score": 0.5,
            "C": 1.0, "method": "random", "size": 64, "seed": seed}))
    df = pd.concat(parts, ignore_index=True)
    df.to_parquet(unit.dir / "controls" / "dimension.parquet")
    pd.DataFrame({"task": ["M_polarity"], "target": ["vertical"], "condition": ["sbert"],
                  "online_bits": [30.0], "uniform_bits": [60.0], "compression": [2.0],
                  "n": [60]}).to_csv(unit.dir / "controls" / "mdl.csv", index=False)
    params = load_yaml(Path(__file__).resolve().parents[2] / "params.smoke.yaml")
    cfg = stage_settings(stats_stage.StatsSettings, params, "stats")
    out = dimension_controls([unit, store.SuiteUnit("bow", tmp_path)], cfg)
    assert len(out) == 1
    row = out.iloc[0]
    accs = [(p["y_true"] == p["y_pred"]).mean() for p in parts]
    assert row["estimate"] == pytest.approx(np.mean(accs))
    assert row["seed_sd"] == pytest.approx(np.std(accs, ddof=1))
    assert row["n_seeds"] == 2 and row["n_groups"] == 12 and row["size"] == 64
    assert row["ci_low"] < row["estimate"] < row["ci_high"]
    assert code_lengths([unit])["compression"].tolist() == [2.0]
    assert dimension_controls([store.SuiteUnit("bow", tmp_path)], cfg).empty
