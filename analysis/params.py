"""Read one stage's section of a params file (DVC convention: ``params.yaml`` by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(KeyError):
    """A required setting is missing; the message names the file and the key."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params file not found: {path}")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return data


def section(params: dict[str, Any], key: str, path: str | Path = DEFAULT_PARAMS) -> Any:
    """Return ``params[key]`` (dotted keys allowed) or raise naming file and key."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"{path}: missing setting '{key}'")
        node = node[part]
    return node
