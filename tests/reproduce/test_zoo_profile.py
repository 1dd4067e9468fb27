"""`python -m analysis zoo_profile`: the model zoo's conditions.text list (make zoo) and its parts
(make zoo-queue), against what the params file implies."""

from __future__ import annotations

import pytest
import yaml

from analysis.__main__ import main as cli
from analysis.common.io import load_yaml
from analysis.common.params import ConditionSets
from analysis.embed.embed import ModelsSettings, parse_condition
from analysis.reproduce.zoo_profile import main
from tests.conftest import ROOT


def printed(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out.strip()


def as_list(text: str) -> list[str]:
    """The printed list, read as `dvc exp run -S key=value` reads a value (YAML)."""
    value = yaml.safe_load(text)
    assert isinstance(value, list) and all(isinstance(c, str) for c in value), text
    return value


def test_the_study_profile_is_its_conditions_plus_every_zoo_model_and_the_matched_twins(capsys):
    path = ROOT / "params.yaml"
    params = load_yaml(path.read_text())
    text = params["conditions"]["text"]
    matched = params["conditions"]["matched"]
    zoo = params["models"]["zoo"]
    assert matched and zoo  # the study has both (issue 14)
    listed = as_list(printed(capsys, "--params", str(path)))
    assert listed[:len(text)] == text and len(set(listed)) == len(listed)
    sides = {c for m in matched.values() for c in (m["before"], m["after"])}
    assert set(listed) == set(text) | {f"zoo_{n}" for n in zoo} | {f"{c}_random" for c in sides}
    # with this list every matched pair is analysed, and the embed stage knows every condition
    sets = ConditionSets.model_validate({**params["conditions"], "text": listed})
    assert set(sets.matched_run()) == set(matched)
    models = ModelsSettings.model_validate(params["models"])
    for cond in listed[len(text):]:
        parsed = parse_condition(cond, models)
        assert parsed.model == "zoo" and (parsed.random_seed == models.random_seed) == cond.endswith("_random")


def test_parts_are_the_matched_pairs_then_each_other_model_and_add_up_to_the_list(capsys):
    path = str(ROOT / "params.yaml")
    params = load_yaml((ROOT / "params.yaml").read_text())
    matched = params["conditions"]["matched"]
    listed = as_list(printed(capsys, "--params", path))
    parts = printed(capsys, "--params", path, "--parts").splitlines()
    paired = {c for m in matched.values() for c in (m["before"], m["after"])}
    assert parts == [*matched, *(n for n in params["models"]["zoo"] if f"zoo_{n}" not in paired)]
    joined = []
    for part in parts:
        conds = as_list(printed(capsys, "--params", path, "--part", part))
        if part in matched:
            m = matched[part]
            assert conds == [m["before"], m["after"], m["before"] + "_random", m["after"] + "_random"]
        else:
            assert conds == [f"zoo_{part}"]
        assert printed(capsys, "--params", path, "--part", part, "--targets").split() == [
            f"probe_suite@{c}" for c in conds]
        joined += conds
    assert listed == params["conditions"]["text"] + joined


def test_the_smoke_profile_runs_the_zoo_of_every_family_and_two_matched_pairs(capsys):
    """params.smoke.yaml runs a part of the study's zoo on tiny fixtures: only conditions the
    profile would add, every family of models.zoo, at least the pre-registered test's minimum of
    matched pairs with both sides, and random twins of one pair."""
    smoke = load_yaml((ROOT / "params.smoke.yaml").read_text())
    text = smoke["conditions"]["text"]
    study = load_yaml((ROOT / "params.yaml").read_text())
    added = as_list(printed(capsys, "--params", str(ROOT / "params.yaml")))[len(study["conditions"]["text"]):]
    zoo = [c for c in text if c.startswith("zoo_")]
    assert zoo and set(zoo) <= set(added)
    families = {spec["family"] for spec in study["models"]["zoo"].values()}
    run = {smoke["models"]["zoo"][c.removeprefix("zoo_")]["family"] for c in zoo if not c.endswith("_random")}
    assert run == families
    pairs = [m for m in smoke["conditions"]["matched"].values() if m["before"] in text and m["after"] in text]
    assert len(pairs) >= smoke["stats"]["grounding"]["min_pairs"]
    assert any(f"{m['before']}_random" in text and f"{m['after']}_random" in text for m in pairs)


def _params(tmp_path, conditions: dict, zoo: tuple[str, ...]):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"conditions": conditions,
                                    "models": {"zoo": {n: {"family": "hf_text"} for n in zoo}}}))
    return str(path)


def test_conditions_already_listed_are_not_repeated_and_empty_parts_dropped(tmp_path, capsys):
    path = _params(tmp_path, {"text": ["sbert", "zoo_a", "zoo_a_random"],
                              "matched": {"p": {"before": "zoo_a", "after": "zoo_b"},
                                          "q": {"before": "sbert", "after": "zoo_a"}}},
                   ("a", "b", "c"))
    assert as_list(printed(capsys, "--params", path)) == [
        "sbert", "zoo_a", "zoo_a_random", "zoo_b", "zoo_b_random", "sbert_random", "zoo_c"]
    assert printed(capsys, "--params", path, "--parts").splitlines() == ["p", "q", "c"]
    assert as_list(printed(capsys, "--params", path, "--part", "q")) == ["sbert_random"]
    empty = _params(tmp_path, {"text": ["sbert"]}, ())
    assert as_list(printed(capsys, "--params", empty)) == ["sbert"]
    assert printed(capsys, "--params", empty, "--parts") == ""


@pytest.mark.parametrize("conditions, zoo, argv, message", [
    ({"text": [], "matched": {"p": {"before": "zoo_a", "after": "zoo_typo"}}}, ("a",), [],
     "conditions.matched.p.after: zoo_typo is neither in conditions.text nor a model of models.zoo"),
    ({"text": [], "matched": {"b": {"before": "zoo_a", "after": "zoo_c"}}}, ("a", "b", "c"), [],
     "models.zoo.b is in no matched pair but conditions.matched.b is a pair"),
    ({"text": []}, ("a",), ["--part", "nope"], "no zoo part 'nope'; the parts are: a"),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, conditions, zoo, argv, message):
    path = _params(tmp_path, conditions, zoo)
    assert cli(["zoo_profile", "--params", path, *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"error: zoo_profile: {path}: {message}" in captured.err
