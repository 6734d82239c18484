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
from .graph import Block, LayeredGraph, Partition
from .analyses import (Analysis, analyse, connected_components, eigenvector_centrality, hypercore, null_model, strength,
                       strength_variance)
from . import extract  # callable module: graphnn.extract(source, ...)
from .extract.delta import delta, delta_norms
from . import rewire
from .sigprop import signal_propagation

__all__ = [
    "__version__",
    # extract -> graph
    "extract", "LayeredGraph", "Partition", "Block",
    # fine-tune deltas and adapters
    "delta", "delta_norms",
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
