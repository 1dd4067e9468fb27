"""Settings for probe tests: the smoke profile's `probe_suite` section with overrides."""

from __future__ import annotations

import copy
from pathlib import Path

from analysis.common.io import load_yaml
from analysis.common.params import validate
from analysis.probes.settings import SuiteSettings

ROOT = Path(__file__).resolve().parents[2]
ENGINE = {"tol": 1e-6, "max_iter": 100, "max_cg": 100, "device": "cpu", "dtype": "float64",
          "inner_tol": 1e-4, "inner_max_iter": 50}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and v else v
    return out


def suite_dict(*overrides: dict) -> dict:
    """The smoke profile's probe_suite section with ``overrides`` merged in (nested dicts merge;
    an empty dict replaces)."""
    cfg = load_yaml((ROOT / "params.smoke.yaml").read_text())["probe_suite"]
    for o in overrides:
        cfg = _merge(cfg, o)
    return cfg


def suite_settings(*overrides: dict) -> SuiteSettings:
    return validate(SuiteSettings, suite_dict(*overrides), "probe_suite", "params.smoke.yaml")
