"""Hugging Face modules: the config of a transformers ``PreTrainedModel`` as a ``config.json`` dict.

Only the plain ``config.json`` dict is used (``model_type``, ``architectures``, head counts,
``hidden_size``, ``tie_word_embeddings``); transformers is not imported here.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def module_config(model: nn.Module) -> dict[str, Any] | None:
    """The config of a transformers ``PreTrainedModel`` as a ``config.json``-style dict (with
    ``architectures`` set to the module's class when the config does not say), else ``None``."""
    cfg = getattr(model, "config", None)
    to_dict = getattr(cfg, "to_dict", None)
    if not callable(to_dict) or not getattr(cfg, "model_type", None):
        return None
    try:
        data = dict(to_dict())
    except Exception:  # noqa: BLE001 - a foreign object with a to_dict of its own
        return None
    data["architectures"] = [type(model).__name__]
    if "tie_word_embeddings" not in data and hasattr(cfg, "tie_word_embeddings"):
        data["tie_word_embeddings"] = cfg.tie_word_embeddings
    return data
