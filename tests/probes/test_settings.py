"""The probe suite's settings: validation messages and the layer-wise overrides."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.common.params import SettingsError, validate
from analysis.probes.settings import SuiteSettings
from tests.probes.conftest import suite_dict, suite_settings


def test_layer_settings_override_only_what_layers_sets():
    cfg = suite_settings({"cv": {"n_splits": 5, "n_repeats": 2, "inner_splits": 3, "seed": 7},
                          "C_grid": {"min": 1e-4, "max": 1e4, "num": 9},
                          "layers": {"n_splits": 3, "n_repeats": 1, "inner_splits": 2,
                                     "C_grid": {"min": 1e-4, "max": 1e4, "num": 5},
                                     "t2_max_assignments": 3}})
    lay = cfg.for_layers()
    assert lay.cv.model_dump() == {"n_splits": 3, "n_repeats": 1, "inner_splits": 2, "seed": 7}
    assert lay.C_grid.num == 5 and lay.t2.max_assignments == 3
    assert cfg.cv.n_splits == 5 and cfg.C_grid.num == 9  # the suite's own settings are untouched
    plain = suite_settings({"cv": cfg.cv.model_dump(), "layers": {}}).for_layers()
    assert plain.cv == cfg.cv


def test_t1_settings_override_only_what_t1_sets():
    """`t1.n_splits`, `inner_splits`, `n_repeats` and `C_grid` apply to T1 and its control task
    alone; every other task keeps the suite's CV and grid."""
    from analysis.probes.tasks import t1_problems
    import pandas as pd

    cfg = suite_settings({"cv": {"n_splits": 4, "n_repeats": 2, "inner_splits": 3, "seed": 7},
                          "C_grid": {"min": 1e-4, "max": 1e4, "num": 9},
                          "t1": {"n_splits": 2, "inner_splits": 2,
                                 "C_grid": {"min": 1e-2, "max": 1e2, "num": 3}}})
    t1 = cfg.for_t1()
    assert t1.cv.model_dump() == {"n_splits": 2, "n_repeats": 2, "inner_splits": 2, "seed": 7}
    assert t1.C_grid.values() == pytest.approx([1e-2, 1.0, 1e2])
    assert cfg.cv.n_splits == 4 and cfg.C_grid.num == 9
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"relation": rng.choice(["above", "below", "near"], size=120),
                          "subject": [f"s{i % 17}" for i in range(120)],
                          "object": [f"o{i % 5}" for i in range(120)],
                          "caption": [f"c{i}" for i in range(120)]})
    prob = t1_problems(table, t1.t1.model_copy(update={"min_count": 1}), t1.cv, ovr=False)[0]
    assert len(prob.folds) == 2 * 2 and all(len(f.inner) == 2 for f in prob.folds)
    assert suite_settings({"cv": cfg.cv.model_dump()}).for_t1().cv == cfg.cv


def test_misspelled_setting_is_named_with_a_suggestion():
    with pytest.raises(SettingsError) as err:
        suite_settings({"cv": {"n_split": 3, "n_repeats": 1, "inner_splits": 2, "seed": 0}})
    msg = str(err.value)
    assert "unknown setting 'n_split' in section 'probe_suite.cv' (did you mean 'n_splits'?)" in msg


def test_missing_required_setting_is_named_with_its_meaning():
    cfg = suite_dict()
    del cfg["cv"]["n_splits"]
    with pytest.raises(SettingsError, match=r"missing required setting 'probe_suite.cv.n_splits' "
                                            r"\(outer folds\)"):
        validate(SuiteSettings, cfg, "probe_suite", "params.yaml")


def test_c_grid_values_are_log_spaced():
    g = suite_settings({"C_grid": {"min": 1e-2, "max": 1e2, "num": 5}}).C_grid.values()
    np.testing.assert_allclose(g, [1e-2, 1e-1, 1, 10, 100])
