"""Fitting the belief model offline: data split, training loop, metrics, checkpoints, resume.

A run folder holds ``run.json`` (what was run, on what, and whether it finished), ``metrics.csv``
(one row per logged step, train and validation terms), ``belief.pt`` (the latest checkpoint) and,
once finished, ``diagnostics.json``. A checkpoint carries everything needed to continue exactly
where it stopped: weights, optimiser state, step, both random generators and the data split.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from minari.serialization import deserialize_space

from offline_dynamite.belief.config import BeliefConfig
from offline_dynamite.belief.diagnostics import diagnose
from offline_dynamite.belief.model import Batch, BeliefModel, DataSpec, to_tensors
from offline_dynamite.data import FlatDataset, SequenceBatch, sequence_batch
from offline_dynamite.run_folder import train_loop, update_record, versions

CHECKPOINT_FORMAT = "dynamite-rl/belief-checkpoint"
CHECKPOINT_VERSION = 1


class TrainingDiverged(ValueError):
    """A loss turned non-finite: the update is refused, the weights stay as they were."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupted, another format, another dataset)."""


@dataclass(frozen=True)
class BeliefTrainConfig:
    """How the belief model is fitted (the model itself is a :class:`BeliefConfig`)."""

    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    validation_fraction: float = 0.1
    log_every: int = 50
    checkpoint_every: int = 500
    max_grad_norm: float = 10.0
    #: Share of each batch whose rewards are relabelled under another episode's latents (BOReL's
    #: remedy for MDP ambiguity: in offline data the behaviour often reveals the latent, so the
    #: posterior learns to read the behaviour instead of the rewards). Needs the env's reward().
    relabel_fraction: float = 0.5
    #: Torch CPU threads. One makes runs bit-for-bit reproducible: with more, MKL splits the
    #: reductions of large matrix products differently from run to run (last-bit differences).
    threads: int = 1

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.log_every, self.checkpoint_every, self.threads) < 1:
            raise ValueError("steps, batch_size, log_every, checkpoint_every and threads must be positive")
        if not 0.0 <= self.relabel_fraction <= 1.0:
            raise ValueError(f"relabel_fraction must be in [0, 1], got {self.relabel_fraction}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


def data_spec(flat: FlatDataset) -> DataSpec:
    observation_space = deserialize_space(flat.metadata["observation_space"])
    action_space = deserialize_space(flat.metadata["action_space"])
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"the belief model needs flat Box observations, the dataset has {observation_space}")
    if isinstance(action_space, gym.spaces.Discrete):
        return DataSpec(observation_space.shape[0], int(action_space.n), True)
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return DataSpec(observation_space.shape[0], action_space.shape[0], False)
    raise ValueError(f"the belief model needs Discrete or flat Box actions, the dataset has {action_space}")


def check_trainable(flat: FlatDataset, config: BeliefConfig) -> None:
    """Refuse, with one line, datasets the configuration cannot learn from."""
    needs = config.needs_session_labels
    if needs and not flat.has_session_labels:
        raise ValueError(
            f"dataset {flat.dataset_id} has no session labels (infos latent, session_id, session_start), "
            f"which {', '.join(needs)} need: train the varibad variant, or collect the data with dynamite-collect"
        )
    for field, values in flat.fields().items():
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise ValueError(f"dataset {flat.dataset_id} has non-finite values in {field}: run dynamite-collect validate")


def reward_function_of(flat: FlatDataset, flag: str = "--relabel-fraction"):
    """The vectorised ``reward(obs, action, next_obs, latent)`` of the dataset's env (``flag``: the
    option that turns the relabelling which needs it off, named in the error)."""
    spec = flat.metadata.get("env_spec")
    try:
        env = gym.make(gym.envs.registration.EnvSpec.from_json(spec)).unwrapped
        return env.reward
    except (TypeError, ValueError, AttributeError, ImportError, gym.error.Error) as error:
        raise ValueError(f"reward relabelling needs the dataset's env and its reward() ({error}): "
                         f"pass {flag} 0") from None


def relabel_rewards(sequences: SequenceBatch, reward, fraction: float, rng: np.random.Generator) -> SequenceBatch:
    """Give a share of the rows the latents (and sessions) of other rows, with the rewards that
    the env's reward function assigns to their transitions under those latents.

    Rows only trade with rows of the same length, so every relabelled step is a real step.
    """
    chosen = np.flatnonzero(rng.random(len(sequences.lengths)) < fraction)
    donors = chosen.copy()
    for length in np.unique(sequences.lengths[chosen]):
        same = chosen[sequences.lengths[chosen] == length]
        donors[np.isin(chosen, same)] = rng.permutation(same)
    if len(chosen) == 0:
        return sequences
    latents, session_ids, session_starts = (a.copy() for a in (sequences.latents, sequences.session_ids, sequences.session_starts))
    latents[chosen], session_ids[chosen], session_starts[chosen] = latents[donors], session_ids[donors], session_starts[donors]
    rewards = sequences.rewards.copy()
    observations = sequences.observations[chosen]
    rewards[chosen] = reward(observations[:, :-1], sequences.actions[chosen], observations[:, 1:], latents[chosen, :-1])
    return dataclasses.replace(sequences, rewards=rewards, latents=latents, session_ids=session_ids,
                               session_starts=session_starts)


def session_rewards(sequences: SequenceBatch, reward) -> np.ndarray:
    """``[B, K, T]``: the reward of every transition of each row under the latent of each of the
    row's sessions (``K``: the most sessions in a row). Entries of sessions a row does not have are
    zero and never read."""
    first_observation = sequences.session_ids[:, :-1]  # the session each transition starts in
    count = int(first_observation.max()) + 1
    observations = sequences.observations
    rewards = np.zeros((len(sequences.lengths), count, sequences.actions.shape[1]), dtype=sequences.rewards.dtype)
    for session in range(count):
        # The latent of session k, from the first transition of each row that is in it.
        has = (first_observation == session).any(axis=1)
        first = np.argmax(first_observation == session, axis=1)
        latents = sequences.latents[np.arange(len(first)), first][:, None]
        latents = np.broadcast_to(latents, (*first_observation.shape, latents.shape[-1]))
        values = reward(observations[:, :-1], sequences.actions, observations[:, 1:], latents)
        rewards[has, session] = np.asarray(values)[has]
    return rewards


def split_episodes(num_episodes: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) episode indices, a seeded split by episode."""
    order = np.random.default_rng([seed, 3]).permutation(num_episodes)
    held_out = int(round(fraction * num_episodes)) if num_episodes > 1 else 0
    held_out = min(max(held_out, 1 if fraction > 0 and num_episodes > 1 else 0), num_episodes - 1)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


class BeliefTrainer:
    """Owns the model, the optimiser and the random state of one fit."""

    def __init__(self, flat: FlatDataset, config: BeliefConfig, train_config: BeliefTrainConfig,
                 dataset_hash: str | None = None) -> None:
        check_trainable(flat, config)
        self.flat, self.config, self.train_config = flat, config, train_config
        self.dataset_hash = dataset_hash or flat.content_hasher().hexdigest()
        self.train_episodes, self.validation_episodes = split_episodes(
            flat.num_episodes, train_config.validation_fraction, train_config.seed)
        torch.set_num_threads(train_config.threads)
        torch.manual_seed(train_config.seed)
        self.model = BeliefModel(config, data_spec(flat))
        self._fit_normalisation()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_config.learning_rate)
        self.rng = np.random.default_rng([train_config.seed, 4])
        self.step = 0
        self.reward_function = None
        if train_config.relabel_fraction > 0:
            if not flat.has_session_labels:
                raise ValueError(f"reward relabelling needs the dataset's latents, and {flat.dataset_id} has no session "
                                 "labels: pass --relabel-fraction 0")
            self.reward_function = reward_function_of(flat)
        if config.counterfactual_reconstruction and self.reward_function is None:
            self.reward_function = reward_function_of(flat, flag="--no-counterfactual-reconstruction")

    def _fit_normalisation(self) -> None:
        in_train = np.isin(self.flat.episode_index(), self.train_episodes)
        observations = self.flat.observations[self.flat.observation_rows()[in_train]]
        rewards = self.flat.rewards[in_train]
        self.model.set_normalisation(observations.mean(0), observations.std(0), max(float(rewards.std()), 1e-3))

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, float]:
        self.model.train()
        size = min(self.train_config.batch_size, len(self.train_episodes))
        episodes = self.rng.choice(self.train_episodes, size=size, replace=False)
        sequences = sequence_batch(self.flat, episodes)
        if self.train_config.relabel_fraction > 0:
            sequences = relabel_rewards(sequences, self.reward_function, self.train_config.relabel_fraction, self.rng)
        terms = self.model.loss(self.tensors(sequences))
        if not torch.isfinite(terms["total"]):
            raise TrainingDiverged(f"belief training diverged (non-finite loss) at step {self.step + 1}: "
                                   "lower --lr; the last checkpoint in the run folder is intact")
        self.optimizer.zero_grad()
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_config.max_grad_norm)
        self.optimizer.step()
        self.step += 1
        return {key: float(value.detach()) for key, value in terms.items()} | {
            "transitions": float(self.flat.episode_lengths[episodes].sum())}

    def tensors(self, sequences: SequenceBatch) -> Batch:
        """The batch the loss reads, with the session rewards if the reconstruction needs them."""
        batch = to_tensors(sequences)
        if self.config.counterfactual_reconstruction:
            batch.session_rewards = torch.from_numpy(session_rewards(sequences, self.reward_function))
        return batch

    @torch.no_grad()
    def validation_terms(self, max_episodes: int = 256) -> dict[str, float]:
        if len(self.validation_episodes) == 0:
            return {}
        self.model.eval()
        state = torch.get_rng_state()  # validation sampling must not shift the training stream
        torch.manual_seed(0)
        terms = self.model.loss(self.tensors(sequence_batch(self.flat, self.validation_episodes[:max_episodes])))
        torch.set_rng_state(state)
        return {key: float(value) for key, value in terms.items()}

    def diagnostics(self) -> dict[str, float]:
        held_out = self.validation_episodes if len(self.validation_episodes) else self.train_episodes
        return diagnose(self.model, self.flat, self.train_episodes, held_out, seed=self.train_config.seed)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "belief_config": self.config.to_dict(),
            "train_config": asdict(self.train_config),
            "data_spec": asdict(self.model.spec),
            "dataset": {"id": self.flat.dataset_id, "sha256": self.dataset_hash},
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "validation_episodes": self.validation_episodes.tolist(),
            "versions": versions(),
        }

    def save(self, path: Path) -> None:
        """Write atomically: a crash mid-save never leaves a truncated checkpoint."""
        partial = path.with_name(path.name + ".partial")
        torch.save(self.checkpoint(), partial)
        os.replace(partial, path)

    def restore(self, state: dict[str, Any]) -> None:
        if state["dataset"]["sha256"] != self.dataset_hash:
            raise CheckpointError(
                f"the checkpoint was trained on dataset {state['dataset']['id']} with another content "
                "hash: resume it on the same dataset"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A belief checkpoint's contents, or one clear :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupted or not a torch file ({type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a dynamite-rl belief checkpoint")
    return state


def model_from_checkpoint(state: dict[str, Any]) -> BeliefModel:
    model = BeliefModel(BeliefConfig.from_dict(state["belief_config"]), DataSpec(**state["data_spec"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model


# ---------------------------------------------------------------------------- run folders
def fit(trainer: BeliefTrainer, run_dir: Path, on_log: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """Train to ``steps``, logging and checkpointing into ``run_dir``; returns the diagnostics.

    Ctrl-C saves a checkpoint first, so ``--resume`` continues from the last finished step.
    """
    config = trainer.train_config

    def summarise(row: dict[str, float], rows: list[dict[str, float]], seconds: float) -> dict[str, float]:
        row["transitions_per_second"] = row.pop("transitions") * len(rows) / seconds
        return row | {f"validation_{key}": value for key, value in trainer.validation_terms().items()}

    update_record(run_dir, status="running")
    try:
        train_loop(trainer, steps=config.steps, log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                   checkpoint=run_dir / "belief.pt", metrics=run_dir / "metrics.csv", summarise=summarise, on_log=on_log)
    except KeyboardInterrupt:
        update_record(run_dir, status="interrupted", step=trainer.step)
        raise
    except TrainingDiverged:
        update_record(run_dir, status="failed", step=trainer.step)
        raise
    diagnostics = trainer.diagnostics()
    (run_dir / "diagnostics.json").write_text(json.dumps(diagnostics, indent=2) + "\n")
    update_record(run_dir, status="complete", step=trainer.step)
    return diagnostics


def start_run(run_dir: Path, trainer: BeliefTrainer, variant: str, dataset_file: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=False)
    update_record(
        run_dir,
        kind="belief",
        variant=variant,
        status="starting",
        step=0,
        dataset={"id": trainer.flat.dataset_id, "sha256": trainer.dataset_hash, "file": str(dataset_file)},
        belief_config=trainer.config.to_dict(),
        train_config=asdict(trainer.train_config),
        versions=versions(),
    )
