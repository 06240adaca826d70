"""The console scripts: import a command line, then run it.

A command line imports torch, d3rlpy and MuJoCo first, which takes about two seconds. A Ctrl-C in
that window used to end in a Python traceback; here it ends as an interrupt before any work does:
one line and exit 130.
"""

from __future__ import annotations

import importlib
import sys


def launch(module: str) -> None:
    """Run the typer ``app`` of ``module``."""
    try:
        app = importlib.import_module(module).app
    except KeyboardInterrupt:
        print("error: interrupted before the command started: nothing was done", file=sys.stderr)
        raise SystemExit(130) from None
    app()


def offline() -> None:
    launch("offline_dynamite.cli")


def collect() -> None:
    launch("collect.cli")


def evaluate() -> None:
    launch("evaluation.cli")


def experiment() -> None:
    launch("evaluation.experiment")
