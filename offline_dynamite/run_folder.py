"""The files every run folder shares: ``run.json`` (what was run and how far it got) and
``metrics.csv`` (one row per logged step). Both are written so that a crash never leaves them
half-written: the record atomically, the metrics one whole line at a time."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import numpy as np

RECORD = "run.json"


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of dynamite-rl and the packages a run depends on."""
    names = ("dynamite-rl", "torch", "numpy", "minari", "gymnasium", *packages)
    return {name: version(name) for name in names}


def read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RECORD
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run folder (no {RECORD})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{path} is corrupted (not JSON)") from None


def update_record(run_dir: Path, **changes: Any) -> dict[str, Any]:
    path = run_dir / RECORD
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(changes)
    partial = path.with_name(RECORD + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, path)
    return record


def append_metrics(path: Path, step: int, row: dict[str, float]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", *row])
        writer.writerow([step, *(f"{value:.6g}" for value in row.values())])


class MetricsWindow:
    """The per-update values since the last log line, and how long they took."""

    def __init__(self) -> None:
        self._rows: list[dict[str, float]] = []
        self._started = time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        self._rows.append(values)

    def close(self) -> tuple[dict[str, float], list[dict[str, float]], float]:
        """(mean of each value, the rows themselves, seconds elapsed); starts a new window."""
        rows, seconds = self._rows, max(time.perf_counter() - self._started, 1e-9)
        self._rows, self._started = [], time.perf_counter()
        return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}, rows, seconds


class Trainer(Protocol):
    """What :func:`train_loop` drives: the belief and the policy trainers."""

    step: int

    def train_step(self) -> dict[str, float]: ...

    def save(self, path: Path) -> None: ...


def train_loop(trainer: Trainer, *, steps: int, log_every: int, checkpoint_every: int, checkpoint: Path,
               metrics: Path, summarise: Callable[[dict[str, float], list[dict[str, float]], float], dict[str, float]],
               on_log: Callable[[int, dict[str, float]], None] | None = None) -> None:
    """Train to ``steps``: every ``log_every`` updates a ``metrics.csv`` row (the window's means,
    completed by ``summarise(means, rows, seconds)``), every ``checkpoint_every`` a checkpoint, and
    one at the end. Ctrl-C saves a checkpoint first, so a resumed run continues from the last
    finished update."""
    window = MetricsWindow()
    try:
        while trainer.step < steps:
            window.add(trainer.train_step())
            if trainer.step % log_every == 0 or trainer.step == steps:
                row = summarise(*window.close())
                append_metrics(metrics, trainer.step, row)
                if on_log is not None:
                    on_log(trainer.step, row)
            if trainer.step % checkpoint_every == 0:
                trainer.save(checkpoint)
    except KeyboardInterrupt:
        trainer.save(checkpoint)
        raise
    trainer.save(checkpoint)
