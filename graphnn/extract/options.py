"""The keyword arguments of :func:`graphnn.extract` as the command line and the report pipeline
pass them (a module of its own so that ``describe`` need not import the report package)."""

from __future__ import annotations


def extract_options(include=None, exclude=None, conv="l2", trust=False, include_embeddings=False) -> dict:
    """The keyword arguments of :func:`graphnn.extract` (empty globs become ``None``)."""
    return {
        "include": list(include) or None if include else None,
        "exclude": list(exclude) or None if exclude else None,
        "conv": conv,
        "trust": trust,
        "include_embeddings": include_embeddings,
    }
