"""Shared test fixtures: paths to the shipped offline fixtures (VSR sample, images, tiny models)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def write_fixture_split(variant: str = "random", split: str = "train"):
    """Normalize the fixture's VSR split and write it where ``store.load_split`` finds it
    (relative to the working directory); returns the table."""
    from analysis.common import store
    from analysis.data.relations import load_meta_categories
    from analysis.data.vsr_format import normalize, read_split

    src = ROOT / "tests" / "fixtures" / "vsr" / variant / f"{split}.jsonl"
    with src.open("rb") as fh:
        table = normalize(read_split(fh, load_meta_categories()[0], file=str(src)), variant, split)
    path = store.table_path(variant, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path)
    return table
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_VSR = ROOT.parent / "shared" / "vsr"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def fixture_vsr() -> Path:
    """VSR-format sample laid out {variant}/{split}.jsonl (real rows, see make_fixtures.py)."""
    return FIXTURES / "vsr"


@pytest.fixture(scope="session")
def fixture_images() -> Path:
    return FIXTURES / "images"


@pytest.fixture(scope="session")
def shared_vsr() -> Path:
    """The real VSR annotations; tests that need them skip where ../shared is absent."""
    if not (SHARED_VSR / "random" / "train.jsonl").exists():
        pytest.skip("../shared/vsr not present")
    return SHARED_VSR


def _copy_checkout(dest: Path) -> None:
    """Copy the files git would put in a fresh clone (tracked + untracked-not-ignored)."""
    import shutil
    import subprocess

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


# `dvc repro` runs every stage: without Quarto the `paper` stage checks the manuscript
# (`python -m analysis paper_check`) instead of rendering it, and still succeeds.
REPRO_TARGETS: list[str] = []


def run_tool(args: list[str], cwd: Path, without_quarto: bool = False, **kw):
    """Run a command with this interpreter's environment first on PATH (as `make` does), so
    stage commands (`python -m analysis ...`) use the same packages as the tests;
    ``without_quarto`` drops every PATH folder holding a ``quarto`` (a user without Quarto)."""
    import os
    import subprocess
    import sys

    path = [str(Path(sys.executable).parent), *os.environ["PATH"].split(os.pathsep)]
    if without_quarto:
        path = [p for p in path if not (Path(p) / "quarto").exists()]
    env = {**os.environ, "PATH": os.pathsep.join(path),
           "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def smoke_workspace(tmp_path_factory) -> Path:
    """A fresh git checkout copy whose params.yaml is the smoke profile, after `dvc repro`.

    Shared by the pipeline, paper and reviewer-path tests so the pipeline runs once per session.
    """
    import shutil

    ws = tmp_path_factory.mktemp("smoke") / "repo"
    ws.mkdir()
    _copy_checkout(ws)
    shutil.copy2(ws / "params.smoke.yaml", ws / "params.yaml")
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm",
                  "smoke"]):
        proc = run_tool(args, ws)
        assert proc.returncode == 0, proc.stderr
    proc = run_tool(["dvc", "repro", *REPRO_TARGETS], ws, timeout=900)
    assert proc.returncode == 0, f"dvc repro failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return ws


@pytest.fixture
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1 as a user sets it, before Python starts: huggingface_hub reads it once, at
    import, so the fixture sets that constant too (else every lookup waits on the network)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
