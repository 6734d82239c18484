"""Command line shared by every ``reports/<study>/run.py``, and where its outputs go.

``python reports/<study>/run.py``            full study; outputs beside run.py (the committed results)
``python reports/<study>/run.py --quick``    ~1 minute smoke run into a fresh temporary folder,
                                             whose path is printed; never beside run.py
``--out DIR``                                write the outputs to DIR instead (any mode)
``--workers N``                              worker processes (default 2; --quick uses 1)
``--report-only``                            re-render README/HTML/figures from the CSVs in the
                                             output folder without training (beside run.py
                                             unless --out is given: the committed full results)

The committed results beside run.py are written only by a full run (or re-rendered by
``--report-only`` from their own CSVs); a smoke run that asks for that folder is refused.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def study_folder(script_file: str) -> Path:
    """The folder of a study's ``run.py``: where its committed full results live."""
    return Path(script_file).resolve().parent


def output_folder(study: Path, out: Path | None, smoke: bool) -> Path:
    """Where a run writes: ``out`` when given; otherwise the study folder for the full study,
    and a fresh temporary folder (``graphnn-<study>-quick-*`` under the system temp folder,
    ``$TMPDIR`` when set) for a smoke run. A smoke run into the study folder is refused with
    ``ValueError``: it would replace the committed full results."""
    if out is not None:
        out = out.expanduser().resolve()
        if smoke and out == study.resolve():
            raise ValueError(f"--quick would replace the committed full results in {out}; "
                             f"give --out another folder, or omit --out for a temporary one")
        return out
    if smoke:
        return Path(tempfile.mkdtemp(prefix=f"graphnn-{study.name}-quick-")).resolve()
    return study.resolve()


def parse_args(description: str, script_file: str, argv=None, extra=None) -> argparse.Namespace:
    """Parse the common options (``extra(parser)`` may add a study's own) and choose
    ``args.out`` with :func:`output_folder` (created; printed to stdout for a smoke run)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run (about a minute) into a fresh temporary folder, printed "
                             "(or --out DIR); never over the committed results beside run.py")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: beside run.py for the full study, a new "
                             "temporary folder for --quick)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes, one torch thread each (default 2, --quick: 1)")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-render the README/HTML/figures from the CSVs already in the "
                             "output folder (default: beside run.py)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = 1 if args.quick else 2
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    rerender = [flag for flag, on in (("--report-only", args.report_only),
                                      ("--cv-only", getattr(args, "cv_only", False))) if on]
    if args.quick and rerender and args.out is None:
        parser.error(f"{rerender[0]} reads the CSVs of an earlier run: with --quick, pass the folder "
                     f"that the --quick run printed as --out DIR")
    study = study_folder(script_file)
    try:
        args.out = output_folder(study, args.out, smoke=args.quick and not rerender)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick and not rerender:
        print(f"[{study.name}] --quick outputs go to {args.out} (the committed results beside "
              f"run.py are left alone)", flush=True)
    return args


def run_study(doc: str, script_file: str, argv, experiment, protocol, write_report) -> None:
    """The ``main()`` of a study: parse the common options, run ``experiment(args,
    protocol(quick))`` unless ``--report-only``, write the report into the output folder and say
    where it is."""
    args = parse_args(doc.splitlines()[0], script_file, argv)
    if not args.report_only:
        experiment(args, protocol(args.quick))
    write_report(args.out)
    finished(args)


def finished(args: argparse.Namespace) -> None:
    """Say where the report is (stdout), once a run is done."""
    print(f"report: {args.out / 'README.md'}", file=sys.stdout, flush=True)
