"""A trained run as a policy for online use: the posterior and the d3rlpy policy in one object.

.. code-block:: python

    policy = OnlinePolicy.load("runs/gridworld__dynamite__discrete-cql__seed0__…")
    policy.reset(num_envs)
    actions = policy.act(observations)                         # first step of the episodes
    actions = policy.act(observations, actions, rewards)       # then: previous actions, rewards

The belief is carried across calls, one per env, and updated exactly as the training data was
relabelled (same posterior, same boundaries from its termination head), so a policy sees online
the hyper-states it was trained on. The ``oracle`` variant needs ``latents=`` (the envs'
``info["latent"]``); the others ignore them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from minari.serialization import deserialize_space

from offline_dynamite.belief.model import BeliefModel, OnlineState
from offline_dynamite.belief.trainer import load_checkpoint, model_from_checkpoint
from offline_dynamite.run_folder import read_record
from offline_dynamite.train.algos import import_d3rlpy
from offline_dynamite.train.runs import BELIEF_CHECKPOINT, BELIEF_DIR
from offline_dynamite.train.trainer import POLICY


class OnlinePolicy:
    """A d3rlpy policy on hyper-states and the posterior that makes them, for a batch of envs.

    Build it with :meth:`load`; the constructor is for policies assembled in code (e.g. a scripted
    ``algo`` with a ``predict(hyper_states)`` method in tests).
    """

    def __init__(self, algo: Any, variant: str, action_space: gym.spaces.Space, belief: BeliefModel | None,
                 record: dict[str, Any] | None = None) -> None:
        self.algo, self.variant, self.action_space, self.belief_model = algo, variant, action_space, belief
        self.record = record or {}
        self._state: OnlineState | None = None
        self._started = False  # reset() has been called
        #: [B, k]: the current belief of each env as one point (Gaussian mean or class probabilities)
        self.belief: np.ndarray | None = None
        self.boundary_probability: np.ndarray | None = None  # [B]: P(a new session began at this step)

    @classmethod
    def load(cls, run_dir: str | Path) -> OnlinePolicy:
        """The policy of a complete train run folder."""
        run_dir = Path(run_dir)
        record = read_record(run_dir)
        if record.get("kind") != "train":
            raise ValueError(f"{run_dir} is not a train run folder (it is a {record.get('kind', 'unknown')} run)")
        if record.get("status") != "complete":
            raise ValueError(f"run {run_dir} is {record.get('status')}, not complete: finish it with "
                             f"dynamite-offline train --resume {run_dir}")
        try:
            algo = import_d3rlpy().load_learnable(str(run_dir / POLICY), device="cpu:0")
        except Exception as error:  # pickle and torch raise many types for a damaged file
            raise ValueError(f"policy {run_dir / POLICY} is missing or corrupted ({type(error).__name__})") from None
        belief = None
        if record.get("belief") is not None:
            belief = model_from_checkpoint(load_checkpoint(run_dir / BELIEF_DIR / BELIEF_CHECKPOINT))
        return cls(algo, record["base_variant"], deserialize_space(record["action_space"]), belief, record)

    @property
    def observation_size(self) -> int | None:
        """The number of observation values the policy was trained on (from the run's record)."""
        layout = self.record.get("hyper_state")
        return int(layout[0][1]) if layout else None

    # ------------------------------------------------------------------ acting
    def reset(self, num_envs: int) -> None:
        """Start ``num_envs`` new episodes: beliefs back to their prior."""
        self._state = self.belief_model.initial_state(num_envs) if self.belief_model is not None else None
        self._started = True
        self.belief = self.boundary_probability = None

    def act(self, observations: np.ndarray, previous_actions: np.ndarray | None = None,
            previous_rewards: np.ndarray | None = None, latents: np.ndarray | None = None) -> np.ndarray:
        """Actions ``[B, ...]`` for the current observations, after updating the beliefs with the
        step that led to them (``previous_*`` are ``None`` right after :meth:`reset`)."""
        return self.predict(self.observe(observations, previous_actions, previous_rewards, latents))

    def observe(self, observations: np.ndarray, previous_actions: np.ndarray | None = None,
                previous_rewards: np.ndarray | None = None, latents: np.ndarray | None = None) -> np.ndarray:
        """Update the beliefs with one step and return the hyper-states ``[B, d]`` the policy sees."""
        if not self._started:
            raise RuntimeError("call reset(num_envs) before the first act()")
        observations = np.asarray(observations, dtype=np.float32).reshape(len(observations), -1)
        if self.variant == "no-belief":
            return observations
        if self.variant == "oracle":
            if latents is None:
                raise ValueError("the oracle variant acts on the true latents: pass latents= (info['latent'])")
            return np.concatenate([observations, np.asarray(latents, dtype=np.float32)], axis=1)
        as_tensor = (lambda x: None if x is None else torch.as_tensor(np.asarray(x)))
        self._state, beliefs = self.belief_model.step(self._state, torch.from_numpy(observations),
                                                      as_tensor(previous_actions), as_tensor(previous_rewards))
        parameters = beliefs.parameters[:, 0]
        self.belief = self.belief_model.latent.summary(parameters).numpy()
        logits = beliefs.termination_logits
        self.boundary_probability = None if logits is None else torch.sigmoid(logits[:, 0]).numpy()
        return np.concatenate([observations, self.belief_model.latent.features(parameters).numpy()], axis=1)

    def predict(self, hyper_states: np.ndarray) -> np.ndarray:
        """The policy's greedy actions for hyper-states (no belief update)."""
        actions = self.algo.predict(hyper_states)
        if isinstance(self.action_space, gym.spaces.Discrete):
            return actions.astype(np.int64) + int(self.action_space.start)
        return np.clip(actions, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)


class ClosedLoopPolicy:
    """An :class:`OnlinePolicy` as a :class:`~offline_dynamite.policies.BatchPolicy` for seeded
    roll-outs (:func:`offline_dynamite.rollout.run_batch`): it feeds its own last actions and the
    rewards they earned back into the belief."""

    def __init__(self, policy: OnlinePolicy) -> None:
        self.policy = policy
        self._actions: np.ndarray | None = None
        self._rewards: np.ndarray | None = None

    def reset(self, seeds) -> None:
        self.policy.reset(len(seeds))  # the policy is deterministic: seeds are not needed
        self._actions = self._rewards = None

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        self._actions = self.policy.act(observations, self._actions, self._rewards, latents)
        return self._actions

    def observe_rewards(self, rewards: np.ndarray) -> None:
        self._rewards = rewards
