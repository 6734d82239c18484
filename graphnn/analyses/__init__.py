"""Tensor-native analyses of a :class:`~graphnn.LayeredGraph`: plain functions of a graph that
read the weight blocks directly (no edge list, no networkx).

* :func:`strength`, :func:`strength_variance`, :func:`tensor_strength_variance` (``strength.py``)
* :func:`eigenvector_centrality` (``centrality.py``), :func:`connected_components` (``components.py``)
* :func:`hypercore` (``hypercore.py``)
* :func:`analyse` and :class:`Analysis` (``summary.py``): all of it in one pass over the blocks.
* :func:`null_model` (``null_model.py``): the metrics against shuffled or rewired null copies.
"""

from .centrality import eigenvector_centrality
from .components import connected_components
from .hypercore import hypercore
from .null_model import null_model
from .strength import strength, strength_variance, tensor_strength_variance
from .summary import Analysis, analyse

__all__ = ["Analysis", "analyse", "connected_components", "eigenvector_centrality", "hypercore", "null_model", "strength", "strength_variance",
           "tensor_strength_variance"]
