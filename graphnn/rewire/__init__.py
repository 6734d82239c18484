"""Re-initialisers that rewrite weight tensors in place (like ``torch.nn.init``) or write a new
checkpoint: PA rewiring, strength-variance random search, rank matching and hypercore-guided
re-initialisation."""

from ._targets import rewirable_weights
from .pa import pa_rewire_

__all__ = ["pa_rewire_", "rewirable_weights"]
