"""`publish`: the rendered paper and the citation metadata as one folder for a host or archive."""

from __future__ import annotations

import json

import pytest

from analysis import __version__
from analysis.common.io import load_yaml
from analysis.report import publish
from tests.conftest import ROOT


def test_the_citation_metadata_parse_and_agree():
    cff = publish.check_metadata(ROOT)
    assert cff["version"] == __version__
    assert json.loads((ROOT / ".zenodo.json").read_text())["upload_type"] == "software"
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_disagreeing_metadata_is_an_error(tmp_path):
    for name in publish.METADATA:
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    zen = json.loads((tmp_path / ".zenodo.json").read_text())
    zen["version"] = "9.9.9"
    (tmp_path / ".zenodo.json").write_text(json.dumps(zen))
    with pytest.raises(publish.PublishError, match="disagree"):
        publish.check_metadata(tmp_path)


def test_nothing_rendered_says_what_to_run(tmp_path):
    with pytest.raises(publish.PublishError, match="render the paper first"):
        publish.publish(tmp_path / "nothing", ROOT, tmp_path / "dist")


def test_publish_folder_holds_the_paper_metadata_and_a_manifest(smoke_paper, tmp_path):
    """From the smoke paper as rendered: HTML, PDF, notebooks, figures, the metadata, and a
    manifest of sha256 that matches the files."""
    dest = tmp_path / "dist" / "paper"
    files = publish.publish(smoke_paper.out, ROOT, dest)
    names = {p.relative_to(dest).as_posix() for p in files}
    assert {"index.html", "index.pdf", "CITATION.cff", ".zenodo.json", "LICENSE", "MANIFEST.json"} <= names
    assert any(n.endswith(".ipynb") for n in names)  # the manuscript's notebook view
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    from analysis.common.io import sha256_file
    assert set(manifest) == names - {"MANIFEST.json"}
    assert all(sha256_file(dest / n) == h for n, h in manifest.items())
    assert load_yaml((dest / "CITATION.cff").read_text())["title"].startswith("Does visually")
