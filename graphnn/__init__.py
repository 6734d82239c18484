"""graphnn: read neural-network weights as layered weighted graphs.

Extract a model or checkpoint into a :class:`LayeredGraph` whose edges *are* the weight tensors,
analyse it (strength, eigenvector centrality, k-hypercore), and re-initialise weights by rewiring.
"""

from ._version import __version__
from .errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    GraphnnError,
    GraphTooLargeError,
    MissingDependencyError,
    NonFiniteWeightsWarning,
    NothingMappableError,
    TopologyWarning,
    UnsafeCheckpointError,
    UnsupportedSourceError,
)
from .graph import Block, LayeredGraph, Partition
from .analyses import strength, strength_variance, eigenvector_centrality, hypercore, analyse, Analysis
from . import rewire
from . import extract  # callable module: graphnn.extract(source, ...)

__all__ = [
    "__version__",
    "extract",
    "strength", "strength_variance", "eigenvector_centrality", "hypercore", "analyse", "Analysis",
    "Block",
    "LayeredGraph",
    "Partition",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "GraphnnError",
    "GraphTooLargeError",
    "MissingDependencyError",
    "NonFiniteWeightsWarning",
    "NothingMappableError",
    "TopologyWarning",
    "UnsafeCheckpointError",
    "UnsupportedSourceError",
]
