"""Inference engines. Each is a combination of handlers run over a model."""

from probexec.inference.prior import sample_prior

__all__ = ["sample_prior"]
