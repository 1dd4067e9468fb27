"""Shared test fixtures: paths to the shipped offline fixtures (VSR sample, images, tiny models)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_VSR = ROOT.parent / "shared" / "vsr"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def fixture_vsr() -> Path:
    """VSR-format sample laid out {variant}/{split}.jsonl (real rows, see make_fixtures.py)."""
    return FIXTURES / "vsr"


@pytest.fixture(scope="session")
def fixture_images() -> Path:
    return FIXTURES / "images"


@pytest.fixture(scope="session")
def shared_vsr() -> Path:
    """The real VSR annotations; tests that need them skip where ../shared is absent."""
    if not (SHARED_VSR / "random" / "train.jsonl").exists():
        pytest.skip("../shared/vsr not present")
    return SHARED_VSR
