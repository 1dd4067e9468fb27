"""The reviewer's path end to end: the offline smoke pipeline's outputs are committed to DVC and
pushed to a local remote, that folder is served over HTTP on 127.0.0.1, a fresh git clone
points the `public` remote at it, pulls, finds `dvc status` clean, and executes the manuscript
to the same numbers; a remote missing one object gives an error naming the output. Also the
pieces of `make verify` on hand-made tables."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.common.io import load_yaml
from analysis.reproduce import verify

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
       "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
       "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
       "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ENV.pop("SPATIAL_PAPER_ROOT", None)


def sh(*cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


class Server:
    """A static HTTP server on 127.0.0.1 (an ephemeral port) over one folder."""

    def __init__(self, directory: Path):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def paper_prose(repo: Path) -> str:
    sh(sys.executable, "-m", "analysis", "paper_check", cwd=repo)
    return (repo / "paper/_check/index.md").read_text()


@pytest.fixture(scope="module")
def published(smoke_workspace, tmp_path_factory):
    """The author's side: the session's smoke `dvc repro` (tests/conftest.py) committed to DVC
    and git, pushed to a local remote; a copy, so the shared workspace stays as it was."""
    tmp = tmp_path_factory.mktemp("reviewer")
    author = tmp / "author"
    shutil.copytree(smoke_workspace, author, symlinks=True)
    stages = [s for s in sh("dvc", "stage", "list", "--name-only", cwd=author).stdout.split()
              if s != "paper"]
    sh("dvc", "commit", "-f", "-q", *stages, cwd=author)
    sh("git", "add", "-A", cwd=author)
    sh("git", "commit", "-q", "-m", "smoke outputs", cwd=author)
    storage = tmp / "storage"
    sh("dvc", "remote", "modify", "--local", "local", "url", str(storage), cwd=author)
    sh("dvc", "push", "-q", "-r", "local", "--run-cache", cwd=author)
    server = Server(storage)
    yield tmp, author, storage, server, paper_prose(author), stages
    server.close()


def clone(published, name: str) -> Path:
    tmp, author, _, server, *_ = published
    repo = tmp / name
    sh("git", "clone", "-q", str(author), str(repo), cwd=tmp)
    # what a reviewer runs when the published URL moved; the publisher runs it without --local
    sh("dvc", "remote", "modify", "--local", "public", "url", server.url, cwd=repo)
    return repo


@pytest.mark.slow
@pytest.mark.timeout(2400)  # may include the session's smoke `dvc repro` (the fixture)
def test_fresh_clone_pulls_and_renders_the_same_numbers(published):
    *_, author_prose, stages = published
    repo = clone(published, "clone")
    assert not (repo / "results/probes/replication/summary.csv").exists()
    # the pipeline's outputs (the rendered paper is not distributed: a reviewer renders it)
    sh("dvc", "pull", "-q", *stages, cwd=repo)
    status = sh(sys.executable, "-m", "analysis", "verify", "--status", "--targets", *stages,
                cwd=repo, check=False)
    assert status.returncode == 0, status.stderr
    assert paper_prose(repo) == author_prose
    summary = pd.read_csv(repo / "results/probes/replication/summary.csv")
    assert f"{summary['mean'].iloc[0]:.3f}" in author_prose


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_verify_recomputes_to_the_pulled_outputs(published):
    repo = clone(published, "verify")
    sh("dvc", "pull", "-q", *published[-1], cwd=repo)
    proc = sh(sys.executable, "-m", "analysis", "verify", "--stages", "probe_replication",
              cwd=repo, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "results/probes/replication/summary.csv" in proc.stdout


def make(target: str, repo: Path, *variables: str) -> subprocess.CompletedProcess:
    """``make TARGET`` as a reviewer runs it, with this test's environment standing in for the
    clone's ``.venv`` (``make setup`` would install the package again); ``variables`` such as
    ``VERIFY_ARGS=...`` are passed on the command line."""
    venv = repo / ".venv"
    if not venv.exists():
        venv.symlink_to(Path(sys.prefix), target_is_directory=True)
    stamp = repo.parent / f"{repo.name}.installed"  # newer than the clone's pyproject.toml
    stamp.touch()
    # a command-line variable reaches the sub-makes too (`make reproduce` runs `make paper`)
    return sh("make", f"STAMP={stamp}", *variables, target, cwd=repo, check=False)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_reviewer_make_reproduce_then_make_verify_exit_0(published):
    """The reviewer's two commands on a fresh clone of the published state: pull, a clean
    `dvc status`, the paper from the pulled outputs; then every cheap stage recomputed and
    agreeing with what was pulled (timings are not compared). The per-condition probe stages
    are spot-checked on one unit of each kind (a text condition, a zoo pair's two sides, bag of
    words, an image/text pair; `VERIFY_ARGS=--units ...`), which keeps CI within its budget now
    that the smoke profile runs the zoo; every unit is recomputed without it."""
    repo = clone(published, "reviewer")
    proc = make("reproduce", repo)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dvc status: clean" in proc.stdout
    assert (repo / "results/probes/replication/summary.csv").exists()
    rendered = (repo / "paper/_output/index.html").exists()
    assert rendered or (repo / "paper/_check/index.md").exists()
    units = ["sbert", "zoo_roberta", "zoo_openclip_roberta", "clip"]
    proc = make("verify", repo, f"VERIFY_ARGS=--units {' '.join(units)}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if " files agree" in line]
    assert summary and "differ" not in summary[-1], proc.stdout[-3000:]
    checked = set(re.findall(r"probe_suite(?:_pairs)?@(\w+)", proc.stdout))
    assert checked == set(units), checked  # the spot check recomputed exactly those units
    assert "probe_suite_bow" in proc.stdout and "stats" in proc.stdout and "rsa" in proc.stdout


@pytest.mark.slow
def test_remote_missing_an_object_names_the_output(published):
    storage = published[2]
    repo = clone(published, "broken")
    lock = load_yaml((repo / "dvc.lock").read_text())
    [dir_md5] = [o["md5"] for o in lock["stages"]["probe_replication"]["outs"]
                 if o["path"] == "results/probes/replication"]
    # drop the object of one file inside the replication output from the remote
    listing = storage / "files/md5" / dir_md5[:2] / dir_md5[2:]
    victim = next(e for e in json.loads(listing.read_text()) if e["relpath"] == "summary.csv")
    obj = storage / "files/md5" / victim["md5"][:2] / victim["md5"][2:]
    assert obj.exists()
    obj.rename(obj.with_suffix(".gone"))
    try:
        proc = sh(sys.executable, "-m", "analysis", "verify", "--pull", "--targets",
                  *published[-1], cwd=repo, check=False)
    finally:
        obj.with_suffix(".gone").rename(obj)
    assert proc.returncode != 0
    assert "the remote lacks these outputs:\n  results/probes/replication/summary.csv" \
        in proc.stderr


# --------------------------------------------------------------------------- verify pieces


def test_compare_frames_reports_worst_numeric_and_any_text_difference():
    a = pd.DataFrame({"relation": ["on", "near"], "f1": [0.5, 0.25], "n": [3, 4]})
    worst, cells, note = verify.compare_frames(a, a.assign(f1=[0.5, 0.2501]), 0)
    assert worst == pytest.approx(1e-4) and cells == 6 and note == ""
    worst, _, note = verify.compare_frames(a, a.assign(relation=["on", "far"]), 0)
    assert np.isinf(worst) and "row 1 'near' vs 'far'" in note
    assert "rows differ" in verify.compare_frames(a, a.iloc[:1], 0)[2]


def test_compare_json_skips_timings_only():
    a = {"timings_s": {"sbert": 3.8}, "rows": 240, "run": {"elapsed": 1.0}, "f1": 0.5}
    b = {"timings_s": {"sbert": 26.6}, "rows": 240, "run": {"elapsed": 9.0}, "f1": 0.5}
    assert verify.compare_json(a, b) == (0.0, 2, "")
    assert verify.compare_json(a, {**b, "rows": 241})[2] == "rows: 240 vs 241"


def test_compare_trees_flags_missing_and_out_of_tolerance(tmp_path):
    pulled, new = tmp_path / "pulled", tmp_path / "new"
    for root, x in ((pulled, 0.5), (new, 0.5 + 2e-9)):
        (root / "out").mkdir(parents=True)
        pd.DataFrame({"x": [x]}).to_csv(root / "out/a.csv", index=False)
        (root / "m.json").write_text(json.dumps({"mean": x, "n": 3}))
    pd.DataFrame({"x": [1.0]}).to_csv(pulled / "out/only_pulled.csv", index=False)
    diffs = {d.file: d for d in verify.compare_trees("s", ["out", "m.json"], pulled, new, 1e-9)}
    assert diffs["out/a.csv"].status == "DIFFERENT"
    assert diffs["out/a.csv"].max_abs_diff == pytest.approx(2e-9)
    assert diffs["out/only_pulled.csv"].status == "MISSING (recomputed)"
    loose = verify.compare_trees("s", ["m.json"], pulled, new, 1e-6)
    assert [d.status for d in loose] == ["ok"]
    table = verify.format_table(list(diffs.values()))
    assert "MISSING (recomputed)" in table and "out/a.csv" in table


def test_name_missing_maps_hashes_to_outputs_and_files_in_folders():
    lock = {"stages": {"a": {"outs": [{"path": "results/a.json", "md5": "1" * 32}]},
                       "b": {"outs": [{"path": "results/b", "md5": "2" * 32 + ".dir"}]}}}
    listings = {"2" * 32: [{"relpath": "x.csv", "md5": "3" * 32},
                           {"relpath": "y.csv", "md5": "4" * 32}]}
    assert verify.name_missing(["4" * 32, "1" * 32], lock, listings.get) == [
        "results/a.json", "results/b/y.csv"]
    assert verify.name_missing(["2" * 32], lock, listings.get) == ["results/b"]
    assert verify.name_missing(["5" * 32], lock, listings.get) == []


def test_status_ignores_only_undistributed_outputs():
    dvc_yaml = {"stages": {"images": {"outs": [{"data/images": {"cache": False, "persist": True}},
                                               "results/images/manifest.csv"]},
                           "vsr": {"outs": [{"results/vsr/report.json": {"cache": False}}]},
                           "paper": {"outs": [{"paper/_output": {"cache": False}}]}}}
    ignorable = verify.uncached_outputs(dvc_yaml, lambda path: verify.git_ignores(ROOT, path))
    assert ignorable == {"data/images", "paper/_output"}  # the report is git-tracked
    status = {"images": [{"changed outs": {"data/images": "deleted"}}],
              "probe_replication": [{"changed deps": {"results/embeddings": "modified"}}]}
    assert verify.status_problems(status, ignorable) == [
        "probe_replication: changed deps results/embeddings modified"]


def dvc_repo(path: Path, url: str, lock: str | None) -> Path:
    """A git + DVC repo with a default remote ``public`` at ``url`` and ``lock`` as dvc.lock."""
    path.mkdir()
    sh("git", "init", "-q", cwd=path)
    sh("dvc", "init", "-q", cwd=path)
    sh("dvc", "remote", "add", "-d", "public", url, cwd=path)
    if lock is not None:
        (path / "dvc.lock").write_text(lock)
    return path


LOCK = "schema: '2.0'\nstages:\n  vsr:\n    cmd: python -m analysis vsr\n    outs:\n    - path: data/vsr\n      md5: 0123456789abcdef0123456789abcdef.dir\n"


@pytest.mark.parametrize("lock", [None, "schema: '2.0'\n"], ids=["no-lock", "empty-lock"])
def test_pull_without_a_lock_says_the_outputs_were_never_published(tmp_path, lock):
    repo = dvc_repo(tmp_path / "r", "https://dvc.invalid/x", lock)
    proc = sh(sys.executable, "-m", "analysis", "verify", "--pull", cwd=repo, check=False)
    assert proc.returncode == 2
    assert "no dvc.lock" in proc.stderr and "never published" in proc.stderr
    assert "remote lacks" not in proc.stderr and "Everything is up to date" not in proc.stdout


def test_pull_from_the_placeholder_remote_says_how_to_set_it(tmp_path):
    repo = dvc_repo(tmp_path / "r", "https://dvc.invalid/spatial-probing", LOCK)
    proc = sh(sys.executable, "-m", "analysis", "verify", "--pull", cwd=repo, check=False)
    assert proc.returncode == 2
    assert "placeholder https://dvc.invalid/spatial-probing" in proc.stderr
    assert "dvc remote modify public url" in proc.stderr
    assert "remote lacks" not in proc.stderr


def test_the_shipped_config_is_diagnosed_as_the_placeholder():
    """This repository's own `.dvc/config` (until the outputs are published)."""
    name, url = verify.remote_url(ROOT, None)
    assert name == "public"
    assert url.split("://")[1].split("/")[0].endswith(verify.PLACEHOLDER_HOST)


def test_a_real_remote_is_not_flagged(tmp_path):
    repo = dvc_repo(tmp_path / "r", "http://127.0.0.1:9/x", LOCK)
    assert verify.pull_problem(repo, None) is None


def test_units_select_only_those_runs_of_per_condition_stages():
    runs = {"probe_suite@sbert": {}, "probe_suite@zoo_bert": {}, "probe_suite_bow": {}, "stats": {}}
    assert list(verify.select_runs(runs, None)) == list(runs)
    assert list(verify.select_runs(runs, ["zoo_bert"])) == ["probe_suite@zoo_bert", "probe_suite_bow", "stats"]
    assert list(verify.select_runs(runs, [])) == ["probe_suite_bow", "stats"]
