"""Command line shared by every ``reports/<study>/run.py``.

``python reports/<study>/run.py``            full study, outputs beside run.py
``python reports/<study>/run.py --quick``    ~1 minute smoke run (few seeds, tiny budget)
``--out DIR``                                write the outputs to DIR instead
``--workers N``                              worker processes (default 2; --quick uses 1)
``--report-only``                            re-render README/HTML/figures from the CSVs in the
                                             output folder without training
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def parse_args(description: str, script_file: str, argv=None, extra=None) -> argparse.Namespace:
    """Parse the common options (``extra(parser)`` may add a study's own)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (about a minute)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the study folder beside run.py)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes, one torch thread each (default 2, --quick: 1)")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-render the README/HTML/figures from the existing CSVs")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = 1 if args.quick else 2
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    args.out = (args.out or Path(script_file).resolve().parent).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    return args
