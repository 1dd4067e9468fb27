"""Spatial probing study: does visually grounded training (CLIP) encode spatial relations
better than distributional training (SBERT)? Each pipeline stage is a module run as
``python -m analysis <stage>``."""

__version__ = "0.1.0"
