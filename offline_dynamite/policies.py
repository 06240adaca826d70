"""The batched policy interface that roll-outs, collectors and evaluators drive.

A policy acts for ``B`` envs at once: it gets their observations ``[B, *obs_shape]`` and their
current latents ``[B, latent_size]`` (``info["latent"]``) and returns ``B`` actions. Policies that
do not know the latent ignore it. All our envs have a fixed horizon, so the envs of a batch run in
lockstep and :meth:`BatchPolicy.reset` is called once per batch of episodes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class BatchPolicy(Protocol):
    def reset(self, num_envs: int) -> None:
        """Start a new batch of ``num_envs`` episodes (clears any per-episode state)."""

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """Actions ``[B, *action_shape]`` for observations ``[B, ...]`` and latents ``[B, k]``."""


class OracleUnavailableError(RuntimeError):
    """The env has no latent-aware oracle shipped (yet)."""


class RandomPolicy:
    """Uniform actions from the action space, from its own seeded generator."""

    def __init__(self, action_space: gym.spaces.Space, seed: int | None = None) -> None:
        self.action_space = action_space
        self.rng = np.random.default_rng(seed)

    def reset(self, num_envs: int) -> None:
        pass

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        n = len(observations)
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return space.start + self.rng.integers(space.n, size=n)
        if isinstance(space, gym.spaces.Box):
            return self.rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)
        raise TypeError(f"RandomPolicy does not support {type(space).__name__} action spaces")
