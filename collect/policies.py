"""Behaviour policies for data collection, and the per-episode mixture a recipe describes.

A recipe's ``[[behaviour]]`` entries are :class:`Behaviour` specs. Each episode draws one spec
(weights are probabilities) from its own seed, so the mix is the same however episodes are split
over workers. Available policies:

``random``
    uniform actions.
``oracle``
    the env's latent-aware oracle; with ``noise > 0`` a noisy oracle: Gaussian noise of that
    standard deviation on continuous actions (then clipped), ε-greedy with ε = ``noise`` on
    discrete ones.
``checkpoint``
    a d3rlpy policy saved with ``algo.save(path)`` (``.d3``); ``observe_latent = true`` appends
    the true latent to its input (a policy trained with the latent in view). ``noise`` applies too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offline_dynamite.policies import (BatchPolicy, DeterministicPolicy, PerEpisodeRandomness, RandomPolicy,
                                      RewardFeedback)

POLICY_KINDS = ("random", "oracle", "explorer", "checkpoint")


@dataclass(frozen=True)
class Behaviour:
    """One component of a behaviour mix."""

    policy: str
    weight: float = 1.0
    noise: float = 0.0
    path: str | None = None
    observe_latent: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICY_KINDS:
            raise ValueError(f"unknown behaviour policy {self.policy!r}: use one of {', '.join(POLICY_KINDS)}")
        if not self.weight > 0:
            raise ValueError(f"behaviour weight must be positive, got {self.weight}")
        if self.noise < 0:
            raise ValueError(f"behaviour noise must be non-negative, got {self.noise}")
        if (self.policy == "checkpoint") != (self.path is not None):
            raise ValueError("a 'checkpoint' behaviour needs a path, and only it takes one")
        if self.policy == "random" and self.noise:
            raise ValueError("noise on a random policy changes nothing: drop it")

    @property
    def name(self) -> str:
        """A short label: ``random``, ``oracle``, ``oracle+noise0.3``, ``checkpoint:sac.d3``."""
        base = f"checkpoint:{Path(self.path).name}" if self.path else self.policy
        return f"{base}+noise{self.noise:g}" if self.noise else base

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def build(self, env: gym.Env) -> BatchPolicy:
        """The policy for ``env`` (an env of the dataset's id and kwargs)."""
        if self.policy == "random":
            return RandomPolicy(env.action_space)
        if self.policy == "oracle":
            base: BatchPolicy = env.unwrapped.make_oracle()
        elif self.policy == "explorer":
            if not hasattr(env.unwrapped, "make_explorer"):
                raise ValueError(f"{env.spec.id} has no explorer behaviour (a latent-blind adaptive policy): "
                                 "use random, oracle or checkpoint")
            base = env.unwrapped.make_explorer()
        else:
            base = D3rlpyPolicy(Path(self.path), self.observe_latent)
        return NoisyPolicy(base, env.action_space, self.noise) if self.noise else base


def choose_behaviours(
    mix: Sequence[Behaviour], seed: int, episodes: Sequence[int]
) -> np.ndarray:
    """Index into ``mix`` of the behaviour of each episode, drawn from the episode's own seed."""
    weights = np.array([behaviour.weight for behaviour in mix], dtype=np.float64)
    cumulative = np.cumsum(weights / weights.sum())
    draws = [np.random.default_rng([seed, episode, 2]).random() for episode in episodes]
    return np.minimum(np.searchsorted(cumulative, draws, side="right"), len(mix) - 1)


class NoisyPolicy(PerEpisodeRandomness):
    """A base policy with Gaussian action noise (continuous) or ε-greedy exploration (discrete)."""

    def __init__(self, base: BatchPolicy, action_space: gym.spaces.Space, noise: float) -> None:
        self.base = base
        self.action_space = action_space
        self.noise = noise

    def reset(self, seeds: Sequence[int]) -> None:
        super().reset(seeds)
        self.base.reset(seeds)

    def observe_rewards(self, rewards: np.ndarray) -> None:
        if isinstance(self.base, RewardFeedback):  # an adaptive base learns from what its actions earned
            self.base.observe_rewards(rewards)

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        actions = np.array(self.base.act(observations, latents), copy=True)
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            for row, rng in enumerate(self.rngs):
                if rng.random() < self.noise:
                    actions[row] = space.start + rng.integers(space.n)
            return actions
        noise = np.stack([rng.standard_normal(space.shape) for rng in self.rngs])
        return np.clip(actions + self.noise * noise, space.low, space.high).astype(space.dtype)


class D3rlpyPolicy(DeterministicPolicy):
    """The greedy action of a saved d3rlpy algorithm (``algo.save("policy.d3")``)."""

    def __init__(self, path: Path, observe_latent: bool) -> None:
        import d3rlpy  # imported here: torch is slow to import and only checkpoints need it

        if not path.is_file():
            raise FileNotFoundError(f"behaviour checkpoint {path} does not exist")
        self.algo = d3rlpy.load_learnable(str(path), device="cpu:0")
        self.observe_latent = observe_latent

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        inputs = np.concatenate([observations, latents], axis=1) if self.observe_latent else observations
        return self.algo.predict(inputs.astype(np.float32))
