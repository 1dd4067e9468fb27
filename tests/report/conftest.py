"""The rendered smoke paper, shared by the render and publish tests (rendered once a session)."""

from __future__ import annotations

import pytest

from tests.report.test_render import Rendered, need_quarto, read_rendered, render


@pytest.fixture(scope="session")
def smoke_paper(request) -> Rendered:
    """The smoke paper as `dvc repro` rendered it in the smoke workspace (rendered here if
    Quarto came on PATH only after the session started)."""
    need_quarto()  # before the workspace: without Quarto there is nothing to wait for
    paper = request.getfixturevalue("smoke_workspace") / "paper"
    out = paper / "_output"
    if not ((out / "index.html").exists() and (out / "index.pdf").exists()):
        render(paper)
    return read_rendered(paper)
