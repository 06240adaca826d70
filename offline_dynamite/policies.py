"""The batched policy interface that roll-outs, collectors and evaluators drive.

A policy acts for ``B`` envs at once: it gets their observations ``[B, *obs_shape]`` and their
current latents ``[B, latent_size]`` (``info["latent"]``) and returns ``B`` actions. Policies that
do not know the latent ignore it. All our envs have a fixed horizon, so the envs of a batch run in
lockstep and :meth:`BatchPolicy.reset` is called once per batch of episodes, with one seed per
episode: a stochastic policy draws each env's actions from that env's own generator, so an
episode's actions do not depend on which other episodes share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class BatchPolicy(Protocol):
    def reset(self, seeds: Sequence[int]) -> None:
        """Start a batch of ``len(seeds)`` episodes; clears any per-episode state."""

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """Actions ``[B, *action_shape]`` for observations ``[B, ...]`` and latents ``[B, k]``."""


@runtime_checkable
class RewardFeedback(Protocol):
    """A policy with memory of what its actions earned (e.g. a belief): roll-outs call
    :meth:`observe_rewards` after every step."""

    def observe_rewards(self, rewards: np.ndarray) -> None:
        """The rewards ``[B]`` that the last actions earned."""


class OracleUnavailableError(RuntimeError):
    """The env has no latent-aware oracle shipped."""


class DeterministicPolicy:
    """Base of policies without randomness or memory: ``reset`` has nothing to do."""

    def reset(self, seeds: Sequence[int]) -> None:
        pass


class PerEpisodeRandomness:
    """Base of stochastic policies: one generator per env of the batch, seeded per episode."""

    rngs: list[np.random.Generator]

    def reset(self, seeds: Sequence[int]) -> None:
        self.rngs = [np.random.default_rng(seed) for seed in seeds]


class RandomPolicy(PerEpisodeRandomness):
    """Uniform actions from the action space."""

    def __init__(self, action_space: gym.spaces.Space) -> None:
        if not isinstance(action_space, gym.spaces.Discrete | gym.spaces.Box):
            raise TypeError(f"RandomPolicy does not support {type(action_space).__name__} spaces")
        self.action_space = action_space

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return np.array([space.start + rng.integers(space.n) for rng in self.rngs])
        return np.stack([rng.uniform(space.low, space.high) for rng in self.rngs]).astype(
            space.dtype
        )
