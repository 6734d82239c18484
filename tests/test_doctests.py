"""The examples in docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["graphnn.graph", "graphnn.extract", "graphnn.analyses.centrality", "graphnn.analyses.components"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
