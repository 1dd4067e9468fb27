"""Settings: every stage reads its own section of a params file (DVC convention: ``params.yaml``)
into one frozen, documented settings class built on `Settings`. An unknown key, a missing
required key or a value of the wrong type is a `SettingsError` naming the file, the section
and the key, with the nearest valid key suggested.

Validation is pydantic's (``extra="forbid"``); this module only turns its errors into messages
that name the params file and suggest a key (`difflib`).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from analysis.common.errors import UserError
from analysis.common.io import load_yaml
from analysis.common.store import is_image_condition

DEFAULT_PARAMS = Path("params.yaml")
CONDITION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

S = TypeVar("S", bound="Settings")


class SettingsError(UserError):
    """A setting is unknown, missing or invalid; the message names file, section and key."""


class Settings(BaseModel):
    """Base of every stage's settings: immutable, unknown keys rejected, each field documented
    by the docstring under it (shown by ``Model.model_fields[name].description``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True,
                              arbitrary_types_allowed=False)


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The whole params file as a mapping (each stage then takes its own section)."""
    path = Path(path)
    if not path.exists():
        raise SettingsError(f"params file not found: {path}")
    try:
        with path.open() as fh:
            data = load_yaml(fh.read()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the top level must be a mapping of sections")
    return data


def section(params: dict[str, Any], key: str, path: str | Path = DEFAULT_PARAMS) -> Any:
    """``params[key]`` (dotted keys allowed), or a `SettingsError` naming file and key with the
    nearest existing key suggested."""
    node: Any = params
    done: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(done) or "the top level"
            hint = _suggest(part, node.keys() if isinstance(node, dict) else [])
            raise SettingsError(f"{path}: missing setting '{key}' (no '{part}' in {where}){hint}")
        node = node[part]
        done.append(part)
    return node


def stage_settings(model: type[S], params: dict[str, Any], name: str,
                   path: str | Path = DEFAULT_PARAMS) -> S:
    """Build ``model`` from section ``name`` of ``params`` (read from ``path``)."""
    return validate(model, section(params, name, path), name, path)


def validate(model: type[S], data: Any, name: str, path: str | Path = DEFAULT_PARAMS) -> S:
    """``model`` from a mapping; every validation error becomes one line of a `SettingsError`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: section '{name}' must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(model, err, name, path) for err in exc.errors()]
        raise SettingsError("\n".join(dict.fromkeys(lines))) from None


class PairSpec(Settings):
    """An image condition and a text condition of one model, probed together on grounded truth
    (T3: image only, concatenation, interaction, zero-shot)."""

    text: str
    text_view: str | None = None
    image: str
    image_view: str | None = None
    image_only: bool = True
    """also probe the image alone (false where another pair already probes this image, e.g.
    SBERT text with CLIP's image features: each condition's probes come from one unit)"""


class MatchedSpec(Settings):
    """A matched encoder pair (issue 14): a text-only model (``before``) and the text tower that
    was trained against images starting from it (``after``); both text conditions."""

    before: str
    after: str


class ConditionSets(Settings):
    """The top-level ``conditions`` section. It is split by kind because DVC fans each list out
    into its own stages (``foreach``): a text condition's stages depend on no image, so
    toggling an image condition re-runs nothing of SBERT's."""

    text: tuple[str, ...] = ()
    """text conditions: embedded from the captions alone"""
    image: tuple[str, ...] = ()
    """image conditions: need the COCO images (stage `images`)"""
    pairs: dict[str, PairSpec] = {}
    """name -> the image and text condition probed together on grounded truth (T3)"""
    matched: dict[str, MatchedSpec] = {}
    """name -> a matched before/after-grounding pair of text conditions (the grounding effect,
    `stats.grounding`, and the tower-vs-initialization geometry, `rsa`); a pair is analysed when
    both of its conditions are in ``text``, and reported as not run otherwise"""

    @property
    def all(self) -> tuple[str, ...]:
        return self.text + self.image

    def units(self, bow: bool = True) -> tuple[str, ...]:
        """The probe suite's units (one DVC stage each): text conditions, bag of words, pairs."""
        return self.text + (("bow",) if bow else ()) + tuple(self.pairs)

    def matched_run(self) -> dict[str, MatchedSpec]:
        """The matched pairs whose two conditions are both selected in ``text``."""
        return {k: m for k, m in self.matched.items() if m.before in self.text and m.after in self.text}


def condition_sets(params: dict[str, Any], path: str | Path = DEFAULT_PARAMS) -> ConditionSets:
    """The ``conditions`` section, checked: valid names, no repeats, each list holding
    conditions of its kind, every pair naming listed conditions."""
    value = section(params, "conditions", path)
    if isinstance(value, list):
        raise SettingsError(
            f"{path}: 'conditions' is a mapping {{text: [...], image: [...], pairs: {{...}}}} "
            f"(got a list {value!r}): put text conditions under 'text', image ones under 'image'")
    sets = validate(ConditionSets, value, "conditions", path)
    names = sets.all
    bad = [c for c in names if not CONDITION_NAME.match(c)]
    if bad:
        raise SettingsError(f"{path}: conditions: invalid names {bad} (lower-case letters, digits, _)")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise SettingsError(f"{path}: conditions: listed more than once: {dup}")
    for kind, wrong in (("text", [c for c in sets.text if is_image_condition(c)]),
                        ("image", [c for c in sets.image if not is_image_condition(c)])):
        if wrong:
            other = "image" if kind == "text" else "text"
            raise SettingsError(f"{path}: conditions.{kind}: {wrong} are {other} conditions: "
                                f"move them to conditions.{other}")
    for name, p in sets.pairs.items():
        if not CONDITION_NAME.match(name) or name in names or name == "bow":
            raise SettingsError(f"{path}: conditions.pairs: {name!r} must be a new name "
                                "(lower-case letters, digits, _), not a condition's")
        for kind, cond, listed in (("text", p.text, sets.text), ("image", p.image, sets.image)):
            if cond not in listed:
                raise SettingsError(f"{path}: conditions.pairs.{name}.{kind}: {cond} is not in "
                                    f"conditions.{kind}: add it there or remove the pair")
    for name, m in sets.matched.items():
        bad = [c for c in (m.before, m.after) if not CONDITION_NAME.match(c) or is_image_condition(c)]
        if bad or m.before == m.after:
            raise SettingsError(f"{path}: conditions.matched.{name}: before and after must be two "
                                f"different text conditions (got {m.before!r}, {m.after!r})")
    alone = [p.image for p in sets.pairs.values() if p.image_only]
    twice = sorted({c for c in alone if alone.count(c) > 1})
    if twice:
        raise SettingsError(f"{path}: conditions.pairs: image conditions {twice} are probed alone "
                            "by more than one pair: set image_only: false on all but one")
    return sets


def conditions(params: dict[str, Any], path: str | Path = DEFAULT_PARAMS) -> tuple[str, ...]:
    """Every embedding condition of the ``conditions`` section (text, then image)."""
    return condition_sets(params, path).all


# --------------------------------------------------------------------------- messages


def _suggest(key: str, valid: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The settings classes an annotation can hold (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _walk(model: type[BaseModel], loc: tuple) -> tuple[tuple, type[BaseModel] | None]:
    """``loc`` without pydantic's union-member tags, and the settings class owning its last
    element (None where that element is a list index or mapping key)."""
    clean: list = []
    current: type[BaseModel] | None = model
    pending: type[BaseModel] | None = None  # model of a list/dict field, for its elements
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if current is not None:
            if str(part) in current.model_fields:
                clean.append(part)
                if last:
                    return tuple(clean), current
                annotation = current.model_fields[str(part)].annotation
                found = _models_in(annotation)
                if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                    current, pending = annotation, None
                elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
                    direct = [m for m in found if m in typing.get_args(annotation)]  # Model | None
                    current = direct[0] if direct else None
                    pending = None if direct else (found[0] if found else None)
                else:  # a container (list, tuple, dict) of settings classes: next is an index/key
                    current, pending = None, (found[0] if found else None)
                continue
            if last:  # an unknown key of this model
                clean.append(part)
                return tuple(clean), current
            continue  # a union tag pydantic inserted: not part of the user's key
        clean.append(part)  # a list index or mapping key; its element may be a settings class
        if pending is not None:
            current, pending = pending, None
    return tuple(clean), current


def _describe(model: type[BaseModel], err: dict, name: str, path: str | Path) -> str:
    loc, owner = _walk(model, tuple(err["loc"]))
    dotted = ".".join([name, *map(str, loc)])
    parent = ".".join([name, *map(str, loc[:-1])])
    if err["type"] == "extra_forbidden":
        hint = _suggest(loc[-1], owner.model_fields) if owner else ""
        return f"{path}: unknown setting '{loc[-1]}' in section '{parent}'{hint}"
    if err["type"] == "missing":
        doc = ""
        if owner is not None and str(loc[-1]) in owner.model_fields:
            desc = owner.model_fields[str(loc[-1])].description
            doc = f" ({desc.splitlines()[0]})" if desc else ""
        return f"{path}: missing required setting '{dotted}'{doc}"
    return f"{path}: setting '{dotted}': {err['msg']} (got {err.get('input')!r})"
