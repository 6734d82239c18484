"""``LayeredGraph._repr_html_`` and ``Analysis._repr_html_``: well-formed HTML whose text (parsed
back with the standard library's parser) holds the graph's own names, counts and notes, with
hostile names escaped (no tag of theirs survives), long tables cut with a count, and the null
model's rows when computed."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
import torch

import graphnn
from graphnn.html_summary import MAX_ROWS, OPEN_NOTES
from random_graphs import random_mlp

VOID = {"br", "hr", "img", "meta", "link", "input"}


class Parsed(HTMLParser):
    """Tags (checked to nest properly) and the text of an HTML fragment."""

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.stack: list[str] = []
        self.texts: list[str] = []
        self.feed(markup)
        self.close()
        assert not self.stack, f"unclosed tags {self.stack}"

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:] or 'nothing'}"
        self.stack.pop()

    def handle_data(self, data):
        self.texts.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.texts)

    def cells(self) -> list[str]:
        return [t.strip() for t in self.texts if t.strip()]


HOSTILE = '<script>alert("x")</script>'


def _hostile_graph():
    parts = {HOSTILE: 3, **{f"p{i}": 2 for i in range(MAX_ROWS + 3)}}  # first: inside the rows shown
    names = list(parts)
    blocks = {"<b>&amp;</b>": (names[1], HOSTILE, torch.ones(3, 2))}
    blocks.update({f"w{i}": (a, b, torch.ones(parts[b], parts[a])) for i, (a, b) in enumerate(zip(names[:-1], names[1:]))})
    g = graphnn.LayeredGraph.from_matrices(parts, blocks)
    g.notes.extend([f"note {i} <img src=x onerror=alert(1)> & more" for i in range(OPEN_NOTES + 2)])
    return g


def test_graph_summary_is_escaped_and_counts():
    g = _hostile_graph()
    markup = g._repr_html_()
    page = Parsed(markup)
    assert "script" not in page.tags and "img" not in page.tags and "b" in page.tags  # only our own <b>
    assert HOSTILE in page.text and "<b>&amp;</b>" in page.text  # the names read back as written
    for label, value in (("partitions", len(g.partitions)), ("blocks", len(g.blocks)), ("neurons", g.num_nodes),
                         ("edges", g.num_edges)):
        assert f"{label}: {value:,}" in page.text
    assert f"and {len(g.partitions) - MAX_ROWS:,} more partitions" in page.text
    assert f"and {len(g.blocks) - MAX_ROWS:,} more blocks" in page.text
    shown = [c for c in page.cells() if c.startswith("p") and c[1:].isdigit()]
    assert shown == [f"p{i}" for i in range(MAX_ROWS - 1)]  # the hostile partition is row 1
    assert f"{len(g.notes)} notes" in page.text and "details" in page.tags
    assert f"{len(g.notes) - OPEN_NOTES} more notes" in page.text
    for note in g.notes:
        assert note in page.text


def test_graph_summary_of_an_extracted_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    g = graphnn.extract(model)
    page = Parsed(g._repr_html_())
    assert f"mapped: {100 * g.coverage_fraction:.1f} % of entries" in page.text and "more" not in page.text
    cells = page.cells()
    for p in g.partitions.values():
        assert p.name in cells
    assert "4 × 5" in cells and "3 × 4" in cells and "0.weight" in cells


def test_analysis_summary():
    g = random_mlp([6, 5, 4], seed=2)
    a = graphnn.analyse(g)
    page = Parsed(a._repr_html_())
    assert f"layers: {len(a.layers)}" in page.text and f"neurons: {len(a.neurons)}" in page.text
    assert "converged: yes" in page.text and "spectral_norm" in page.cells()
    cells = page.cells()
    for name in a.layers["layer"]:
        assert name in cells
    assert "null model" not in page.text


def test_analysis_summary_shows_the_null_rows_by_largest_z():
    g = random_mlp([6, 5, 4], seed=2)
    a = graphnn.analyse(g, null=9, seed=0)
    if a.null is None or "z" not in a.null:  # pragma: no cover - depends on the null-model code
        pytest.skip("no null model in this analysis")
    page = Parsed(a._repr_html_())
    assert "null model" in page.text and "z" in page.cells()


def test_escaping_of_a_hostile_source_and_topology():
    g = graphnn.LayeredGraph.from_matrices({"a": 2, "b": 2}, {"w": ("a", "b", torch.eye(2))})
    g.source = "</div><script>bad()</script>"
    page = Parsed(g._repr_html_())
    assert "script" not in page.tags and g.source in page.text


def test_one_number_format_for_the_report_the_cli_and_the_summaries():
    import numpy as np
    import pandas as pd

    from graphnn.html_summary import cell, fmt
    from graphnn.report import html as report_html

    assert report_html.fmt is fmt
    # numpy scalars behave as their Python values; every missing value is an en dash
    for missing in (None, pd.NA, float("nan"), np.float32("nan")):
        assert fmt(missing) == "\u2013"
    assert (fmt(np.int64(12345)), fmt(np.float64(1.5)), fmt(np.bool_(False))) == ("12,345", "1.5", "no")
    assert (fmt(1e-5), fmt(123456.0), fmt(float("-inf"))) == ("1.000e-05", "1.235e+05", "-\u221e")
    assert cell("a<b") == "a&lt;b"
