"""The DVC pipeline end to end on the offline smoke profile (fixture data, tiny models)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.common.io import load_yaml
from tests.conftest import REPRO_TARGETS, run_tool

pytestmark = pytest.mark.slow


def test_dvc_repro_produces_every_stage_output(smoke_workspace):
    ws = smoke_workspace
    report = json.loads((ws / "results/vsr/report.json").read_text())
    assert report  # the vsr stage's metrics
    params = load_yaml((ws / "params.yaml").read_text())
    conditions = [*params["conditions"]["text"], *params["conditions"]["image"]]
    for cond in conditions:
        assert (ws / f"results/embeddings/{cond}/random/train/meta.json").exists(), cond
    summary = pd.read_csv(ws / "results/probes/replication/summary.csv")
    assert set(summary["condition"]) == set(conditions)
    units = [*params["conditions"]["text"], "bow", *params["conditions"]["pairs"]]
    for unit in units:  # one suite folder per unit, each its own DVC stage's output
        assert (ws / f"results/probes/suite/{unit}/scores.csv").exists(), unit
    assert json.loads((ws / "results/stats/report.json").read_text())["units"] == units
    # the pre-registered contrast on the matched task (the smoke profile has one seed per twin)
    conf = pd.read_csv(ws / "results/stats/confirmatory.csv")
    primary = conf[conf["analysis"] == "primary (pre-registered)"]
    assert list(primary["name"]) == ["mean over axes"] and (conf["status"] == "computed").all()
    assert (primary["ci_low"] < primary["estimate"]).all() and (primary["estimate"] < primary["ci_high"]).all()
    splits = pd.read_csv(ws / "results/stats/matched_splits.csv")
    assert len(splits) and (splits["train_pair"] != splits["test_pair"]).all()
    assert set(splits["condition"]) == set(params["conditions"]["text"]) | {"bow"}
    # the matched pairs' pre-registered grounding test (issue 14): the pairs that ran, the one that
    # did not, and the geometry of tower vs initialization
    ran = [k for k, m in params["conditions"]["matched"].items()
           if m["before"] in params["conditions"]["text"] and m["after"] in params["conditions"]["text"]]
    grounding = pd.read_csv(ws / "results/stats/grounding.csv")
    co = grounding[grounding["analysis"] == "across pairs: co-primary (pre-registered)"]
    assert list(co["name"]) == ["mean over axes", "vertical - horizontal"]
    assert (co["n_clusters"] == len(ran)).all() and (co["df"] == len(ran) - 1).all()
    assert co["p_holm"].between(0, 1).all() and (co["ci_low"] < co["ci_high"]).all()
    per = grounding[grounding["analysis"] == "per pair"]
    assert set(per.loc[per["status"] == "computed", "pair"]) == set(ran)
    for k in set(params["conditions"]["matched"]) - set(ran):
        assert per.loc[per["pair"] == k, "status"].str.startswith("not run").all(), k
    layers = pd.read_csv(ws / "results/rsa/matched_layers.csv")
    assert set(layers["pair"]) == set(ran) and {"after", "before_random"} <= set(layers["comparison"])
    frames = pd.read_csv(ws / "results/stats/reference_frames.csv", dtype={"reference_frame": str})
    sb = frames[frames["condition"] == "sbert"]  # the fixture records frames 0 and 1 on some rows
    assert {"not recorded", "1"} <= set(sb["reference_frame"]) and sb["accuracy"].between(0, 1).all()
    train = pd.read_parquet(ws / "data/vsr/random/train.parquet")
    counts = train["relation"].value_counts()
    expected = sorted(counts[counts >= params["probe_replication"]["min_count"]].index)
    per = pd.read_csv(ws / "results/probes/replication/sbert.csv")
    assert sorted(per["relation"]) == expected


def test_second_repro_is_a_no_op(smoke_workspace):
    status = run_tool(["dvc", "status", *(["--with-deps", *REPRO_TARGETS] if REPRO_TARGETS else [])],
                      smoke_workspace)
    assert status.returncode == 0, status.stderr
    assert "up to date" in status.stdout, status.stdout
    again = run_tool(["dvc", "repro", *REPRO_TARGETS], smoke_workspace)
    assert again.returncode == 0, again.stderr
    assert "Running stage" not in again.stdout, again.stdout
    assert_clean_git(smoke_workspace)


def assert_clean_git(ws):
    """Git sees only what an author commits after `dvc repro`: dvc.lock and the small
    `cache: false` outputs meant for git (the metrics, the VSR report); DVC's .gitignore files
    cover every other output (data/, embeddings, tables, the rendered paper)."""
    stages = load_yaml((ws / "dvc.yaml").read_text())["stages"]
    for_git = {"dvc.lock"}
    for spec in stages.values():
        spec = spec.get("do", spec)
        for out in spec.get("outs", []) + spec.get("metrics", []):
            if isinstance(out, dict):
                (path, opts), = out.items()
                if opts.get("cache") is False and not opts.get("persist"):
                    for_git.add(path)
    git = run_tool(["git", "status", "--porcelain", "--untracked-files=all"], ws)
    assert git.returncode == 0, git.stderr
    entries = [(line[:2], line[3:]) for line in git.stdout.splitlines()]
    shown = {p for _, p in entries}
    # new files only (DVC's own .gitignore files, the lock, the metrics); no tracked file changed
    unexpected = sorted(f"{code} {p}" for code, p in entries
                        if code != "??" or not (p in for_git or p.endswith("/.gitignore")))
    assert not unexpected, unexpected
    assert not [p for p in shown if p.startswith(("data/", "results/embeddings"))
                and not p.endswith("/.gitignore")], shown  # no data file left for git


def test_repro_without_quarto_checks_the_paper_and_leaves_a_clean_workspace(smoke_workspace,
                                                                            tmp_path):
    """A user without Quarto: the paper stage succeeds, says how to render, leaves a note where
    the paper would be; a second `dvc repro` is a no-op and git sees nothing new."""
    import shutil

    ws = tmp_path / "repo"
    shutil.copytree(smoke_workspace, ws, symlinks=True)
    first = run_tool(["dvc", "repro", "--force", "--single-item", "paper"], ws,
                     without_quarto=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    log = first.stdout + first.stderr
    assert "Quarto not found" in log and "dvc repro -f -s paper" in log, log[-3000:]
    note = (ws / "paper/_output/NOT_RENDERED.md").read_text()
    assert "executed against these results without error" in note
    assert not (ws / "paper/_output/index.html").exists()
    assert (ws / "paper/_check").is_dir()
    again = run_tool(["dvc", "repro"], ws, without_quarto=True)
    assert again.returncode == 0, again.stderr
    assert "Running stage" not in again.stdout, again.stdout
    assert_clean_git(ws)


def _ran(proc) -> list[str]:
    """The stages a `dvc repro` ran, from its log."""
    import re

    return re.findall(r"Running stage '([^']+)'", proc.stdout)


def test_changing_conditions_reruns_only_the_stages_that_read_them(smoke_workspace, tmp_path):
    """Stage deps name the files a stage reads, per condition: dropping an image condition
    re-runs no text condition's embedding or probes, dropping a text condition re-runs no other
    condition's, and each `dvc repro` is a no-op when repeated (issue 12, item 2)."""
    import shutil

    import yaml

    ws = tmp_path / "repo"
    shutil.copytree(smoke_workspace, ws, symlinks=True)
    params = load_yaml((ws / "params.yaml").read_text())
    text = list(params["conditions"]["text"])

    def settle(proc):
        """The run succeeded, a second `dvc repro` is a no-op; the author commits the change."""
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        again = run_tool(["dvc", "repro", "stats"], ws, without_quarto=True)
        assert again.returncode == 0 and not _ran(again), again.stdout
        for args in (["git", "add", "params.yaml", "dvc.lock"],
                     ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "x"]):
            assert run_tool(args, ws).returncode == 0
        assert_clean_git(ws)
        return set(_ran(proc))

    # every image condition and pair off, the README's way: the text conditions' stages stay
    drop = ["-S", "conditions.image=[]"]
    for pair in params["conditions"]["pairs"]:
        drop += ["-S", f"~conditions.pairs.{pair}"]
    # (target `stats`: every stage but the paper and rsa, which read every condition anyway)
    ran = settle(run_tool(["dvc", "exp", "run", *drop, "stats"], ws, without_quarto=True,
                          timeout=900))
    assert load_yaml((ws / "params.yaml").read_text())["conditions"] == {
        "text": text, "image": [], "pairs": {}, "matched": params["conditions"]["matched"]}
    assert "images" in ran and "stats" in ran, ran
    assert not [s for s in ran if s.startswith(("embed@", "probe_suite@", "probe_suite_bow"))], ran
    assert json.loads((ws / "results/stats/report.json").read_text())["units"] == [*text, "bow"]
    # one text condition left: no other condition's embedding or probes re-run
    params = load_yaml((ws / "params.yaml").read_text())
    params["conditions"]["text"] = text[:1]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = settle(run_tool(["dvc", "repro", "stats"], ws, without_quarto=True, timeout=900))
    assert not [s for s in ran if s.startswith(("embed", "probe_suite", "images"))], ran
    assert "stats" in ran, ran
    scores = pd.read_csv(ws / "results/stats/scores.csv")
    assert set(scores["condition"]) == {text[0], "bow"}  # a dropped unit's stale folder is not read


def test_later_stages_report_missing_conditions(smoke_workspace, tmp_path):
    """A condition selected but never embedded is left out and named, not filled in."""
    import shutil

    import yaml

    ws = tmp_path / "ws"
    shutil.copytree(smoke_workspace, ws, ignore=shutil.ignore_patterns(".git", ".dvc"))
    params = load_yaml((ws / "params.yaml").read_text())
    params["conditions"] = {"text": ["sbert", "clip_text_random_s7"]}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_tool(["python", "-m", "analysis", "probe_replication"], ws)
    assert proc.returncode == 0, proc.stderr
    assert "clip_text_random_s7" in proc.stderr
    metrics = json.loads((ws / "results/metrics/replication.json").read_text())
    assert metrics["missing_conditions"] == ["clip_text_random_s7"]
    assert set(pd.read_csv(ws / "results/probes/replication/summary.csv")["condition"]) == {"sbert"}


def _numbers(node) -> int:
    if isinstance(node, dict):
        return sum(_numbers(v) for v in node.values())
    return int(isinstance(node, (int, float)) and not isinstance(node, bool))


def test_dvc_views_are_readable(smoke_workspace):
    """`dvc metrics show` lists a few dozen headline numbers (not every table cell), and
    `dvc plots show` loads the three declared plots with data in every one."""
    metrics = run_tool(["dvc", "metrics", "show", "--json"], smoke_workspace)
    assert metrics.returncode == 0, metrics.stderr
    data = json.loads(metrics.stdout)
    per_file = next(iter(data.values()))["data"]
    assert set(per_file) == {"results/metrics/vsr.json", "results/metrics/replication.json",
                             "results/metrics.json"}
    assert 10 <= _numbers(data) <= 60, _numbers(data)
    plots = run_tool(["dvc", "plots", "show", "--json"], smoke_workspace)
    assert plots.returncode == 0, plots.stderr
    shown = json.loads(plots.stdout)["data"]
    assert len(shown) == 3
    for title, renders in shown.items():
        values = renders[0]["content"]["data"]["values"]
        assert values and all(v["rev"] == "workspace" for v in values), title
