"""Hugging Face models: the config of a transformers ``PreTrainedModel`` as a ``config.json``
dict (no transformers import), and the model a ``config.json`` describes built on the ``meta``
device with inputs for one forward pass there (graph-model.md §2d way 2; needs transformers).
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


def meta_model(config: dict[str, Any]) -> nn.Module:
    """The transformers model that ``config.json`` describes, built on the ``meta`` device (shapes,
    no weights, no memory): the class of ``architectures[0]`` when transformers has it, else
    ``AutoModel``. Raises ImportError without transformers, or whatever transformers raises."""
    import torch
    import transformers

    cfg = transformers.AutoConfig.for_model(**config)
    arch = (config.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
    with torch.device("meta"):
        return cls._from_config(cfg) if cls is not None else transformers.AutoModel.from_config(cfg)


def meta_inputs(model: nn.Module, config: dict[str, Any]) -> tuple | None:
    """Inputs for one forward pass of ``model`` on the ``meta`` device, from its main input
    (``pixel_values``: one image of ``image_size``, default 224; ``input_ids``: 8 tokens), or
    ``None`` when the model takes something else."""
    import torch

    name = getattr(model, "main_input_name", "input_ids")
    if name == "pixel_values":
        size = config.get("image_size") or 224
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        return (torch.zeros(1, int(config.get("num_channels") or 3), h, w, device="meta"),)
    if name == "input_ids":
        return (torch.zeros(1, 8, dtype=torch.long, device="meta"),)
    return None
