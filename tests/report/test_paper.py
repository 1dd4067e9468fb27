"""The `paper` stage: Quarto's render where Quarto is installed, else the manuscript checked
and a note saying how to render (the stage succeeds, so `dvc repro` finishes)."""

from __future__ import annotations

import os
import stat
import sys

from analysis.report import paper


def fake_quarto(folder, rc=0):
    """A `quarto` launcher that records its arguments and QUARTO_PYTHON, then exits ``rc``."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "quarto"
    exe.write_text(f'#!/bin/sh\necho "$@" > "{folder}/args"\necho "$QUARTO_PYTHON" > '
                   f'"{folder}/python"\nexit {rc}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_renders_with_quarto_and_passes_on_its_exit_code(tmp_path, monkeypatch):
    monkeypatch.delenv("QUARTO_PYTHON", raising=False)
    exe = fake_quarto(tmp_path / "bin")
    assert paper.main(["--paper", str(tmp_path / "paper"), "--quarto", str(exe)]) == 0
    assert (tmp_path / "bin/args").read_text().split() == ["render", str(tmp_path / "paper")]
    assert (tmp_path / "bin/python").read_text().strip() == sys.executable
    failing = fake_quarto(tmp_path / "bad", rc=3)
    assert paper.main(["--paper", str(tmp_path / "paper"), "--quarto", str(failing)]) == 3


def test_without_quarto_the_paper_is_checked_and_a_note_says_how_to_render(tmp_path,
                                                                           monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(paper.paper_check, "main", lambda argv: calls.append(argv) or 0)
    out = tmp_path / "paper" / "_output"
    out.mkdir(parents=True)
    (out / "index.html").write_text("a stale render")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert paper.main(["--paper", str(tmp_path / "paper")]) == 0
    assert calls == [["--paper", str(tmp_path / "paper")]]
    assert sorted(os.listdir(out)) == [paper.NOT_RENDERED]  # no stale HTML passes for a render
    note = (out / paper.NOT_RENDERED).read_text()
    assert "without error" in note and "dvc repro -f -s paper" in note
    assert "Quarto not found" in caplog.text


def test_without_quarto_a_failing_check_fails_the_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(paper.paper_check, "main", lambda argv: 1)
    assert paper.main(["--paper", str(tmp_path / "paper"), "--quarto", "no-such-quarto"]) == 1
    assert "failed" in (tmp_path / "paper/_output" / paper.NOT_RENDERED).read_text()
