"""The model zoo's parallel path (`make zoo-queue`, issue 14) on the offline smoke profile: each
part runs as a queued DVC experiment, two at a time, and the zoo experiment in the workspace then
takes every per-condition stage from DVC's run-cache instead of running it again.

Kept cheap: the workspace's zoo is two tiny unmatched models (two parts of one condition each),
no image condition, pair or matched pair, and a probe suite without controls, nulls or layers;
the zoo run stops at `stats` (ZOO_TARGETS)."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from analysis.common.io import load_yaml
from tests.conftest import _copy_checkout, run_tool

pytestmark = pytest.mark.slow

ZOO = ("roberta", "bert")  # models.zoo of the workspace: parts `roberta`, `bert` (one condition each)
CONDITIONS = [f"zoo_{m}" for m in ZOO]
STAMP = ".venv/.installed"  # make's setup stamp: the tests' environment is set up already


def _commit(ws: Path, message: str) -> None:
    for args in (["git", "add", "-A"],
                 ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", message]):
        proc = run_tool(args, ws)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def zoo_queue(tmp_path_factory):
    """A committed git workspace of the smoke profile reduced to two zoo models, after
    `make zoo-queue JOBS=2 ZOO_TARGETS=stats`: (workspace, make's output)."""
    ws = tmp_path_factory.mktemp("zoo_queue") / "repo"
    ws.mkdir()
    _copy_checkout(ws)
    params = load_yaml((ws / "params.smoke.yaml").read_text())
    params["conditions"] = {"text": [], "image": [], "pairs": {}, "matched": {}}
    params["models"]["zoo"] = {m: params["models"]["zoo"][m] for m in ZOO}
    params["embed"]["layers"] = {"splits": []}
    suite = params["probe_suite"]
    suite.update(dimension=None, mdl=None, controlled=None)
    suite["permutation"]["n"] = 0
    suite["t3"]["holdout"] = []
    suite["layers"]["tasks"] = []
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_tool(["git", "init", "-q"], ws).returncode == 0
    _commit(ws, "zoo queue workspace")
    start = time.monotonic()
    try:
        proc = run_tool(["make", "-o", STAMP, "zoo-queue", "JOBS=2", "ZOO_TARGETS=stats",
                         f"BIN={Path(sys.executable).parent}"], ws, without_quarto=True, timeout=900)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        print(f"make zoo-queue: {time.monotonic() - start:.0f} s")
        yield ws, out
    finally:  # the queue's workers would otherwise idle for a minute before they exit
        run_tool(["dvc", "queue", "stop"], ws, timeout=120)


def _clock(log: str) -> tuple[float, float]:
    """First and last HH:MM:SS of a stage log (the stages' logging), in seconds of the day."""
    stamps = [int(h) * 3600 + int(m) * 60 + int(s)
              for h, m, s in re.findall(r"^(\d\d):(\d\d):(\d\d) ", log, flags=re.M)]
    assert stamps, log[-2000:]
    first, last = stamps[0], stamps[-1]
    return first, last + (86400 if last < first else 0)  # past midnight


def _lock_outs(lock_text: str, stage: str) -> dict[str, str]:
    """path -> md5 of a stage's outputs in a dvc.lock."""
    return {o["path"]: o["md5"] for o in yaml.safe_load(lock_text)["stages"][stage]["outs"]}


def _dir_files(ws: Path, md5: str) -> dict[str, str]:
    """relpath -> md5 of the files of a directory output, from DVC's cache (what was stored)."""
    manifest = ws / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]  # <hash>.dir
    return {e["relpath"]: e["md5"] for e in json.loads(manifest.read_text())}


def _exp_ref(ws: Path, name: str) -> str:
    """The git ref of experiment ``name`` (refs/exps/<baseline>/<name>)."""
    proc = run_tool(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], ws)
    found = [r for r in proc.stdout.split() if r.rsplit("/", 1)[-1] == name]
    assert len(found) == 1, proc.stdout + proc.stderr
    return found[0]


def test_each_part_ran_its_own_conditions_two_at_a_time(zoo_queue):
    ws, out = zoo_queue
    names = run_tool(["dvc", "exp", "list", "--name-only"], ws)
    assert set(names.stdout.split()) >= {"zoo", "zoo-roberta", "zoo-bert"}, names.stdout + names.stderr
    assert "Started '2' new experiments task queue workers" in out, out[-3000:]
    spans = {}
    for model, cond in zip(ZOO, CONDITIONS):
        log = run_tool(["dvc", "queue", "logs", f"zoo-{model}"], ws).stdout
        ran = set(re.findall(r"Running stage '([^']+)'", log))
        assert ran == {f"embed@{cond}", f"probe_suite@{cond}"}, log[-3000:]
        spans[model] = _clock(log)
    (a0, a1), (b0, b1) = spans.values()
    assert max(a0, b0) < min(a1, b1), spans  # their stages' logs overlap in time


def test_the_zoo_run_took_every_per_condition_stage_from_the_run_cache(zoo_queue):
    ws, out = zoo_queue
    final = out.split("Reproducing experiment 'zoo'", 1)[-1]  # make zoo, after the queue
    for cond in CONDITIONS:
        for stage in (f"embed@{cond}", f"probe_suite@{cond}"):
            assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in final, final[-6000:]
    ran = re.findall(r"Running stage '([^']+)'", final)
    assert "stats" in ran and not [s for s in ran if s.startswith(("embed@", "probe_suite@"))], ran
    params = load_yaml((ws / "params.yaml").read_text())
    assert params["conditions"]["text"] == CONDITIONS  # zoo_profile's list, set by make zoo
    assert json.loads((ws / "results/stats/report.json").read_text())["units"] == [*CONDITIONS, "bow"]


def test_the_zoo_run_has_each_parts_outputs(zoo_queue):
    """The restored outputs are the part's: the same hashes in dvc.lock as in the part's
    experiment, and the embedding files' md5s those the part stored in DVC's cache."""
    ws, _ = zoo_queue
    lock = (ws / "dvc.lock").read_text()
    for model, cond in zip(ZOO, CONDITIONS):
        part_lock = run_tool(["git", "show", f"{_exp_ref(ws, f'zoo-{model}')}:dvc.lock"], ws)
        assert part_lock.returncode == 0, part_lock.stderr
        for stage in (f"embed@{cond}", f"probe_suite@{cond}"):
            assert _lock_outs(lock, stage) == _lock_outs(part_lock.stdout, stage), stage
        emb = f"results/embeddings/{cond}"
        stored = _dir_files(ws, _lock_outs(part_lock.stdout, f"embed@{cond}")[emb])
        files = {p.relative_to(ws / emb).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
                 for p in (ws / emb).rglob("*") if p.is_file()}
        assert files == stored and any(f.endswith(".npy") for f in files), (files, stored)
