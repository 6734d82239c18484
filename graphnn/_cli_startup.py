"""Ctrl-C while the ``graphnn`` command starts up: one line on stderr and exit 130, no traceback.

The package import is lazy (torch and pandas come with the first command body that needs them,
after :func:`graphnn.cli.main` has installed its handlers), but the interpreter, typer and the
command line still load before that handling is in place. ``graphnn/__init__.py`` imports this
module first; :func:`guard` acts only when this
process *is* the command (the ``graphnn`` console script or ``python -m graphnn``), so the signal
handling of programs that import graphnn as a library is never touched. ``graphnn.cli.main``
replaces the handler as soon as it runs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

#: The line printed on an interrupt (also used by :mod:`graphnn.cli`).
INTERRUPTED_LINE = b"graphnn: interrupted\n"
EXIT_INTERRUPTED = 130


def is_cli_process() -> bool:
    """Whether this interpreter runs the ``graphnn`` command."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name in ("graphnn", "graphnn.exe", "graphnn-script.py"):
        return True
    orig = list(getattr(sys, "orig_argv", []) or [])
    for i, arg in enumerate(orig[1:], start=1):
        if arg == "-m":
            return i + 1 < len(orig) and orig[i + 1] == "graphnn"
        if arg.startswith("-m"):
            return arg == "-mgraphnn"
        if arg == "-c" or not arg.startswith("-"):  # a script or -c: not the command
            return False
    return False


def _exit_now(signum, frame) -> None:  # pragma: no cover - runs in a subprocess
    os.write(2, INTERRUPTED_LINE)
    os._exit(EXIT_INTERRUPTED)


def guard() -> None:
    """Install the start-up interrupt handler, for the command only (see the module docstring)."""
    if not is_cli_process() or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # someone chose a handler (or SIGINT is ignored): keep it
    signal.signal(signal.SIGINT, _exit_now)
