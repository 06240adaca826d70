"""Run folders of belief fits: create, resume, and train with a progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from offline_dynamite.belief.config import BeliefConfig, belief_config_for, variant_name
from offline_dynamite.belief.trainer import (
    BeliefTrainConfig,
    BeliefTrainer,
    fit,
    load_checkpoint,
    start_run,
)
from offline_dynamite.data import FlatDataset, load_flat, resolve_data_file
from offline_dynamite.run_folder import read_record


def env_short_name(flat: FlatDataset) -> str:
    spec = flat.metadata.get("env_spec")
    env_id = json.loads(spec)["id"] if spec else "unknown-env"
    return env_id.split("/")[-1].rsplit("-v", 1)[0].lower()


def new_belief_run(dataset: str, out: Path, variant: str, *, steps: int | None, batch_size: int, learning_rate: float,
                   seed: int, validation_fraction: float, relabel_fraction: float, threads: int, ablations: dict[str, bool],
                   belief_fields: dict[str, Any]) -> tuple[Path, BeliefTrainer]:
    """``ablations``: DynaMITE's switches (belief_config_for); ``belief_fields``: other BeliefConfig fields."""
    data_file = resolve_data_file(dataset).resolve()  # absolute: --resume may run from another folder
    flat = load_flat(data_file)
    config = belief_config_for(variant, **ablations, **belief_fields)
    train_config = BeliefTrainConfig(steps=steps or BeliefTrainConfig.steps, batch_size=batch_size,
                                     learning_rate=learning_rate, seed=seed, validation_fraction=validation_fraction,
                                     relabel_fraction=relabel_fraction, threads=threads)
    trainer = BeliefTrainer(flat, config, train_config)
    name = variant_name(variant, config)
    run_dir = out / f"{env_short_name(flat)}__belief-{name}__seed{seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    start_run(run_dir, trainer, name, data_file)
    return run_dir, trainer


def resume_belief_run(run_dir: Path, steps: int | None) -> tuple[Path, BeliefTrainer]:
    record = read_record(run_dir)
    state = load_checkpoint(run_dir / "belief.pt")
    train_config = BeliefTrainConfig(**state["train_config"])
    if steps is not None:
        train_config = BeliefTrainConfig(**{**state["train_config"], "steps": steps})
    flat = load_flat(record["dataset"]["file"])
    trainer = BeliefTrainer(flat, BeliefConfig.from_dict(state["belief_config"]), train_config)
    trainer.restore(state)
    return run_dir, trainer


def fit_with_progress(trainer: BeliefTrainer, run_dir: Path, console: Console) -> dict[str, float]:
    columns = (TextColumn("[bold]belief"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[terms]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("belief", total=trainer.train_config.steps, completed=trainer.step, terms="")

        def on_log(step: int, row: dict[str, float]) -> None:
            shown = ("total", "reconstruction", "kl", "consistency", "termination")
            terms = " ".join(f"{key} {row[key]:.3f}" for key in shown if key in row)
            progress.update(task, completed=step,
                            terms=f"{terms} | {row['transitions_per_second']:,.0f} transitions/s")

        return fit(trainer, run_dir, on_log)
