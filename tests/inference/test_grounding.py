"""The pre-registered grounding effect (analysis/inference/grounding.py): estimates against hand
computations, the stats stage's table, and the intervals' coverage by simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit, logit

from analysis.inference import grounding as G
from analysis.inference.stats import GroundingSettings, grounding_tables

AXES = ("vertical", "horizontal", "depth")
WORD_PAIRS = {"vertical": 3, "horizontal": 2, "depth": 2}  # as the pre-registered design


def simulate(rng, n_pairs=3, effect=(0.6, 0.0, 0.3), tau_pair=0.3, tau_axis=0.2, tau_cell=0.25,
             n=120):
    """Rows (condition, axis, cluster, correct) of ``n_pairs`` matched pairs whose true grounding
    effect on axis a is effect[a] + a pair effect + a pair x axis effect + cell noise (logit
    scale), and each pair's own true marginal effects (the per-pair estimand)."""
    frames, truth = [], {}
    base = {(a, c): rng.normal(0.8, 0.8) for a in AXES for c in range(WORD_PAIRS[a])}
    sizes = {k: int(rng.integers(n // 2, 2 * n)) for k in base}
    for p in range(n_pairs):
        u, own = rng.normal(0, tau_pair), {}
        for a, g in zip(AXES, effect):
            v, pb, pa, w = rng.normal(0, tau_axis), [], [], []
            for c in range(WORD_PAIRS[a]):
                lb = base[(a, c)] + rng.normal(0, 0.3)
                la = lb + g + u + v + rng.normal(0, tau_cell)
                k = sizes[(a, c)]
                for side, lo in (("before", lb), ("after", la)):
                    frames.append(pd.DataFrame({"condition": f"{side}{p}", "axis": a, "cluster": f"{a}{c}",
                                                "correct": (rng.random(k) < expit(lo)).astype(int)}))
                pb.append(expit(lb)), pa.append(expit(la)), w.append(k)
            own[a] = logit(np.average(pa, weights=w)) - logit(np.average(pb, weights=w))
        own["mean over axes"] = np.mean([own[a] for a in AXES])
        own["vertical - horizontal"] = own["vertical"] - own["horizontal"]
        truth[p] = own
    return pd.concat(frames, ignore_index=True), truth


def test_pair_effects_are_the_log_odds_differences_of_the_pooled_accuracies():
    rows, _ = simulate(np.random.default_rng(0), n_pairs=1)
    got = {c.name: c for c in G.pair_effects(rows, "before0", "after0")}
    acc = rows.groupby(["condition", "axis"])["correct"].mean()
    by_hand = {a: logit(acc[("after0", a)]) - logit(acc[("before0", a)]) for a in AXES}
    for a in AXES:
        assert got[a].estimate == pytest.approx(by_hand[a], abs=1e-6)
        assert got[a].df == WORD_PAIRS[a] - 1  # one axis: its word pairs less one
        assert got[a].ci_low < got[a].estimate < got[a].ci_high
        t = stats.t.ppf(0.975, got[a].df)
        assert got[a].ci_high - got[a].estimate == pytest.approx(t * got[a].se)
    assert got["mean over axes"].estimate == pytest.approx(np.mean(list(by_hand.values())), abs=1e-6)
    assert got["mean over axes"].df == sum(WORD_PAIRS.values()) - 3
    assert got["vertical - horizontal"].estimate == pytest.approx(
        by_hand["vertical"] - by_hand["horizontal"], abs=1e-6)
    assert got["vertical - horizontal"].n_clusters == sum(WORD_PAIRS.values())


def test_cell_differences_by_hand_and_a_mismatched_pair_is_refused():
    rows = pd.DataFrame({"condition": ["b"] * 4 + ["a"] * 4, "axis": "vertical",
                         "cluster": ["x", "x", "y", "y"] * 2, "correct": [1, 0, 1, 1, 1, 1, 0, 0]})
    cells = G.cell_differences(rows, {"p": ("b", "a")}, axes=("vertical",)).set_index("cluster")
    # x: before 1 of 2, after 2 of 2; y: before 2 of 2, after 0 of 2
    assert cells.loc["x", "difference"] == pytest.approx(np.log(2.5 / 0.5) - np.log(1.5 / 1.5))
    assert cells.loc["y", "difference"] == pytest.approx(np.log(0.5 / 2.5) - np.log(2.5 / 0.5))
    assert list(cells["n"]) == [2, 2]
    with pytest.raises(ValueError, match="different items"):
        G.cell_differences(rows.iloc[1:], {"p": ("b", "a")}, axes=("vertical",))


def test_across_pairs_in_a_balanced_design_is_the_mean_of_the_cell_differences():
    rows, _ = simulate(np.random.default_rng(1))
    pairs = {f"p{p}": (f"before{p}", f"after{p}") for p in range(3)}
    cells = G.cell_differences(rows, pairs)
    got = {c.name: c for c in G.across_pairs(cells)}
    per_axis = cells.groupby(["axis", "cluster"])["difference"].mean().groupby("axis").mean()
    for a in AXES:
        assert got[a].estimate == pytest.approx(per_axis[a], abs=1e-6)
        assert got[a].df == 2 and got[a].n_clusters == 3
    assert got["mean over axes"].estimate == pytest.approx(per_axis.mean(), abs=1e-6)
    assert got["vertical - horizontal"].estimate == pytest.approx(
        per_axis["vertical"] - per_axis["horizontal"], abs=1e-6)
    with pytest.raises(ValueError, match="need 2"):
        G.across_pairs(cells[cells["pair"] == "p0"])


def test_intervals_cover_the_truth_in_simulation():
    """95% intervals, per pair (truth: that pair's own effect) and across three pairs (truth: the
    population effect), cover in at least 90% of 60 simulated studies (binomial sd ~2.8%)."""
    rng = np.random.default_rng(2)
    effect = (0.6, 0.0, 0.3)
    truth = dict(zip(AXES, effect)) | {"mean over axes": np.mean(effect),
                                       "vertical - horizontal": effect[0] - effect[1]}
    n_sim, hit_across, hit_pair, n_pair = 60, dict.fromkeys(truth, 0), dict.fromkeys(truth, 0), 0
    for _ in range(n_sim):
        rows, own = simulate(rng, effect=effect)
        pairs = {f"p{p}": (f"before{p}", f"after{p}") for p in range(3)}
        for c in G.across_pairs(G.cell_differences(rows, pairs)):
            hit_across[c.name] += c.ci_low <= truth[c.name] <= c.ci_high
        for p, (b, a) in enumerate(pairs.values()):
            for c in G.pair_effects(rows, b, a):
                hit_pair[c.name] += c.ci_low <= own[p][c.name] <= c.ci_high
            n_pair += 1
    assert min(v / n_sim for v in hit_across.values()) >= 0.90, hit_across
    assert min(v / n_pair for v in hit_pair.values()) >= 0.90, hit_pair


def test_stats_table_runs_the_pairs_that_ran_and_says_which_did_not(tmp_path):
    rows, _ = simulate(np.random.default_rng(3))
    # the OOF layout the stats stage reads: one file per task, row ids mapped to relation words
    rows = rows.assign(row_id=[f"r{i}" for i in range(len(rows))])
    words = {"vertical0": ("above", "below"), "vertical1": ("over", "under"), "vertical2": ("on top of", "beneath"),
             "horizontal0": ("left of", "right of"), "horizontal1": ("at the left side of", "at the right side of"),
             "depth0": ("in front of", "behind"), "depth1": ("ahead of", "at the back of")}
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 2, len(rows))
    relation = [words[c][t] for c, t in zip(rows["cluster"], y_true)]
    oof = pd.DataFrame({"task": "M_polarity", "condition": rows["condition"], "layer": -1,
                        "target": rows["axis"], "repeat": rows["cluster"].str[-1].astype(int),
                        "row_id": rows["row_id"], "y_true": y_true,
                        "y_pred": np.where(rows["correct"] == 1, y_true, 1 - y_true)})
    path = tmp_path / "M_polarity.parquet"
    oof.to_parquet(path)
    relations = pd.DataFrame({"row_id": rows["row_id"], "relation": relation})
    matched = {"p0": ("before0", "after0"), "p1": ("before1", "after1"), "p2": ("before2", "after2"),
               "absent": ("zoo_x", "zoo_y")}
    out = grounding_tables([path], relations, matched, ["before0", "after0", "before1", "after1",
                                                        "before2", "after2", "zoo_x"], GroundingSettings())
    table = out["grounding"]
    co = table[table["analysis"] == "across pairs: co-primary (pre-registered)"]
    assert list(co["name"]) == ["mean over axes", "vertical - horizontal"]
    assert (co["p_holm"] >= co["p_value"]).all() and co["p_holm"].notna().all()
    per = table[(table["analysis"] == "per pair") & (table["status"] == "computed")]
    assert set(per["pair"]) == {"p0", "p1", "p2"}
    absent = table[table["pair"] == "absent"]
    assert len(absent) == 1 and absent["status"].iloc[0].startswith("not run")
    assert "zoo_x has no M_polarity rows" in absent["status"].iloc[0]
    assert "zoo_y not in conditions.text" in absent["status"].iloc[0]
    assert set(out["grounding_cells"]["pair"]) == {"p0", "p1", "p2"}
    # one pair only: the across-pair test is not computed, and says so
    one = grounding_tables([path], relations, {"p0": ("before0", "after0")}, ["before0", "after0"],
                           GroundingSettings())["grounding"]
    assert one[one["analysis"] == "across pairs"]["status"].iloc[0].startswith("not computed: 1 matched pair")
