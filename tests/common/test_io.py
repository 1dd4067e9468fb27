"""Atomic writes (a file or a whole output folder appears complete or not at all) and YAML read as DVC reads it."""

from __future__ import annotations

import pytest

from analysis.common.io import load_yaml, replace_dir, write_json


def test_replace_dir_swaps_the_whole_folder(tmp_path):
    final = tmp_path / "out"
    (final / "oof").mkdir(parents=True)
    (final / "oof" / "stale.parquet").write_text("from a run with more outputs")
    (final / "cache.bin").write_text("keep me")
    with replace_dir(final, keep=["cache.bin", "missing.bin"]) as tmp:
        assert tmp.parent == final.parent and tmp != final
        assert (tmp / "cache.bin").read_text() == "keep me"
        write_json(tmp / "report.json", {"ok": 1})
        assert (final / "oof" / "stale.parquet").exists()  # untouched until success
    assert sorted(p.name for p in final.iterdir()) == ["cache.bin", "report.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_replace_dir_leaves_the_old_folder_on_failure(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with replace_dir(final) as tmp:
            (tmp / "half.csv").write_text("half")
            raise RuntimeError("killed mid-run")
    assert [p.name for p in final.iterdir()] == ["old.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


YAML_CASES = """\
lock_float: 1e-05
typed: 1.0e-4
grid: [1e-4, 1, 1e4]
exp_only: -1E+3
plain: 0.5
leading_dot: .5
int: 12
inf: .inf
word: v1e5
quoted: "1e-5"
flag: true
none: null
"""


def test_load_yaml_reads_floats_as_dvc_does():
    """dvc.lock carries floats as DVC (ruamel, YAML 1.2) writes them, e.g. ``1e-05``; PyYAML's
    YAML 1.1 loader makes strings of those, which broke the paper's number formatting."""
    from ruamel.yaml import YAML

    ours = load_yaml(YAML_CASES)
    dvcs = YAML(typ="safe", pure=True).load(YAML_CASES)
    assert ours == dvcs
    assert isinstance(ours["lock_float"], float) and ours["lock_float"] == 1e-5
    assert ours["grid"] == [1e-4, 1, 1e4] and ours["quoted"] == "1e-5"


def test_load_yaml_reads_what_dvc_writes_into_a_lock(tmp_path):
    from ruamel.yaml import YAML

    params = {"engine": {"rtol": 1e-4, "inner_rtol": 1e-5, "grid": [1e-4, 0.01, 1e4]}}
    path = tmp_path / "dvc.lock"
    YAML(typ="rt").dump({"stages": {"probe_suite": {"params": {"params.yaml": params}}}}, path)
    assert "1e-05" in path.read_text()  # the form that PyYAML's safe_load leaves a string
    assert load_yaml(path)["stages"]["probe_suite"]["params"]["params.yaml"] == params
