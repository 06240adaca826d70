"""Seeded roll-outs of a batched policy in a DLCMDP env, several envs stepped in lockstep.

Episode ``i`` of a run with seed ``s`` resets its env with a seed drawn from
``SeedSequence([s, i])``, so an episode's env randomness does not depend on how episodes are
batched. All DLCMDP envs have a fixed horizon and never terminate early, so the envs of a batch
finish together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import offline_dynamite  # noqa: F401  (registers the envs)
from offline_dynamite.policies import BatchPolicy


def episode_seed(seed: int, episode: int) -> int:
    """The env seed of episode ``episode`` in a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


@dataclass(frozen=True)
class Rollouts:
    """What a batch of episodes did; ``E`` episodes of ``T`` steps."""

    rewards: np.ndarray  # [E, T] float64
    session_ids: np.ndarray  # [E, T + 1] int64, from the infos of reset and each step
    latents: np.ndarray  # [E, T + 1, latent_size] float32

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


def run_episodes(
    env_id: str,
    policy: BatchPolicy,
    num_episodes: int,
    seed: int,
    num_envs: int = 8,
    env_kwargs: dict[str, Any] | None = None,
) -> Rollouts:
    """Roll ``policy`` out for ``num_episodes`` episodes, ``num_envs`` at a time."""
    envs = [gym.make(env_id, **(env_kwargs or {})) for _ in range(min(num_envs, num_episodes))]
    rewards, session_ids, latents = [], [], []
    try:
        for first in range(0, num_episodes, len(envs)):
            batch = envs[: min(len(envs), num_episodes - first)]
            batch_rewards, batch_sessions, batch_latents = _run_batch(batch, policy, seed, first)
            rewards.append(batch_rewards)
            session_ids.append(batch_sessions)
            latents.append(batch_latents)
    finally:
        for env in envs:
            env.close()
    return Rollouts(
        rewards=np.concatenate(rewards),
        session_ids=np.concatenate(session_ids),
        latents=np.concatenate(latents),
    )


def _run_batch(
    envs: list[gym.Env], policy: BatchPolicy, seed: int, first_episode: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    resets = [env.reset(seed=episode_seed(seed, first_episode + i)) for i, env in enumerate(envs)]
    observations = np.stack([obs for obs, _ in resets])
    infos = [info for _, info in resets]
    policy.reset(len(envs))
    rewards, session_ids, latents = [], [_gather(infos, "session_id")], [_gather(infos, "latent")]
    done = False
    while not done:
        actions = policy.act(observations, latents[-1])
        steps = [env.step(action) for env, action in zip(envs, actions)]
        observations = np.stack([step[0] for step in steps])
        infos = [step[4] for step in steps]
        rewards.append([step[1] for step in steps])
        session_ids.append(_gather(infos, "session_id"))
        latents.append(_gather(infos, "latent"))
        done = all(step[2] or step[3] for step in steps)
    return (
        np.asarray(rewards, dtype=np.float64).T,
        np.stack(session_ids, axis=1),
        np.stack(latents, axis=1),
    )


def _gather(infos: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.stack([info[key] for info in infos])
