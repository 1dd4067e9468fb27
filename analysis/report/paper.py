"""Stage ``paper``: render the manuscript with Quarto (``quarto render paper``: HTML and Typst
PDF in ``paper/_output/``). Where Quarto is not installed the stage still succeeds, so that
``dvc repro`` and ``dvc exp run`` finish every analysis stage and leave a clean workspace: it
executes the manuscript's cells instead (``paper_check``), writes ``paper/_output/NOT_RENDERED.md``
saying how to render, and says so on the console.

    python -m analysis paper [--paper paper] [--quarto quarto]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from analysis.common.io import atomic_path
from analysis.report import paper_check

log = logging.getLogger("paper")

NOT_RENDERED = "NOT_RENDERED.md"
HOW_TO_RENDER = ("install Quarto >= 1.6 (https://quarto.org/docs/get-started/, or "
                 "`conda install -c conda-forge quarto`), then run `dvc repro -f -s paper` "
                 "(or `make paper`)")


def quarto_command(name: str = "quarto") -> str | None:
    """The Quarto launcher on PATH (or at ``name``), else None."""
    return shutil.which(name)


def render(paper: Path, quarto: str) -> int:
    """``quarto render <paper>`` with the manuscript's cells run by this interpreter."""
    env = dict(os.environ)
    env.setdefault("QUARTO_PYTHON", sys.executable)
    log.info("rendering %s with %s", paper, quarto)
    return subprocess.run([quarto, "render", str(paper)], env=env).returncode


def not_rendered_note(check_ok: bool) -> str:
    checked = ("Its code cells were executed against these results without error "
               "(`python -m analysis paper_check`; executed notebook and filled-in prose in "
               "`paper/_check/`)." if check_ok else
               "Executing its code cells failed: see the `paper` stage's log.")
    return (f"# The paper was not rendered\n\nQuarto was not on PATH when the `paper` stage ran, "
            f"so `paper/_output/` holds no HTML or PDF. {checked}\n\nTo render: {HOW_TO_RENDER}.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis paper",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--paper", type=Path, default=Path("paper"), help="Quarto project folder")
    parser.add_argument("--quarto", default="quarto", help="Quarto launcher (default: on PATH)")
    args = parser.parse_args(argv)
    quarto = quarto_command(args.quarto)
    if quarto:
        return render(args.paper, quarto)
    log.warning("Quarto not found (%s): the paper is checked, not rendered; to render: %s",
                args.quarto, HOW_TO_RENDER)
    check_ok = paper_check.main(["--paper", str(args.paper)]) == 0
    out = args.paper / "_output"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with atomic_path(out / NOT_RENDERED) as tmp:
        tmp.write_text(not_rendered_note(check_ok))
    return 0 if check_ok else 1
