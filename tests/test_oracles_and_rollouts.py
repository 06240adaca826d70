"""Latent-aware oracles against random behaviour, the seeded roll-out helper and its CLI."""

from __future__ import annotations

import os
import subprocess

import gymnasium as gym
import numpy as np
import pytest

from offline_dynamite.policies import BatchPolicy, RandomPolicy
from offline_dynamite.rollout import episode_seed, policy_seed, run_episodes
from tests.helpers import console_script


def mean_reward_per_step_by_session(rollouts, sessions: int) -> np.ndarray:
    """Mean per-step reward within the k-th session of each episode, k < ``sessions``."""
    step_sessions = rollouts.session_ids[:, :-1]
    return np.array(
        [rollouts.rewards[step_sessions == k].mean() for k in range(sessions)], dtype=np.float64
    )


# Per-step reward gap that counts as a wide margin: the gridworld pays +1 on the goal against
# -0.1 elsewhere; Reacher's random arm flails at ≈ -0.85 per step against an oracle near 0; a
# random cheetah barely moves and loses ≈ 1.7-2.1 per step, the shipped SAC oracles (trained,
# tracking the target to about half a m/s) ≈ 0.6-0.95.
WIDE_MARGIN = {
    "dynamite/Gridworld-v0": 0.4,
    "dynamite/Reacher-v0": 0.5,
    "dynamite/HalfCheetahVel-v0": 0.8,
    "dynamite/HalfCheetahWind-v0": 0.8,
}


@pytest.mark.parametrize("env_id", sorted(WIDE_MARGIN))
def test_oracle_beats_random_by_a_wide_margin_in_every_session(env_id):
    env = gym.make(env_id)
    oracle = env.unwrapped.make_oracle()
    assert isinstance(oracle, BatchPolicy)
    expert = run_episodes(env_id, oracle, 24, seed=0)
    random = run_episodes(env_id, RandomPolicy(env.action_space), 24, seed=0)
    # Same env seeds: both policies face the same sessions and latents.
    np.testing.assert_array_equal(expert.session_ids, random.session_ids)
    np.testing.assert_array_equal(expert.latents, random.latents)
    assert (expert.sessions_per_episode >= 3).sum() >= 12, "too few episodes reach session 3"
    gap = mean_reward_per_step_by_session(expert, 3) - mean_reward_per_step_by_session(random, 3)
    assert (gap > WIDE_MARGIN[env_id]).all(), gap


def test_gridworld_oracle_sits_on_the_paying_goal_after_reaching_it():
    env = gym.make("dynamite/Gridworld-v0", switch_prob=0.0)
    oracle = env.unwrapped.make_oracle()
    obs, info = env.reset(seed=3)
    rewards = []
    for _ in range(20):  # a 5x5 grid is crossed in at most 8 moves
        obs, reward, *_, info = env.step(oracle.act(obs[None], info["latent"][None])[0])
        rewards.append(reward)
    first_paid = rewards.index(1.0)
    assert first_paid < 8
    assert rewards[first_paid:] == [1.0] * (20 - first_paid)


def test_reacher_oracle_reaches_each_new_goal():
    env = gym.make("dynamite/Reacher-v0", switch_prob=0.0, horizon=300)
    unwrapped = env.unwrapped
    oracle = unwrapped.make_oracle()
    obs, info = env.reset(seed=0)
    for angle in np.linspace(0, 2 * np.pi, 5, endpoint=False):
        unwrapped.set_latent(unwrapped._goal_at(angle))
        info["latent"] = unwrapped.latent
        for _ in range(60):
            obs, *_ = env.step(oracle.act(obs[None], info["latent"][None])[0])
        assert np.linalg.norm(obs[6:8] - info["latent"]) < 0.01


def test_rollouts_are_reproducible_and_independent_of_batching():
    env_id = "dynamite/Reacher-v0"
    random = RandomPolicy(gym.make(env_id).action_space)
    first = run_episodes(env_id, random, 6, seed=4, num_envs=4)
    second = run_episodes(env_id, random, 6, seed=4, num_envs=1)
    np.testing.assert_array_equal(first.rewards, second.rewards)
    np.testing.assert_array_equal(first.session_ids, second.session_ids)
    assert first.rewards.shape == (6, 150) and first.latents.shape == (6, 151, 2)
    third = run_episodes(env_id, random, 6, seed=5, num_envs=4)
    assert not np.array_equal(first.rewards, third.rewards)
    seeds = {episode_seed(4, i) for i in range(100)} | {policy_seed(4, i) for i in range(100)}
    assert len(seeds) == 200


def test_rollout_cli_prints_returns_and_sessions_for_every_env():
    result = subprocess.run(
        [console_script("dynamite-offline"), "rollout", "--episodes", "2", "--num-envs", "2"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    for name in ("gridworld", "reacher", "halfcheetahvel", "halfcheetahwind"):
        assert name in result.stdout
    assert "oracle" in result.stdout and "random" in result.stdout


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--env", "cartpole"], "unknown env 'cartpole'"),
        (["--env", "gridworld", "--switch-prob", "1.5"], "switch_prob must be in [0, 1]"),
    ],
)
def test_rollout_cli_bad_input_is_one_clear_line(arguments, message):
    result = subprocess.run(
        [console_script("dynamite-offline"), "rollout", *arguments], capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


class LatentBlind:
    """Hides the true latents from a policy (they become zeros), passing rewards through."""

    def __init__(self, base) -> None:
        self.base = base

    def reset(self, seeds) -> None:
        self.base.reset(seeds)

    def act(self, observations, latents):
        return self.base.act(observations, np.zeros_like(latents))

    def observe_rewards(self, rewards) -> None:
        self.base.observe_rewards(rewards)


def test_gridworld_explorer_adapts_from_rewards_alone():
    env = gym.make("dynamite/Gridworld-v0")
    explorer = run_episodes("dynamite/Gridworld-v0", env.unwrapped.make_explorer(), 48, 5, num_envs=16)
    blind = run_episodes("dynamite/Gridworld-v0", LatentBlind(env.unwrapped.make_explorer()), 48, 5, num_envs=16)
    np.testing.assert_array_equal(explorer.rewards, blind.rewards)  # it never reads the latent
    oracle = run_episodes("dynamite/Gridworld-v0", env.unwrapped.make_oracle(), 48, 5, num_envs=16)
    random = run_episodes("dynamite/Gridworld-v0", RandomPolicy(env.action_space), 48, 5, num_envs=16)
    # Finding the paying goal costs a few steps per session: close to the oracle, far above random,
    # and it keeps up after switches.
    assert explorer.returns.mean() > 0.9 * oracle.returns.mean() > 10 * max(random.returns.mean(), 1)
    later = [k for k in explorer.return_per_session_index() if k >= 1]
    assert all(explorer.return_per_session_index()[k] > 0.8 * oracle.return_per_session_index()[k] for k in later[:2])
