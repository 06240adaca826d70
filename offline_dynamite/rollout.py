"""Seeded roll-outs of a batched policy, several envs stepped in lockstep.

Episode ``i`` of a run seeded with ``seed`` resets its env with :func:`episode_seed` and seeds
its policy randomness with :func:`policy_seed`, so an episode is the same whichever batch, worker
or machine rolls it out. All DLCMDP envs have a fixed horizon and never terminate early, so the
envs of a batch finish together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import offline_dynamite  # noqa: F401  (registers the envs)
from offline_dynamite.policies import BatchPolicy, RewardFeedback


def episode_seed(seed: int, episode: int) -> int:
    """The env reset seed of episode ``episode`` in a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def policy_seed(seed: int, episode: int) -> int:
    """The seed of the policy's randomness in episode ``episode`` (a stream apart from the env's)."""
    return int(np.random.SeedSequence([seed, episode, 1]).generate_state(1)[0])


@dataclass
class Trajectory:
    """One episode in Minari's layout: ``T`` transitions, ``T + 1`` observations and infos."""

    observations: np.ndarray  # [T + 1, *obs_shape]
    actions: np.ndarray  # [T, *action_shape]
    rewards: np.ndarray  # [T] float64
    terminations: np.ndarray  # [T] bool
    truncations: np.ndarray  # [T] bool
    infos: dict[str, np.ndarray]  # each [T + 1, ...]: reset info, then one per step


def run_batch(
    envs: Sequence[gym.Env],
    policy: BatchPolicy,
    env_seeds: Sequence[int],
    policy_seeds: Sequence[int],
) -> list[Trajectory]:
    """Roll one episode out in each env, with batched policy calls; everything is recorded."""
    resets = [env.reset(seed=seed) for env, seed in zip(envs, env_seeds)]
    observations = [np.stack([obs for obs, _ in resets])]
    infos = [[info for _, info in resets]]
    policy.reset(policy_seeds)
    actions, rewards, terminations, truncations = [], [], [], []
    while True:
        batch_actions = policy.act(observations[-1], _stack(infos[-1], "latent"))
        steps = [env.step(action) for env, action in zip(envs, batch_actions)]
        actions.append(batch_actions)
        observations.append(np.stack([step[0] for step in steps]))
        rewards.append([step[1] for step in steps])
        terminations.append([step[2] for step in steps])
        truncations.append([step[3] for step in steps])
        infos.append([step[4] for step in steps])
        if isinstance(policy, RewardFeedback):
            policy.observe_rewards(np.asarray(rewards[-1], dtype=np.float64))
        if all(step[2] or step[3] for step in steps):
            break
    observations_, actions_ = np.stack(observations, axis=1), np.stack(actions, axis=1)
    rewards_ = np.asarray(rewards, dtype=np.float64).T
    terminations_, truncations_ = np.asarray(terminations).T, np.asarray(truncations).T
    info_arrays = {key: np.stack([_stack(step, key) for step in infos], axis=1) for key in infos[0][0]}
    return [
        Trajectory(
            observations=observations_[i],
            actions=actions_[i],
            rewards=rewards_[i],
            terminations=terminations_[i],
            truncations=truncations_[i],
            infos={key: value[i] for key, value in info_arrays.items()},
        )
        for i in range(len(envs))
    ]


def run_seeded_batch(envs: Sequence[gym.Env], policy: BatchPolicy, seed: int,
                     episodes: Sequence[int]) -> list[Trajectory]:
    """Episodes ``episodes`` of a run seeded with ``seed``, one per env, in lockstep: each with
    the seeds :func:`episode_seed` and :func:`policy_seed` give it, whatever batch it is in."""
    return run_batch(envs[: len(episodes)], policy, [episode_seed(seed, i) for i in episodes],
                     [policy_seed(seed, i) for i in episodes])


def episode_batches(num_episodes: int, batch_size: int) -> list[range]:
    """Episodes ``0 … num_episodes - 1`` in consecutive batches of at most ``batch_size``."""
    return [range(first, min(first + batch_size, num_episodes)) for first in range(0, num_episodes, batch_size)]


_process_envs: dict[str, list[gym.Env]] = {}


def process_envs(env_id: str, env_kwargs: dict[str, Any], count: int) -> list[gym.Env]:
    """``count`` envs of this process, built once and reused by later batches (in worker
    processes, which roll many batches out). Every episode resets its env with its own seed."""
    envs = _process_envs.setdefault(json.dumps([env_id, env_kwargs], sort_keys=True), [])
    while len(envs) < count:
        envs.append(gym.make(env_id, **env_kwargs))
    return envs[:count]


def _stack(infos: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.stack([info[key] for info in infos])


@dataclass(frozen=True)
class Rollouts:
    """What a run of ``E`` episodes of ``T`` steps did."""

    rewards: np.ndarray  # [E, T] float64
    session_ids: np.ndarray  # [E, T + 1] int64, from the infos of reset and each step
    latents: np.ndarray  # [E, T + 1, latent_size] float32

    @classmethod
    def of(cls, trajectories: Sequence[Trajectory]) -> Rollouts:
        return cls(
            rewards=np.stack([t.rewards for t in trajectories]),
            session_ids=np.stack([t.infos["session_id"] for t in trajectories]),
            latents=np.stack([t.infos["latent"] for t in trajectories]),
        )

    @property
    def returns(self) -> np.ndarray:
        return self.rewards.sum(axis=1)

    @property
    def sessions_per_episode(self) -> np.ndarray:
        return self.session_ids[:, -1] + 1

    def return_per_session_index(self) -> dict[int, float]:
        """Mean over episodes of the reward collected in session ``k`` (if reached)."""
        step_sessions = self.session_ids[:, :-1]  # the session each transition belongs to
        result = {}
        for k in range(int(step_sessions.max()) + 1):
            in_session = step_sessions == k
            reached = in_session.any(axis=1)
            result[k] = float((self.rewards * in_session).sum(axis=1)[reached].mean())
        return result


def run_trajectories(
    env_id: str,
    policy: BatchPolicy,
    num_episodes: int,
    seed: int,
    num_envs: int = 8,
    env_kwargs: dict[str, Any] | None = None,
) -> list[Trajectory]:
    """Roll ``policy`` out for ``num_episodes`` seeded episodes, ``num_envs`` at a time."""
    envs = [gym.make(env_id, **(env_kwargs or {})) for _ in range(min(num_envs, num_episodes))]
    trajectories: list[Trajectory] = []
    try:
        for episodes in episode_batches(num_episodes, len(envs)):
            trajectories += run_seeded_batch(envs, policy, seed, episodes)
    finally:
        for env in envs:
            env.close()
    return trajectories


def run_episodes(
    env_id: str,
    policy: BatchPolicy,
    num_episodes: int,
    seed: int,
    num_envs: int = 8,
    env_kwargs: dict[str, Any] | None = None,
) -> Rollouts:
    """What ``policy`` earned in ``num_episodes`` seeded episodes (see :func:`run_trajectories`)."""
    return Rollouts.of(run_trajectories(env_id, policy, num_episodes, seed, num_envs, env_kwargs))
