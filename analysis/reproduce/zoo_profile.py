"""Command `zoo_profile`: the model zoo's `conditions.text` list, derived from the params file, so
that the selection has one home (`make zoo`, `make zoo-queue` and the README all call this).

The zoo profile is the study's text conditions (`conditions.text`), then, part by part, each
matched pair of `conditions.matched` (its `before` and `after` and their random-weight twins
`<condition>_random`, seed `models.random_seed`), then each other model of `models.zoo` alone
(`zoo_<name>`, part `<name>`); a condition listed earlier is not listed again. Each part is an
experiment of its own on the queue (`make zoo-queue`).

    python -m analysis zoo_profile [--params FILE]         the whole list: [sbert, ..., zoo_siglip]
    python -m analysis zoo_profile --parts                 the part names, one a line
    python -m analysis zoo_profile --part NAME             one part's conditions: [zoo_roberta, ...]
    python -m analysis zoo_profile --part NAME --targets   its DVC targets: probe_suite@zoo_roberta ...

The list is written as `dvc exp run -S 'conditions.text=<list>'` takes it.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable

from analysis.common.params import (DEFAULT_PARAMS, ConditionSets, SettingsError, condition_sets,
                                    load_params, section)

ZOO_PREFIX = "zoo_"  # condition zoo_<name> embeds with models.zoo.<name> (analysis/embed/embed.py)
TWIN_SUFFIX = "_random"  # the random-weight twin at seed models.random_seed
TARGET_STAGE = "probe_suite"  # a condition's probe stage; its embedding stage runs upstream of it


def zoo_parts(sets: ConditionSets, zoo: Iterable[str], path: Any = DEFAULT_PARAMS
              ) -> dict[str, tuple[str, ...]]:
    """The zoo's conditions beyond ``sets.text``, by part (one queued experiment each): each
    matched pair with its seed-0 twins, named as in ``conditions.matched``, then each other model
    of ``zoo`` alone, named as in ``models.zoo``. A condition already listed is left out, and so
    is a part left empty."""
    zoo = list(zoo)
    known = set(sets.text) | {ZOO_PREFIX + n for n in zoo}
    for name, m in sets.matched.items():
        for side in ("before", "after"):
            cond = getattr(m, side)
            if cond not in known:
                raise SettingsError(
                    f"{path}: conditions.matched.{name}.{side}: {cond} is neither in "
                    f"conditions.text nor a model of models.zoo (zoo_<name>: "
                    f"{', '.join(ZOO_PREFIX + n for n in zoo) or 'models.zoo is empty'})")
    seen = set(sets.text)
    parts: dict[str, tuple[str, ...]] = {}

    def take(names: Iterable[str]) -> tuple[str, ...]:
        new = tuple(c for c in dict.fromkeys(names) if c not in seen)
        seen.update(new)
        return new

    for name, m in sets.matched.items():
        parts[name] = take((m.before, m.after, m.before + TWIN_SUFFIX, m.after + TWIN_SUFFIX))
    for name in zoo:
        conds = take([ZOO_PREFIX + name])
        if not conds:
            continue
        if name in parts:
            raise SettingsError(f"{path}: models.zoo.{name} is in no matched pair but "
                                f"conditions.matched.{name} is a pair: rename the pair")
        parts[name] = conds
    return {name: conds for name, conds in parts.items() if conds}


def zoo_conditions(sets: ConditionSets, parts: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The zoo experiment's ``conditions.text``: the study's, then every part's."""
    return sets.text + tuple(c for conds in parts.values() for c in conds)


def flow_list(names: Iterable[str]) -> str:
    """``[a, b]``: a YAML flow list, as ``dvc exp run -S key=<value>`` parses it."""
    return "[" + ", ".join(names) + "]"


def targets(names: Iterable[str]) -> str:
    """The DVC targets that embed and probe ``names`` (each probe stage pulls in its embedding)."""
    return " ".join(f"{TARGET_STAGE}@{c}" for c in names)


def profile(params: dict[str, Any], path: Any = DEFAULT_PARAMS
            ) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """The zoo experiment's ``conditions.text`` and its parts, from a params mapping."""
    sets = condition_sets(params, path)
    models = section(params, "models", path)
    zoo = (models.get("zoo") if isinstance(models, dict) else None) or {}
    parts = zoo_parts(sets, zoo, path)
    return zoo_conditions(sets, parts), parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis zoo_profile",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(DEFAULT_PARAMS),
                        help="params file (default: params.yaml)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--parts", action="store_true", help="print the part names, one a line")
    which.add_argument("--part", metavar="NAME", help="print one part's conditions only")
    parser.add_argument("--targets", action="store_true",
                        help="print DVC targets (probe_suite@<condition> ...) instead of a list")
    args = parser.parse_args(argv)
    conds, parts = profile(load_params(args.params), args.params)
    if args.parts:
        print("\n".join(parts))
        return 0
    if args.part is not None:
        if args.part not in parts:
            raise SettingsError(f"{args.params}: no zoo part {args.part!r}; the parts are: "
                                f"{', '.join(parts) or 'none (no zoo model to add)'}")
        conds = parts[args.part]
    print(targets(conds) if args.targets else flow_list(conds))
    return 0
