"""One device picker: explicit settings pass through, `auto` takes the first available."""

from __future__ import annotations

import pytest

from analysis.common import device


def test_explicit_setting_is_taken_as_given():
    assert device.pick_device("cpu") == "cpu"
    assert device.pick_device("cuda:1", device.PROBE_DEVICES) == "cuda:1"


def test_auto_takes_the_first_available_candidate(monkeypatch):
    monkeypatch.setattr(device, "available", lambda kind: kind in {"mps", "cpu"})
    assert device.pick_device("auto", device.EMBED_DEVICES) == "mps"
    assert device.pick_device("auto", device.PROBE_DEVICES) == "cpu"  # the engine never takes mps
    monkeypatch.setattr(device, "available", lambda kind: True)
    assert device.pick_device("auto", device.PROBE_DEVICES) == "cuda"


def test_cpu_is_always_available():
    assert device.available("cpu") and not device.available("tpu")
