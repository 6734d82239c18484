"""Exceptions and warnings raised by graphnn.

Every error says what went wrong *and* what to do about it. All errors derive from
:class:`GraphnnError`, and also from the closest built-in exception so that generic
``except FileNotFoundError`` / ``except ValueError`` handlers keep working.
"""

from __future__ import annotations


class GraphnnError(Exception):
    """Base class of every graphnn error."""


class InvalidParameterError(GraphnnError, ValueError):
    """A usage error: an option or argument has a value graphnn cannot use (like scikit-learn's
    ``InvalidParameterError``). The message names the option, the value and what to pass instead;
    the CLI maps it to exit code 2."""


class CheckpointNotFoundError(GraphnnError, FileNotFoundError):
    """The path given as a source does not exist."""


class CorruptCheckpointError(GraphnnError, ValueError):
    """The file exists but cannot be read as a checkpoint (truncated, corrupt, wrong format)."""


class UnsafeCheckpointError(GraphnnError):
    """A pickle checkpoint that ``torch.load(weights_only=True)`` refuses.

    Loading it fully would run code stored in the file. Pass ``trust=True`` (CLI:
    ``--trust-checkpoint``) only for files from a source you trust.
    """


class NothingMappableError(GraphnnError, ValueError):
    """No parameter of the source could be mapped to a block; the message lists why."""


class UnsupportedSourceError(GraphnnError, TypeError):
    """The object passed to :func:`graphnn.extract` is not a module, state_dict or path."""


class GraphTooLargeError(GraphnnError, MemoryError):
    """An interop export (networkx, igraph, scipy) was refused because it would be too large."""


class MissingDependencyError(GraphnnError, ImportError):
    """An optional dependency (e.g. python-igraph) is not installed."""


class NonFiniteWeightsWarning(UserWarning):
    """Some weights are NaN or infinite; they are counted in the coverage table."""


class TopologyWarning(UserWarning):
    """The dataflow of a module could not be traced; a fallback ordering was used."""


class NonFiniteWeightsError(GraphnnError, ValueError):
    """An analysis that needs finite weights (eigenvector centrality, hypercores) met NaN/Inf."""


class CheckpointWarning(UserWarning):
    """A checkpoint folder is readable but not clean (e.g. one tensor stored in two shards, or
    shards holding tensors the index does not list); the message says which copy is used."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance; the result is an estimate."""


class DisconnectedGraphWarning(UserWarning):
    """The graph falls apart into components and a whole-graph result (eigenvector centrality)
    is zero on most neurons; ``per_component=True`` gives each component its own vector."""


class RefusedOverwriteError(GraphnnError, FileExistsError):
    """An output path is the input checkpoint (or already exists without ``overwrite=True``)."""
