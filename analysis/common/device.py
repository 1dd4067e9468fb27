"""The one place that picks a torch device: ``auto`` takes the first available of the
caller's candidates (encoders may use Apple's ``mps``; the probe engine, which solves in
float64 where asked, may not: MPS has no float64)."""

from __future__ import annotations

import torch

EMBED_DEVICES = ("cuda", "mps", "cpu")
PROBE_DEVICES = ("cuda", "cpu")


def available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return kind == "cpu"


def pick_device(setting: str | torch.device = "auto", candidates: tuple[str, ...] = EMBED_DEVICES) -> str:
    """``auto`` = the first available of ``candidates``; anything else is taken as given."""
    if isinstance(setting, torch.device):
        return str(setting)
    if setting != "auto":
        return setting
    return next(c for c in candidates if available(c))


def gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
