"""Train run folders: the three stages (belief, relabel, policy) behind one resumable folder.

``runs/<env>__<variant>__<algo>__seed<k>__<time>/`` holds

- ``run.json``: what was run (variant, configurations, dataset id, file and content hash, env
  spec and reference scores, versions), the stage reached, its status and the seconds per stage;
- ``belief/``: the belief model, a complete belief run folder when it was fitted here
  (``dynamite-offline belief``'s layout), or a copy of the checkpoint given with ``--belief``;
- ``metrics.csv``: the policy's losses and updates/s; ``policy_checkpoint.pt``: where to resume;
- ``policy.d3``: the trained d3rlpy policy, once the run is complete.

Everything a run needs is checked before its folder is made, so bad input leaves no folder, and
a folder whose ``status`` is not ``complete`` never passes for a finished one.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from minari.serialization import deserialize_space
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from offline_dynamite.belief.config import BeliefConfig, variant_name
from offline_dynamite.belief.model import BeliefModel
from offline_dynamite.belief.runs import env_short_name, fit_with_progress, resume_belief_run
from offline_dynamite.belief.trainer import (
    BeliefTrainConfig,
    BeliefTrainer,
    data_spec,
    load_checkpoint,
    model_from_checkpoint,
    reward_function_of,
    start_run,
)
from offline_dynamite.data import FlatDataset, load_flat, resolve_data_file
from offline_dynamite.run_folder import read_record, update_record, versions
from offline_dynamite.train import hyperstates
from offline_dynamite.train.algos import choose_algo
from offline_dynamite.train.config import (
    PolicyTrainConfig,
    belief_config_of_variant,
    variant_of_belief,
)
from offline_dynamite.train.trainer import CHECKPOINT, PolicyTrainer, fit_policy

BELIEF_DIR = "belief"
BELIEF_CHECKPOINT = "belief.pt"
ABLATIONS = ("consistency", "latent_conditioning", "session_masking")


@dataclass
class TrainRun:
    """A run folder and what its remaining stages need."""

    run_dir: Path
    flat: FlatDataset
    variant: str  # the base variant: dynamite, varibad, no-belief or oracle
    policy_config: PolicyTrainConfig
    belief_trainer: BeliefTrainer | None  # a belief to fit or finish here; None if given or not needed

    @property
    def action_space(self) -> gym.spaces.Space:
        return deserialize_space(self.flat.metadata["action_space"])


def new_train_run(dataset: str, out: Path, *, variant: str | None, ablations: dict[str, bool], belief_fields: dict[str, Any],
                  belief: Path | None, belief_train_config: BeliefTrainConfig,
                  policy_config: PolicyTrainConfig) -> TrainRun:
    """Check everything, then make the run folder (nothing is written if a check fails).

    ``ablations`` are DynaMITE's switches, ``belief_fields`` other fields of the BeliefConfig to fit.
    """
    data_file = resolve_data_file(dataset).resolve()  # absolute: --resume may run from another folder
    flat = load_flat(data_file)
    action_space = deserialize_space(flat.metadata["action_space"]) if "action_space" in flat.metadata else None
    if action_space is None:
        raise ValueError(f"dataset {data_file} has no action_space in its metadata.json: is it a Minari dataset?")
    policy_config = dataclasses.replace(policy_config, algo=choose_algo(policy_config.algo, action_space))

    belief_state = belief_trainer = None
    if belief is not None:
        defaults = BeliefConfig()
        if not all(ablations.values()) or any(getattr(defaults, key) != value for key, value in belief_fields.items()):
            raise ValueError("the ablation flags and the belief model's options choose the belief model to fit; "
                             "--belief gives a trained one")
        belief_state = load_checkpoint(_belief_checkpoint_in(belief))
        belief_config = BeliefConfig.from_dict(belief_state["belief_config"])
        base = variant_of_belief(belief_config)
        if variant is not None and variant != base:
            raise ValueError(f"--belief {belief} is a {base} belief model, not {variant}")
        variant = base
        if data_spec(flat) != model_from_checkpoint(belief_state).spec:
            raise ValueError(f"--belief {belief} models other observations or actions than dataset {flat.dataset_id}")
    else:
        variant = variant or "dynamite"
        belief_config = belief_config_of_variant(variant, **ablations, **belief_fields)
        if belief_config is not None:
            belief_trainer = BeliefTrainer(flat, belief_config, belief_train_config)
    if variant == "oracle" and not flat.has_session_labels:
        raise ValueError(f"the oracle variant appends the true latent, and dataset {flat.dataset_id} has no session "
                         "labels (infos latent): collect it with dynamite-collect")
    if policy_config.relabel_fraction > 0:
        if not flat.has_session_labels:
            raise ValueError(f"policy relabelling needs the dataset's latents, and {flat.dataset_id} has none: "
                             "pass --policy-relabel-fraction 0")
        reward_function_of(flat, flag="--policy-relabel-fraction")

    name = variant_name(variant, belief_config) if belief_config is not None else variant
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out / f"{env_short_name(flat)}__{name}__{policy_config.algo}__seed{policy_config.seed}__{stamp}"
    run_dir.mkdir(parents=True, exist_ok=False)
    dataset_hash = belief_trainer.dataset_hash if belief_trainer else flat.content_hasher().hexdigest()
    update_record(
        run_dir,
        kind="train",
        variant=name,
        base_variant=variant,
        algo=policy_config.algo,
        status="starting",
        stage="belief",
        dataset={"id": flat.dataset_id, "sha256": dataset_hash, "file": str(data_file)},
        env_spec=flat.metadata.get("env_spec"),
        action_space=flat.metadata["action_space"],
        ref_min_score=flat.metadata.get("ref_min_score"),
        ref_max_score=flat.metadata.get("ref_max_score"),
        belief=None if belief_config is None else {
            "source": str(belief) if belief is not None else "fitted",
            "config": belief_config.to_dict(),
            "train_config": belief_state["train_config"] if belief_state else asdict(belief_train_config),
            "dataset": belief_state["dataset"] if belief_state else {"id": flat.dataset_id, "sha256": dataset_hash},
        },
        policy_config=asdict(policy_config),
        timings={},
        versions=versions("d3rlpy"),
    )
    if belief is not None:
        (run_dir / BELIEF_DIR).mkdir()
        shutil.copyfile(_belief_checkpoint_in(belief), run_dir / BELIEF_DIR / BELIEF_CHECKPOINT)
    elif belief_trainer is not None:
        start_run(run_dir / BELIEF_DIR, belief_trainer, name, data_file)
    return TrainRun(run_dir, flat, variant, policy_config, belief_trainer)


def resume_train_run(run_dir: Path, steps: int | None) -> TrainRun:
    """The run in ``run_dir``, ready to continue where it stopped (``steps``: a new policy budget)."""
    record = read_record(run_dir)
    if record.get("kind") != "train":
        raise ValueError(f"{run_dir} is not a train run folder (it is a {record.get('kind', 'unknown')} run)")
    policy_config = PolicyTrainConfig(**record["policy_config"])
    if steps is not None:
        policy_config = dataclasses.replace(policy_config, steps=steps)
        update_record(run_dir, policy_config=asdict(policy_config))
    flat = load_flat(record["dataset"]["file"])
    dataset_hash = flat.content_hasher().hexdigest()
    if dataset_hash != record["dataset"]["sha256"]:
        raise ValueError(f"dataset {record['dataset']['file']} changed since the run started: resume on the same data")
    belief_trainer = None
    belief_dir = run_dir / BELIEF_DIR
    if (belief_dir / "run.json").is_file() and read_record(belief_dir)["status"] != "complete":
        if (belief_dir / BELIEF_CHECKPOINT).is_file():
            belief_trainer = resume_belief_run(belief_dir, None)[1]
        else:  # stopped before its first checkpoint: start the belief again
            belief = record["belief"]
            belief_trainer = BeliefTrainer(flat, BeliefConfig.from_dict(belief["config"]),
                                           BeliefTrainConfig(**belief["train_config"]), dataset_hash)
    return TrainRun(run_dir, flat, record["base_variant"], policy_config, belief_trainer)


def _belief_checkpoint_in(path: Path) -> Path:
    """A belief checkpoint, or the one inside a belief or train run folder."""
    for candidate in (path, path / BELIEF_CHECKPOINT, path / BELIEF_DIR / BELIEF_CHECKPOINT):
        if candidate.is_file():
            return candidate
    raise ValueError(f"--belief {path}: no belief checkpoint there (a belief.pt, or a run folder holding one)")


# ---------------------------------------------------------------------------- stages
def execute(run: TrainRun, console: Console) -> dict[str, Any]:
    """Run the remaining stages; returns the final record. Ctrl-C leaves a resumable folder."""
    run_dir = run.run_dir
    update_record(run_dir, status="running")
    try:
        model = _belief_stage(run, console)
        update_record(run_dir, stage="relabel")
        started = time.perf_counter()
        states, flat = _relabel_stage(run, model)
        space = run.action_space
        sampler = hyperstates.TransitionSampler(flat, states, int(space.start) if hasattr(space, "n") else None)
        _add_time(run_dir, "relabel_s", time.perf_counter() - started)
        update_record(run_dir, stage="policy", hyper_state=_layout(run, model))
        started = time.perf_counter()
        trainer = PolicyTrainer(sampler, space, run.policy_config)
        if (run_dir / CHECKPOINT).is_file():
            trainer.restore(run_dir / CHECKPOINT)
        try:
            _fit_with_progress(trainer, run_dir, console)
        finally:
            _add_time(run_dir, "policy_s", time.perf_counter() - started)
            update_record(run_dir, step=trainer.step)
    except KeyboardInterrupt:
        update_record(run_dir, status="interrupted")
        raise
    except Exception as error:
        update_record(run_dir, status="failed", error=f"{type(error).__name__}: {error}")
        raise
    return update_record(run_dir, status="complete", stage="done")


def _belief_stage(run: TrainRun, console: Console) -> BeliefModel | None:
    belief_dir = run.run_dir / BELIEF_DIR
    if run.belief_trainer is not None:
        started = time.perf_counter()
        try:
            fit_with_progress(run.belief_trainer, belief_dir, console)
        finally:
            _add_time(run.run_dir, "belief_s", time.perf_counter() - started)
    if not (belief_dir / BELIEF_CHECKPOINT).is_file():
        return None
    return model_from_checkpoint(load_checkpoint(belief_dir / BELIEF_CHECKPOINT))


def _relabel_stage(run: TrainRun, model: BeliefModel | None) -> tuple[np.ndarray, FlatDataset]:
    flat = run.flat
    config = run.policy_config
    if config.relabel_fraction > 0:
        reward = reward_function_of(flat, flag="--policy-relabel-fraction")
        flat = hyperstates.add_relabelled_episodes(flat, config.relabel_fraction, reward,
                                                   np.random.default_rng([config.seed, 6]))
    return hyperstates.hyper_states(flat, run.variant, model), flat


def _fit_with_progress(trainer: PolicyTrainer, run_dir: Path, console: Console) -> None:
    columns = (TextColumn(f"[bold]{trainer.config.algo}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[terms]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("policy", total=trainer.config.steps, completed=trainer.step, terms="")

        def on_log(step: int, row: dict[str, float]) -> None:
            terms = " ".join(f"{key} {value:.3f}" for key, value in row.items() if key != "updates_per_second")
            progress.update(task, completed=step, terms=f"{terms} | {row['updates_per_second']:,.0f} updates/s")

        fit_policy(trainer, run_dir, on_log)


def _layout(run: TrainRun, model: BeliefModel | None) -> list[list[Any]]:
    """The hyper-state's parts and their sizes, in order."""
    parts = [["observation", int(np.prod(run.flat.observations.shape[1:]))]]
    if run.variant == "oracle":
        parts.append(["latent", int(run.flat.infos["latent"].shape[1])])
    elif model is not None:
        parts += model.latent.feature_names()
    return parts


def _add_time(run_dir: Path, stage: str, seconds: float) -> None:
    timings = read_record(run_dir).get("timings", {})
    timings[stage] = round(timings.get(stage, 0.0) + seconds, 3)
    update_record(run_dir, timings=timings)

