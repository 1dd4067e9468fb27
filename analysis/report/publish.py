"""Command `publish`: the rendered paper as a self-contained folder for a static host, `quarto
publish` or an archive deposit (which gives the release a DOI, what the ACM "Artifacts
Available" badge asks for): the HTML with its resources (charts and formulas need no network),
the PDF, the manuscript's notebooks, and the citation metadata (`CITATION.cff`,
`.zenodo.json`, `LICENSE`), plus a manifest of every file's sha256.

    python -m analysis publish [--paper paper/_output] [--to dist/paper-<version>]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from analysis import __version__
from analysis.common.errors import UserError
from analysis.common.io import load_yaml, replace_dir, sha256_file, write_json

log = logging.getLogger("publish")

RENDERED = ("index.html", "index.pdf")  # what a reader opens; both must exist
METADATA = ("CITATION.cff", ".zenodo.json", "LICENSE")


class PublishError(UserError):
    """Nothing (or not everything) to publish; the message says what to run first."""


def check_metadata(root: Path) -> dict:
    """The citation files parse and agree on the title and version."""
    cff = load_yaml((root / "CITATION.cff").read_text())
    zen = json.loads((root / ".zenodo.json").read_text())
    for key in ("cff-version", "title", "authors", "version", "license", "message"):
        if key not in cff:
            raise PublishError(f"CITATION.cff: missing '{key}'")
    for key in ("title", "creators", "upload_type", "license", "version"):
        if key not in zen:
            raise PublishError(f".zenodo.json: missing '{key}'")
    if cff["title"] != zen["title"] or str(cff["version"]) != str(zen["version"]):
        raise PublishError("CITATION.cff and .zenodo.json disagree on the title or version")
    if str(cff["version"]) != __version__:
        raise PublishError(f"CITATION.cff version {cff['version']} is not the package's {__version__}")
    return cff


def publish(rendered: Path, root: Path, dest: Path) -> list[Path]:
    """Copy the rendered paper and the metadata into ``dest`` (replaced whole)."""
    missing = [f for f in RENDERED if not (rendered / f).is_file()]
    if missing:
        raise PublishError(f"{rendered}: {', '.join(missing)} not found: render the paper first "
                           "(make paper, with Quarto on PATH)")
    check_metadata(root)
    with replace_dir(dest) as out:
        shutil.copytree(rendered, out, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".quarto", "*.quarto_ipynb"))
        for name in METADATA:
            shutil.copy2(root / name, out / name)
        files = sorted(p for p in out.rglob("*") if p.is_file())
        write_json(out / "MANIFEST.json", {p.relative_to(out).as_posix(): sha256_file(p) for p in files})
    return sorted(p for p in dest.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis publish", description=__doc__)
    parser.add_argument("--paper", default="paper/_output", help="the rendered paper")
    parser.add_argument("--to", default=f"dist/paper-{__version__}", help="the folder to write")
    args = parser.parse_args(argv)
    files = publish(Path(args.paper), Path("."), Path(args.to))
    log.info("published %d files to %s (open index.html; index.pdf; MANIFEST.json lists sha256)",
             len(files), args.to)
    return 0
