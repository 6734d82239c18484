"""Self-contained HTML reports of graphnn analyses (one file, no network requests).

>>> from graphnn.report import report_file
>>> report_file("model.safetensors", "report.html")          # doctest: +SKIP
"""

from .compare import compare_blocks, compare_layers, compare_layers_long
from .html import render_comparison, render_report, write_html
from .pipeline import Analysed, analyse_file, compare_files, report_file, write_comparison
from .provenance import Provenance, sha256_of

__all__ = [
    "Analysed",
    "Provenance",
    "analyse_file",
    "compare_blocks",
    "compare_files",
    "compare_layers",
    "compare_layers_long",
    "render_comparison",
    "render_report",
    "report_file",
    "sha256_of",
    "write_comparison",
    "write_html",
]
