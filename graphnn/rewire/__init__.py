"""Re-initialisers that rewrite weight tensors in place (like ``torch.nn.init``) or write a new
checkpoint: PA rewiring, strength-variance random search, rank matching and hypercore-guided
re-initialisation."""

from ._targets import rewirable_weights
from .checkpoint import rewire_checkpoint
from .hcore_init import hcore_reinit_
from .inits import init_names
from .pa import pa_rewire_
from .rank_match import rank_match_
from .variance_search import min_strength_variance_search_

__all__ = ["hcore_reinit_", "init_names", "min_strength_variance_search_", "pa_rewire_", "rank_match_",
           "rewirable_weights", "rewire_checkpoint"]
