"""One-line definitions of every metric the report shows, with its sign and normalisation.

The report prints these next to the tables and figures, so a reader never has to guess what a
number means. Keys are the column stems of :class:`graphnn.Analysis` tables.
"""

from __future__ import annotations

#: metric stem -> (plain name, definition, sign / normalisation convention)
METRICS: dict[str, tuple[str, str, str]] = {
    "in_strength": (
        "in-strength",
        "Sum of the weights of the edges entering a neuron (row sums over every block into its layer).",
        "Signed raw weights; conv edges are kernel aggregates (see 'conv aggregation').",
    ),
    "out_strength": (
        "out-strength",
        "Sum of the weights of the edges leaving a neuron (column sums over every block out of its layer).",
        "Signed raw weights.",
    ),
    "strength": (
        "strength",
        "Total weighted degree of a neuron: in-strength + out-strength.",
        "Signed; input neurons have no in-edges and output neurons no out-edges.",
    ),
    "abs_strength": (
        "|strength|",
        "Total weighted degree computed on absolute weights: sum of |w| over all edges of a neuron.",
        "Non-negative.",
    ),
    "strength_var": (
        "strength variance",
        "Variance of the neurons' total strength within one layer (how unevenly strength is spread).",
        "Unbiased (n - 1) variance of signed strength; lower means more balanced neurons.",
    ),
    "J": (
        "J (tensor strength variance)",
        "Per weight tensor flattened to (n_out, numel / n_out): J = (Var of row sums + Var of column sums) / 2, "
        "as in Scabini et al.'s PA rewiring.",
        "Signed raw weights, unbiased variances; conv columns are (input channel, kernel position) entries.",
    ),
    "centrality": (
        "eigenvector centrality",
        "Leading eigenvector of the undirected adjacency of the whole network (largest algebraic eigenvalue): "
        "a neuron is central when it is strongly connected to central neurons.",
        "Computed on |w| (Perron-Frobenius needs non-negative weights); non-negative; normalised as the "
        "analysis options state (l2: unit Euclidean norm, max: largest value 1).",
    ),
    "core": (
        "k-hypercore number",
        "Largest k such that the neuron belongs to the maximal set in which every neuron's summed |w| to "
        "other members is at least k (weighted generalised core, graphnn's definition).",
        "In units of |w| (a strength); non-negative; higher means deeper in the densely, strongly wired core.",
    ),
    "spectral_norm": (
        "spectral norm",
        "Largest singular value ||W||_2 of a block's signed (n_dst, n_src) matrix (aggregation applied).",
        "Non-negative; same units as the weights.",
    ),
    "stable_rank": (
        "stable rank",
        "||W||_F^2 / ||W||_2^2 of a block's matrix: how many directions carry its energy.",
        "Between 1 (rank one) and the matrix rank; scale-free.",
    ),
    "frobenius_norm": (
        "Frobenius norm",
        "||W||_F = sqrt(sum of squared weights) of a block's matrix.",
        "Non-negative.",
    ),
    "ww_alpha": (
        "WeightWatcher alpha",
        "Power-law exponent of the layer's empirical spectral density, as fitted by the weightwatcher package.",
        "Joined by layer name; computed by weightwatcher itself, not re-implemented here.",
    ),
    "mean_abs_weight": (
        "mean |w|",
        "Mean absolute edge weight of a block.",
        "Non-negative; structural (zero-valued) edges count.",
    ),
}

#: How a convolution kernel slice W[i, j, ...] becomes one channel-level edge weight.
CONV_AGGREGATION: dict[str, str] = {
    "l2": "Euclidean norm of the kernel slice (non-negative).",
    "l1": "Sum of absolute values of the kernel slice (non-negative).",
    "sum": "Signed sum of the kernel slice.",
}

#: Statistic suffixes of per-layer columns (``<metric>_<stat>``).
STATS: dict[str, str] = {
    "mean": "mean over the layer's neurons",
    "std": "standard deviation (unbiased)",
    "var": "variance (unbiased)",
    "cv": "coefficient of variation std / |mean|",
    "min": "minimum",
    "max": "maximum",
    "median": "median",
}


def describe_column(column: str) -> str:
    """A one-line explanation of a table column such as ``strength_var`` or ``core_max``."""
    if column in METRICS:
        name, definition, _ = METRICS[column]
        return f"{name}: {definition}"
    stem, _, stat = column.rpartition("_")
    if stem in METRICS and stat in STATS:
        return f"{STATS[stat]} of {METRICS[stem][0]}"
    return column
