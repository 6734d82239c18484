"""Matplotlib set-up for the study figures (non-interactive backend, fixed style, PNG at 120 dpi)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402,F401  (re-exported for the studies)

from . import outputs  # noqa: E402

plt.rcParams.update({"figure.dpi": 120, "savefig.dpi": 120, "font.size": 9,
                     "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "graphnn"})


def save(fig, path: Path) -> Path:
    """Save ``fig`` as a PNG (no timestamp metadata, so reruns give identical files; written
    atomically) and close it."""
    fig.tight_layout()
    try:
        outputs.replace_atomically(Path(path), lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    finally:
        plt.close(fig)
    return Path(path)
