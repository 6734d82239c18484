"""graphnn: read neural-network weights as layered weighted graphs.

Extract a model or checkpoint into a :class:`LayeredGraph` whose edges *are* the weight tensors,
analyse it (strength, eigenvector centrality, k-hypercore), and re-initialise weights by rewiring.
"""

from . import _cli_startup

_cli_startup.guard()  # the graphnn command only: Ctrl-C while importing exits 130 without a traceback

from ._version import __version__
from .errors import (
    CheckpointNotFoundError,
    CheckpointWarning,
    ConvergenceWarning,
    CorruptCheckpointError,
    DisconnectedGraphWarning,
    GraphnnError,
    GraphTooLargeError,
    InvalidParameterError,
    MissingDependencyError,
    NonFiniteWeightsError,
    NonFiniteWeightsWarning,
    NothingMappableError,
    RefusedOverwriteError,
    TopologyWarning,
    UnsafeCheckpointError,
    UnsupportedSourceError,
)
#: Public name -> (module relative to this package, attribute; ``None``: the module itself).
#: Imported on first use (PEP 562), so that ``import graphnn`` and ``graphnn --help`` do not pay
#: for torch and pandas. To export a new name: add it here and to ``__all__``.
_LAZY: dict[str, tuple[str, str | None]] = {
    # extract -> graph
    "extract": (".extract", None),  # a callable module: graphnn.extract(source, ...)
    "LayeredGraph": (".graph", "LayeredGraph"),
    "Partition": (".graph", "Partition"),
    "Block": (".graph", "Block"),
    # fine-tune deltas and adapters
    "delta": (".extract.delta", "delta"),
    "delta_norms": (".extract.delta", "delta_norms"),
    "lora_delta": (".extract.lora", "lora_delta"),
    "lora_strength": (".extract.lora", "lora_strength"),
    # analyses
    "Analysis": (".analyses", "Analysis"),
    "analyse": (".analyses", "analyse"),
    "connected_components": (".analyses", "connected_components"),
    "eigenvector_centrality": (".analyses", "eigenvector_centrality"),
    "hypercore": (".analyses", "hypercore"),
    "null_model": (".analyses", "null_model"),
    "strength": (".analyses", "strength"),
    "strength_variance": (".analyses", "strength_variance"),
    # rewire / re-initialise, signal propagation
    "rewire": (".rewire", None),
    "signal_propagation": (".sigprop", "signal_propagation"),
}


def __getattr__(name: str):
    """Import a public name of :data:`_LAZY` on first use and keep it (PEP 562); a subpackage
    (``graphnn.sigprop``, ``graphnn.analyses``, ...) is imported on first use too."""
    import importlib
    import importlib.util

    if name in _LAZY:
        module_name, attr = _LAZY[name]
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        module_name, attr = f".{name}", None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(module_name, __name__)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    # extract -> graph
    "extract", "LayeredGraph", "Partition", "Block",
    # fine-tune deltas and adapters
    "delta", "delta_norms", "lora_delta", "lora_strength",
    # analyses
    "strength", "strength_variance", "eigenvector_centrality", "connected_components", "hypercore", "analyse", "Analysis",
    "null_model",
    # rewire / re-initialise
    "rewire", "signal_propagation",
    # errors and warnings
    "GraphnnError", "InvalidParameterError", "CheckpointNotFoundError", "CorruptCheckpointError", "UnsafeCheckpointError",
    "NothingMappableError", "UnsupportedSourceError", "GraphTooLargeError", "MissingDependencyError",
    "NonFiniteWeightsError", "RefusedOverwriteError", "NonFiniteWeightsWarning", "TopologyWarning", "CheckpointWarning",
    "ConvergenceWarning", "DisconnectedGraphWarning",
]
