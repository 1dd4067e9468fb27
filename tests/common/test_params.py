"""Settings validation: both params files build every stage's settings; unknown, missing and
mistyped keys are errors naming the file, section and key, with the nearest key suggested."""

from __future__ import annotations

import copy

import pytest
import yaml

from analysis.common.params import (Settings, SettingsError, condition_sets, conditions, load_params, section,
                                    stage_settings, validate)
from analysis.data.images import ImagesSettings
from analysis.data.templates import TemplatesSettings
from analysis.data.vsr import VsrSettings
from analysis.embed.embed import EmbedSettings, ModelsSettings
from analysis.geometry.rsa import RsaSettings
from analysis.inference.stats import StatsSettings
from analysis.probes.probe_replication import ReplicationSettings
from analysis.probes.settings import SuiteSettings
from tests.conftest import ROOT

SECTIONS = {"data": VsrSettings, "templates": TemplatesSettings, "images": ImagesSettings,
            "models": ModelsSettings, "embed": EmbedSettings,
            "probe_replication": ReplicationSettings, "probe_suite": SuiteSettings,
            "stats": StatsSettings, "rsa": RsaSettings}


@pytest.mark.parametrize("name", ["params.yaml", "params.smoke.yaml"])
def test_both_params_files_build_every_stage(name):
    params = load_params(ROOT / name)
    assert set(params) == {*SECTIONS, "conditions"}  # no section nobody reads
    for sec, model in SECTIONS.items():
        cfg = stage_settings(model, params, sec, name)
        assert cfg.model_config["frozen"] and cfg.model_config["extra"] == "forbid"
    assert conditions(params, name)


def test_misspelled_optional_key_is_an_error_not_ignored():
    """`embed.layer:` for `layers:` used to be ignored silently (and left a stale layers.npy)."""
    params = load_params(ROOT / "params.yaml")
    bad = copy.deepcopy(params["embed"])
    bad["layer"] = bad.pop("layers")
    with pytest.raises(SettingsError) as err:
        validate(EmbedSettings, bad, "embed", "params.yaml")
    assert str(err.value) == ("params.yaml: unknown setting 'layer' in section 'embed' "
                              "(did you mean 'layers'?)")


def test_nested_keys_and_types_are_named(tmp_path):
    params = load_params(ROOT / "params.yaml")
    suite = copy.deepcopy(params["probe_suite"])
    suite["bow"]["min_dff"] = suite["bow"].pop("min_df")
    suite["cv"]["n_splits"] = "five"
    with pytest.raises(SettingsError) as err:
        validate(SuiteSettings, suite, "probe_suite", "params.yaml")
    lines = str(err.value).splitlines()
    assert ("params.yaml: unknown setting 'min_dff' in section 'probe_suite.bow' "
            "(did you mean 'min_df'?)") in lines
    assert any(line.startswith("params.yaml: setting 'probe_suite.cv.n_splits': ") and "'five'" in line
               for line in lines)
    cond = copy.deepcopy(params)
    cond["conditions"]["pairs"]["clip"]["txt"] = cond["conditions"]["pairs"]["clip"].pop("text")
    with pytest.raises(SettingsError) as err:
        condition_sets(cond, "params.yaml")
    lines = str(err.value).splitlines()
    assert ("params.yaml: unknown setting 'txt' in section 'conditions.pairs.clip' "
            "(did you mean 'text'?)") in lines
    assert any(line.startswith("params.yaml: missing required setting 'conditions.pairs.clip.text'")
               for line in lines)


def test_literal_choices_are_enforced():
    stats = copy.deepcopy(load_params(ROOT / "params.yaml")["stats"])
    stats["ci_method"] = "bootstrap-t"
    with pytest.raises(SettingsError, match=r"setting 'stats.ci_method': .*'percentile' or 'bca'"):
        validate(StatsSettings, stats, "stats", "params.yaml")


def test_missing_section_and_file(tmp_path):
    with pytest.raises(SettingsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"probe_suit": {}}))
    with pytest.raises(SettingsError, match=r"missing setting 'probe_suite' .*did you mean 'probe_suit'"):
        section(load_params(tmp_path / "p.yaml"), "probe_suite", tmp_path / "p.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_conditions_are_checked():
    with pytest.raises(SettingsError, match="listed more than once"):
        conditions({"conditions": {"text": ["sbert", "sbert"]}})
    with pytest.raises(SettingsError, match="invalid names"):
        conditions({"conditions": {"text": ["SBERT model"]}})
    with pytest.raises(SettingsError, match=r"is a mapping \{text: .*put text conditions under 'text'"):
        conditions({"conditions": ["sbert", "clip_image"]})  # the old flat list
    with pytest.raises(SettingsError, match=r"conditions.text: \['clip_image'\] are image "
                                            r"conditions: move them to conditions.image"):
        conditions({"conditions": {"text": ["sbert", "clip_image"]}})
    with pytest.raises(SettingsError, match=r"conditions.image: \['sbert_random'\] are text"):
        conditions({"conditions": {"image": ["sbert_random"]}})
    pair = {"text": "clip_text", "image": "clip_image"}
    with pytest.raises(SettingsError, match=r"conditions.pairs.clip.image: clip_image is not in "
                                            r"conditions.image: add it there or remove the pair"):
        conditions({"conditions": {"text": ["clip_text"], "pairs": {"clip": pair}}})
    with pytest.raises(SettingsError, match="must be a new name"):
        conditions({"conditions": {"text": ["clip_text"], "image": ["clip_image"],
                                   "pairs": {"clip_text": pair}}})
    both = {"text": ["sbert", "clip_text"], "image": ["clip_image"],
            "pairs": {"clip": pair, "sbert_clip": {"text": "sbert", "image": "clip_image"}}}
    with pytest.raises(SettingsError, match=r"image conditions \['clip_image'\] are probed alone by "
                                            r"more than one pair: set image_only: false"):
        conditions({"conditions": both})
    both["pairs"]["sbert_clip"]["image_only"] = False
    assert condition_sets({"conditions": both}).pairs["sbert_clip"].image_only is False
    sets = condition_sets({"conditions": {"text": ["sbert", "clip_text"], "image": ["clip_image"],
                                          "pairs": {"clip": pair}}})
    assert sets.all == ("sbert", "clip_text", "clip_image")
    assert sets.units() == ("sbert", "clip_text", "bow", "clip")


def test_settings_are_frozen():
    class S(Settings):
        a: int

    s = S(a=1)
    with pytest.raises(Exception):
        s.a = 2
