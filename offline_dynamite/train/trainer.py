"""Training a d3rlpy algorithm on hyper-states: the update loop, metrics and exact checkpoints.

d3rlpy's own ``fit`` samples with the global numpy generator, logs into its own folders and has
no way to continue a run exactly; this loop calls the same ``algo.update`` on batches from a
seeded :class:`~offline_dynamite.train.hyperstates.TransitionSampler`, and a checkpoint carries
the networks, the optimisers, the update count and both random generators.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from offline_dynamite.belief.trainer import TrainingDiverged
from offline_dynamite.run_folder import train_loop
from offline_dynamite.train.algos import build_algo
from offline_dynamite.train.config import PolicyTrainConfig
from offline_dynamite.train.hyperstates import TransitionSampler

CHECKPOINT_FORMAT = "dynamite-rl/policy-checkpoint"
CHECKPOINT = "policy_checkpoint.pt"
POLICY = "policy.d3"
METRICS = "metrics.csv"


class PolicyTrainer:
    """Owns the d3rlpy algorithm, the sampler and the random state of one policy fit."""

    def __init__(self, sampler: TransitionSampler, action_space: gym.spaces.Space, config: PolicyTrainConfig) -> None:
        self.sampler, self.config = sampler, config
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)  # the networks' initialisation
        states = sampler.states
        self.algo = build_algo(config.algo, action_space, states.mean(0), states.std(0), config.batch_size)
        self.rng = np.random.default_rng([config.seed, 5])
        self.step = 0

    def train_step(self) -> dict[str, float]:
        losses = self.algo.update(self.sampler.sample(self.config.batch_size, self.rng))
        if not all(np.isfinite(value) for value in losses.values()):
            raise TrainingDiverged(f"policy training diverged (non-finite loss) at update {self.step + 1}: "
                                   "the last checkpoint in the run folder is intact; try another --seed or algorithm")
        self.step += 1
        return losses

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: Path) -> None:
        """Everything needed to continue exactly, written atomically."""
        networks = io.BytesIO()
        self.algo.impl.save_model(networks)  # weights and optimiser states
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "step": self.step,
            "networks": networks.getvalue(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }
        partial = path.with_name(path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, path)

    def restore(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # torch raises many types for a damaged file
            raise ValueError(f"policy checkpoint {path} is corrupted ({type(error).__name__}): "
                             "delete it to train the policy from the start") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a dynamite-rl policy checkpoint")
        self.algo.impl.load_model(io.BytesIO(state["networks"]))
        self.algo.set_grad_step(state["step"])  # target networks sync on the update count
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])

    def export(self, path: Path) -> None:
        """The trained policy as a standard d3rlpy file (``d3rlpy.load_learnable``)."""
        partial = path.with_name(path.name + ".partial")
        self.algo.save(str(partial))
        os.replace(partial, path)


def fit_policy(trainer: PolicyTrainer, run_dir: Path,
               on_log: Callable[[int, dict[str, float]], None] | None = None) -> None:
    """Train to ``config.steps``, logging to ``metrics.csv`` and checkpointing into ``run_dir``.

    Ctrl-C saves a checkpoint first, so a resumed run continues from the last finished update.
    """
    config = trainer.config

    def summarise(row: dict[str, float], rows: list[dict[str, float]], seconds: float) -> dict[str, float]:
        return row | {"updates_per_second": len(rows) / seconds}

    train_loop(trainer, steps=config.steps, log_every=config.log_every, checkpoint_every=config.checkpoint_every,
               checkpoint=run_dir / CHECKPOINT, metrics=run_dir / METRICS, summarise=summarise, on_log=on_log)
    trainer.export(run_dir / POLICY)
