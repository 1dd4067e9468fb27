"""pyproject.toml and environment.yml must pin the same packages at the same versions."""

from __future__ import annotations

import re
import tomllib

from analysis.common.io import load_yaml
from tests.conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$")


def pins(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        m = PIN.match(spec.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def pyproject_pins() -> tuple[dict[str, str], list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    return pins(specs), specs


def environment_pins() -> dict[str, str]:
    env = load_yaml((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return pins(pip)


def test_every_runtime_dependency_is_pinned():
    found, specs = pyproject_pins()
    unpinned = [s for s in specs if not PIN.match(s.strip())]
    assert not unpinned, f"unpinned in pyproject.toml: {unpinned}"
    assert "torch" in found  # a loose torch spec pulls a multi-GB CUDA build


def test_environment_yml_agrees_with_pyproject():
    ours, _ = pyproject_pins()
    theirs = environment_pins()
    missing = sorted(set(ours) - set(theirs))
    assert not missing, f"pinned in pyproject.toml, absent from environment.yml: {missing}"
    differ = {k: (ours[k], theirs[k]) for k in ours if theirs[k] != ours[k]}
    assert not differ, f"versions differ (pyproject, environment.yml): {differ}"
    extra = sorted(set(theirs) - set(ours))
    assert not extra, f"pinned in environment.yml only: {extra}"
