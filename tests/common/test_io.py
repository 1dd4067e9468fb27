"""Atomic writes: a file or a whole output folder appears complete or not at all."""

from __future__ import annotations

import pytest

from analysis.common.io import replace_dir, write_json


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
