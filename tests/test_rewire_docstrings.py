"""The docstring examples of graphnn.rewire run and print what they say."""

import doctest
import importlib

import pytest
import torch

torch.set_num_threads(1)

MODULES = ["graphnn.rewire._targets", "graphnn.rewire.pa", "graphnn.rewire.variance_search",
           "graphnn.rewire.rank_match", "graphnn.rewire.hcore_init", "graphnn.rewire.inits",
           "graphnn.extract.selection"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name.endswith("hcore_init"):
            pytest.importorskip("sklearn")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
