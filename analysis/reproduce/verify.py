"""The reviewer's check (``make verify``): recompute the cheap stages (probes, statistics, RSA)
into a temporary directory from the pulled inputs (embeddings, VSR tables, upstream outputs)
and compare every output with the pulled one; print a table of differences.

Tolerances (absolute, on every numeric cell; strings, integers and booleans must match
exactly): deterministic stages must be identical up to the 10 significant digits the CSVs are
written with; stages with iterative solvers or resampling on top of solver output get a stated
tolerance. ``--status`` instead checks that ``dvc status`` reports nothing but outputs that are
deliberately not distributed (``cache: false`` outputs such as the COCO images).

    python -m analysis verify [--stages probe_replication stats] [--units sbert bow] [--keep DIR]
    python -m analysis verify --status
    python -m analysis verify --pull    (dvc pull, naming any output the remote lacks)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from analysis.common.io import load_yaml
from analysis.stages import QUARTO_STAGE

log = logging.getLogger("verify")

# stage -> absolute tolerance on numeric values, with the reason
TOLERANCES: dict[str, tuple[float, str]] = {
    "probe_replication": (1e-9, "deterministic (lbfgs, fixed folds and seed): identical"),
    "probe_suite": (1e-4, "iterative solver stopped at a convergence tolerance"),
    "probe_suite_bow": (1e-4, "iterative solver stopped at a convergence tolerance"),
    "probe_suite_pairs": (1e-4, "iterative solver stopped at a convergence tolerance"),
    "stats": (1e-3, "resampling on top of solver-tolerance scores; seeded"),
    "rsa": (1e-6, "float32 distances, seeded bootstrap"),
}
DEFAULT_STAGES = tuple(TOLERANCES)


@dataclass(frozen=True)
class Diff:
    stage: str
    file: str
    status: str  # ok | DIFFERENT | MISSING (recomputed) | MISSING (pulled)
    max_abs_diff: float
    cells: int  # numeric cells or items compared
    tolerance: float
    note: str = ""


# --------------------------------------------------------------------------- comparison


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, atol: float) -> tuple[float, int, str]:
    """(max |a-b| over numeric cells, cells compared, problem or ''). Columns and row count must
    agree; non-numeric columns must be equal (NaN equals NaN)."""
    if list(a.columns) != list(b.columns):
        return np.inf, 0, f"columns differ: {list(a.columns)} vs {list(b.columns)}"
    if len(a) != len(b):
        return np.inf, 0, f"rows differ: {len(a)} vs {len(b)}"
    worst, cells, notes = 0.0, 0, []
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_float_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(float), y.to_numpy(float)
            if (np.isnan(xv) != np.isnan(yv)).any():
                notes.append(f"{col}: NaN in different rows")
                worst = np.inf
                continue
            d = np.abs(np.nan_to_num(xv) - np.nan_to_num(yv))
            worst = max(worst, float(d.max(initial=0.0)))
            cells += len(d)
        else:
            same = (x.astype(str) == y.astype(str)) | (x.isna() & y.isna())
            cells += len(x)
            if not same.all():
                i = int(np.flatnonzero(~same.to_numpy())[0])
                notes.append(f"{col}: row {i} {x.iloc[i]!r} vs {y.iloc[i]!r}")
                worst = np.inf
    return worst, cells, "; ".join(notes)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _flatten(val, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): obj}


# JSON keys holding wall-clock measurements, which legitimately differ between runs
TIMING_KEY = re.compile(r"(^|[._])(timings?|seconds|elapsed|duration|runtime|wall)(_s)?([._]|$)",
                        re.IGNORECASE)


def compare_json(a: Any, b: Any) -> tuple[float, int, str]:
    """Like `compare_frames` for JSON documents; keys that hold timings are not compared."""
    fa = {k: v for k, v in _flatten(a).items() if not TIMING_KEY.search(k)}
    fb = {k: v for k, v in _flatten(b).items() if not TIMING_KEY.search(k)}
    if fa.keys() != fb.keys():
        return np.inf, 0, f"keys differ: {sorted(fa.keys() ^ fb.keys())[:5]}"
    worst, notes = 0.0, []
    for k in fa:
        x, y = fa[k], fb[k]
        if isinstance(x, float) or isinstance(y, float):
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                worst = max(worst, abs(float(x) - float(y)))
                continue
        if x != y:
            notes.append(f"{k}: {x!r} vs {y!r}")
            worst = np.inf
    return worst, len(fa), "; ".join(notes[:3])


def compare_files(pulled: Path, recomputed: Path) -> tuple[float, int, str]:
    suffix = pulled.suffix
    if suffix == ".csv":
        return compare_frames(pd.read_csv(pulled), pd.read_csv(recomputed), 0)
    if suffix == ".parquet":
        return compare_frames(pd.read_parquet(pulled), pd.read_parquet(recomputed), 0)
    if suffix == ".json":
        return compare_json(json.loads(pulled.read_text()), json.loads(recomputed.read_text()))
    if suffix == ".npy":
        a, b = np.load(pulled), np.load(recomputed)
        if a.shape != b.shape:
            return np.inf, 0, f"shape {a.shape} vs {b.shape}"
        return float(np.abs(a.astype(float) - b.astype(float)).max(initial=0.0)), a.size, ""
    same = pulled.read_bytes() == recomputed.read_bytes()
    return (0.0 if same else np.inf), 1, "" if same else "bytes differ"


def compare_trees(stage: str, paths: Iterable[str], pulled_root: Path, new_root: Path,
                  atol: float) -> list[Diff]:
    """One `Diff` per file under each output path, on either side."""
    diffs = []
    for rel in paths:
        a, b = pulled_root / rel, new_root / rel
        files = set()
        for side in (a, b):
            if side.is_dir():
                files |= {p.relative_to(side).as_posix() for p in side.rglob("*") if p.is_file()}
            elif side.exists():
                files.add("")
        if not files:
            diffs.append(Diff(stage, rel, "MISSING (both)", np.inf, 0, atol))
        for f in sorted(files):
            name = f"{rel}/{f}" if f else rel
            pa, pb = (a / f if f else a), (b / f if f else b)
            if not pa.exists():
                diffs.append(Diff(stage, name, "MISSING (pulled)", np.inf, 0, atol))
            elif not pb.exists():
                diffs.append(Diff(stage, name, "MISSING (recomputed)", np.inf, 0, atol))
            else:
                worst, cells, note = compare_files(pa, pb)
                status = "ok" if worst <= atol and not note else "DIFFERENT"
                diffs.append(Diff(stage, name, status, worst, cells, atol, note))
    return diffs


def format_table(diffs: list[Diff]) -> str:
    rows = [("stage", "file", "status", "max |diff|", "tolerance", "cells", "note")]
    rows += [(d.stage, d.file, d.status, "inf" if np.isinf(d.max_abs_diff) else f"{d.max_abs_diff:.3g}",
              f"{d.tolerance:g}", str(d.cells), d.note[:80]) for d in diffs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- recomputation


def resolved_stages(lock: dict, stage: str) -> dict[str, dict]:
    """``stage``'s runs as dvc.lock records them, with command, deps and outs resolved: the
    stage itself, or every ``stage@entry`` of a foreach stage."""
    runs = lock.get("stages") or {}
    return {name: spec for name, spec in runs.items()
            if name == stage or name.startswith(stage + "@")}


def _paths(entries: list | None) -> list[str]:
    out = []
    for e in entries or []:
        if isinstance(e, dict):
            out.append(e["path"] if "path" in e else next(iter(e)))
        else:
            out.append(e)
    return out


def outputs_of(spec: dict) -> list[str]:
    return _paths(spec.get("outs")) + _paths(spec.get("metrics")) + _paths(spec.get("plots"))


def recompute(stage: str, spec: dict, root: Path, work: Path, params: Path) -> None:
    """Run the stage's command in ``work`` with its data dependencies linked from ``root``."""
    for dep in _paths(spec.get("deps")):
        if dep.startswith("analysis/"):
            continue  # code comes from the installed package
        src = root / dep
        if not src.exists():
            raise FileNotFoundError(f"{stage}: input {dep} is missing: run 'dvc pull' first")
        dst = work / dep
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())
    shutil.copyfile(params, work / "params.yaml")
    cmd = shlex.split(spec["cmd"])
    if cmd[0] in {"python", "python3"}:
        cmd[0] = sys.executable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
    log.info("%s: %s (in %s)", stage, " ".join(cmd), work)
    proc = subprocess.run(cmd, cwd=work, env=env)
    if proc.returncode:
        raise RuntimeError(f"{stage}: '{spec['cmd']}' failed with exit code {proc.returncode}")


def select_runs(runs: dict[str, dict], units: Iterable[str] | None) -> dict[str, dict]:
    """Of a stage's runs, those ``stage@<unit>`` whose unit is in ``units`` and every run that is
    not per condition; all of them when ``units`` is None."""
    if units is None:
        return runs
    keep = set(units)
    return {n: spec for n, spec in runs.items() if "@" not in n or n.split("@", 1)[1] in keep}


def verify(root: Path, stages: Iterable[str], params: Path, keep: Path | None = None,
           tolerances: dict[str, float] | None = None, units: Iterable[str] | None = None) -> list[Diff]:
    """Recompute ``stages`` and compare; ``units``: of a per-condition (foreach) stage, only the
    runs ``stage@<unit>`` named (a spot check where the zoo makes dozens of units)."""
    lock_path = root / "dvc.lock"
    lock = load_yaml(lock_path.read_text()) if lock_path.exists() else {}
    tol = {s: t for s, (t, _) in TOLERANCES.items()} | (tolerances or {})
    keep_units = list(units) if units is not None else None
    diffs: list[Diff] = []
    for stage in stages:
        runs = select_runs(resolved_stages(lock, stage), keep_units)
        if not runs:
            log.warning("stage %s is not in %s: skipped", stage, lock_path)
        for name, spec in runs.items():
            work = Path(tempfile.mkdtemp(prefix=f"verify-{name.replace('@', '-')}-", dir=keep))
            try:
                recompute(name, spec, root, work, params)
                diffs += compare_trees(name, outputs_of(spec), root, work, tol.get(stage, 0.0))
            finally:
                if keep is None:
                    shutil.rmtree(work, ignore_errors=True)
    return diffs


# --------------------------------------------------------------------------- dvc status


def uncached_outputs(dvc_yaml: dict, git_ignored: Callable[[str], bool]) -> set[str]:
    """Outputs declared ``cache: false`` that git does not track either: rebuilt, never
    distributed (the COCO images, the rendered paper), so a reviewer's clone lacks them."""
    found = set()
    for spec in (dvc_yaml.get("stages") or {}).values():
        for e in (spec.get("do", spec).get("outs") or []):
            if isinstance(e, dict):
                (path, opts), = e.items()
                if opts and opts.get("cache") is False and git_ignored(path):
                    found.add(path)
    return found


def git_ignores(root: Path, path: str) -> bool:
    """Whether git ignores ``path`` (a file, or a folder that may not exist yet) at ``root``."""
    return any(subprocess.run(["git", "check-ignore", "-q", "--no-index", p], cwd=root,
                              capture_output=True).returncode == 0
               for p in (path, path.rstrip("/") + "/"))


def status_problems(status: dict, ignorable: set[str]) -> list[str]:
    """Lines of ``dvc status --json`` that matter: anything but a missing ignorable output."""
    problems = []
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else [changes]:
            if isinstance(change, str):
                problems.append(f"{stage}: {change}")
                continue
            for kind, entries in change.items():
                items = entries.items() if isinstance(entries, dict) else [(str(entries), "")]
                for path, what in items:
                    if kind == "changed outs" and path in ignorable:
                        continue
                    problems.append(f"{stage}: {kind} {path} {what}".rstrip())
    return problems


def check_status(root: Path, targets: Iterable[str] = ()) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *targets], cwd=root, capture_output=True,
                          text=True)
    if proc.returncode:
        return [f"dvc status failed: {proc.stderr.strip()}"]
    status = json.loads(proc.stdout or "{}")
    # the reviewer renders the paper from the pulled outputs: its stage is rebuilt, not checked
    status.pop(QUARTO_STAGE, None)
    ignorable = uncached_outputs(load_yaml((root / "dvc.yaml").read_text()),
                                 lambda path: git_ignores(root, path))
    return status_problems(status, ignorable)


# --------------------------------------------------------------------------- dvc pull


FAILED_HASH = re.compile(r"\b([0-9a-f]{32})\b")


def name_missing(hashes: Iterable[str], lock: dict, dir_listing) -> list[str]:
    """Output paths (files inside tracked folders included) whose content hash is in
    ``hashes``; ``dir_listing(md5)`` returns a folder's ``.dir`` entries or None."""
    wanted = set(hashes)
    named = []
    for entry in (lock.get("stages") or {}).values():
        for out in entry.get("outs") or []:
            md5 = out.get("md5", "")
            if md5.removesuffix(".dir") in wanted:
                named.append(out["path"])
            if md5.endswith(".dir"):
                for item in dir_listing(md5.removesuffix(".dir")) or []:
                    if item.get("md5") in wanted:
                        named.append(f"{out['path']}/{item['relpath']}")
    return sorted(set(named))


def remote_url(root: Path, remote: str | None) -> tuple[str | None, str | None]:
    """The remote's name and URL as DVC's config gives them (``remote`` or the default)."""
    from dvc.repo import Repo
    config = Repo(str(root)).config
    name = remote or config["core"].get("remote")
    return name, (config["remote"][name]["url"] if name and name in config["remote"] else None)


PLACEHOLDER_HOST = ".invalid"  # RFC 2606: the unpublished `public` remote points there


def pull_problem(root: Path, remote: str | None) -> str | None:
    """Why a pull cannot work before trying it, as one message saying what to do; None if
    nothing is known to be wrong."""
    lock = root / "dvc.lock"
    stages = (load_yaml(lock.read_text()) or {}).get("stages") if lock.exists() else None
    if not stages:
        return ("this checkout has no dvc.lock (or one without stages): its outputs were never "
                "published, so there is nothing to pull. Check out a published commit or tag "
                "(its dvc.lock is committed), or compute the outputs with `make run`; authors "
                "publish with `dvc repro`, `git add dvc.lock`, then `dvc push -r public --run-cache`.")
    try:
        name, url = remote_url(root, remote)
    except Exception as exc:  # a broken DVC config: let `dvc pull` report it in its own words
        log.warning("cannot read the DVC remote's URL: %s", exc)
        return None
    if not url:
        return (f"no DVC remote {'named ' + repr(name) if name else 'is set as default'} in "
                ".dvc/config: add one with `dvc remote add -d public URL`.")
    host = url.split("://", 1)[-1].split("/", 1)[0]
    if host.endswith(PLACEHOLDER_HOST):
        return (f"the DVC remote {name!r} is the unpublished placeholder {url}: set the URL the "
                f"authors published (`dvc remote modify {name} url https://HOST/PATH`, or "
                f"`dvc remote modify --local {name} url ...` to keep it out of git), then run "
                "`make reproduce` again.")
    return None


def _listing_reader(root: Path, remote: str | None):
    """Read a folder's ``.dir`` listing from the local cache, else from the remote (DVC drops
    the listing of a folder whose pull failed, which is exactly the one we must name)."""
    url = None
    try:
        url = remote_url(root, remote)[1]
    except Exception as exc:  # naming is best effort: the pull error itself is already shown
        log.warning("cannot read the DVC remote's URL: %s", exc)

    def read(md5: str) -> list | None:
        rel = f"files/md5/{md5[:2]}/{md5[2:]}.dir"
        local = root / ".dvc/cache" / rel
        if local.exists():
            return json.loads(local.read_text())
        if not url:
            return None
        try:
            if url.startswith(("http://", "https://")):
                import requests
                resp = requests.get(f"{url.rstrip('/')}/{rel}", timeout=30)
                return resp.json() if resp.ok else None
            path = Path(url) / rel
            return json.loads(path.read_text()) if path.exists() else None
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s from the remote: %s", rel, exc)
            return None
    return read


def pull(root: Path, targets: Iterable[str] = (), remote: str | None = None) -> list[str]:
    """``dvc pull``; on failure, the outputs the remote lacks, by name (DVC reports hashes)."""
    cmd = [sys.executable, "-m", "dvc", "pull", *(["-r", remote] if remote else []), *targets]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode == 0:
        return []
    sys.stderr.write(proc.stderr)
    lock = load_yaml((root / "dvc.lock").read_text()) if (root / "dvc.lock").exists() else {}
    missing = name_missing(FAILED_HASH.findall(proc.stderr + proc.stdout), lock,
                           _listing_reader(root, remote))
    return missing or ["(dvc pull failed; see its message above)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis verify",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--stages", nargs="*", default=list(DEFAULT_STAGES))
    parser.add_argument("--units", nargs="*", default=None,
                        help="of the per-condition stages, recompute only these conditions/pairs "
                             "(default: every one)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the recomputed outputs under this folder")
    parser.add_argument("--status", action="store_true",
                        help="only check that `dvc status` is clean (what `make reproduce` runs)")
    parser.add_argument("--targets", nargs="*", default=[],
                        help="with --status/--pull: only these stages (default: all)")
    parser.add_argument("--pull", action="store_true",
                        help="`dvc pull` (the --targets or everything), naming any output the "
                             "remote lacks")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if args.pull:
        problem = pull_problem(root, None)
        if problem:
            print(f"cannot pull: {problem}", file=sys.stderr)
            return 2
        missing = pull(root, args.targets)
        if missing:
            print("the remote lacks these outputs:\n  " + "\n  ".join(missing), file=sys.stderr)
            return 1
        return 0
    if args.status:
        problems = check_status(root, args.targets)
        if problems:
            print("dvc status is not clean:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print("dvc status: clean (outputs match dvc.lock)")
        return 0
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    diffs = verify(root, args.stages, args.params, args.keep, units=args.units)
    print(format_table(diffs))
    for stage in args.stages:
        if stage in TOLERANCES:
            print(f"  {stage}: tolerance {TOLERANCES[stage][0]:g} ({TOLERANCES[stage][1]})")
    bad = [d for d in diffs if d.status != "ok"]
    print(f"{len(diffs) - len(bad)} of {len(diffs)} files agree" + (f"; {len(bad)} differ or are missing" if bad else ""))
    return 1 if bad or not diffs else 0
