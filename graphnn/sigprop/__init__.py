"""Signal propagation at initialisation: is a network at the edge of chaos?

* :mod:`.weights`: σ̂_w², σ̂_b² per mapped layer from the weight graph, and the activation after it;
* :mod:`.mean_field`: the length and correlation maps, fixed points, χ₁, ξ_q, ξ_c (Poole et al.
  2016; Schoenholz et al. 2017) by Gauss–Hermite quadrature, closed forms for ReLU and erf;
* :mod:`.empirical`: forward hooks on a live model: q̂, ĉ, excess kurtosis and the
  Hutchinson estimate of the partial-Jacobian norm χ̂₁ between layers;
* :func:`signal_propagation` puts them in one table; :func:`compare` aligns two models (before /
  after a rewiring); :mod:`.report` gives a report section (tidy table and figure).
"""

from .analysis import SignalPropagation, signal_propagation
from .compare import compare
from . import empirical, mean_field, report, weights  # modules (mean_field.mean_field(...) is the theory of one layer)

__all__ = ["signal_propagation", "SignalPropagation", "compare", "mean_field", "weights", "empirical", "report"]
