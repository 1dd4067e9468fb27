"""The pre-registered primary analysis (paper/preregistration.md) is the one params.yaml runs."""

from __future__ import annotations

import re
from pathlib import Path

from analysis.common.io import load_yaml

ROOT = Path(__file__).resolve().parents[2]


def preregistered(name: str = "preregistration.md") -> dict:
    text = (ROOT / "paper" / name).read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the pre-registration holds exactly one yaml block"
    return load_yaml(blocks[0])


def test_params_run_the_preregistered_primary_analysis():
    pre = preregistered()
    params = load_yaml((ROOT / "params.yaml").read_text())
    for key in ("variant", "split", "matched"):
        assert params["probe_suite"][key] == pre["probe_suite"][key], f"probe_suite.{key}"
    assert params["stats"]["confirmatory"] == pre["stats"]["confirmatory"]
    # the conditions the contrast needs are selected, with the seeds it asks for
    conf = pre["stats"]["confirmatory"]
    text = params["conditions"]["text"]
    for enc in (conf["grounded"], conf["distributional"]):
        assert enc in text
        seeds = [c for c in text if re.fullmatch(rf"{enc}_random(_s\d+)?", c)]
        assert len(seeds) >= conf["min_seeds"], (enc, seeds)



def test_params_run_the_preregistered_grounding_analysis():
    """Pre-registration 2 (the matched pairs): pairs, their readout and the test's settings."""
    pre = preregistered("preregistration_zoo.md")
    params = load_yaml((ROOT / "params.yaml").read_text())
    assert params["conditions"]["matched"] == pre["conditions"]["matched"]
    assert params["stats"]["grounding"] == pre["stats"]["grounding"]
    views = params["probe_suite"]["views"]
    for cond, view in pre["probe_suite"]["views"].items():
        assert views.get(cond) == view, cond
    # every matched condition is read the pre-registered way (the twins too)
    for m in pre["conditions"]["matched"].values():
        for cond in (m["before"], m["after"]):
            assert cond in pre["probe_suite"]["views"]
            assert views.get(f"{cond}_random") == pre["probe_suite"]["views"][cond]
    # the first pre-registration's task and rows: the same design
    assert pre["stats"]["grounding"]["task"] == params["stats"]["confirmatory"]["task"]
