"""Stage plumbing: runtime records (one DVC output per stage) and how the paper reads them."""

from __future__ import annotations

import json

import pytest

from analysis import __main__ as entry
from analysis.report import paper_data
from analysis.common.cli import record_runtime, stage_key


def test_stage_key_names_foreach_stages_like_dvc():
    assert stage_key("embed", ["--condition", "clip_text", "--params", "p.yaml"]) == "embed@clip_text"
    assert stage_key("stats", ["--params", "params.yaml"]) == "stats"
    assert stage_key("embed", ["--condition"]) == "embed"  # no value: not a foreach key


def test_record_runtime_and_paper_reader(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.delenv(paper_data.ROOT_ENV, raising=False)
    assert paper_data.runtimes() is None  # nothing recorded: the paper says so
    p1 = record_runtime("embed", ["--condition", "sbert"], 12.345)
    p2 = record_runtime("rsa", [], 3.0)
    assert p1.as_posix() == "results/runtimes/embed-sbert.json"  # dvc.yaml's output path
    doc = json.loads(p1.read_text())
    assert doc["stage"] == "embed@sbert" and doc["runtime"]["seconds"] == 12.3
    assert doc["runtime"]["cpus"] >= 1
    assert p2.exists()
    assert paper_data.runtimes() == {"embed@sbert": 12.3, "rsa": 3.0}


def test_entry_point_records_runtime_only_on_success(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    class Fake:
        @staticmethod
        def main(argv):
            calls.append(argv)
            return 1 if "--fail" in argv else 0

    monkeypatch.setattr(entry.importlib, "import_module", lambda name: Fake)
    assert entry.main(["stats", "--params", "x.yaml"]) == 0
    assert (tmp_path / "results/runtimes/stats.json").exists()
    assert entry.main(["rsa", "--fail"]) == 1
    assert not (tmp_path / "results/runtimes/rsa.json").exists()
    assert calls == [["--params", "x.yaml"], ["--fail"]]


def test_unknown_stage_is_an_error(capsys):
    assert entry.main(["nope"]) == 2
    assert "unknown stage 'nope'" in capsys.readouterr().err


def test_expected_failure_is_one_line_without_traceback(tmp_path, monkeypatch, capsys):
    """A UserError (here: a misspelled setting) prints one line naming file and key, exit 2;
    --debug adds the traceback."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text("probe_replication: {variant: random, split: train, min_cont: 5}\n"
                                     "conditions: {text: [sbert]}\n")
    assert entry.main(["probe_replication", "--params", "p.yaml"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: probe_replication: p.yaml: ")
    assert ("p.yaml: unknown setting 'min_cont' in section 'probe_replication' "
            "(did you mean 'min_count'?)") in err
    assert entry.main(["probe_replication", "--params", "p.yaml", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    class Fake:
        @staticmethod
        def main(argv):
            raise ZeroDivisionError("bug")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(entry.importlib, "import_module", lambda name: Fake)
    with pytest.raises(ZeroDivisionError):
        entry.main(["rsa"])
