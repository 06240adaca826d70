"""Every DLCMDP env against the shared contract: gymnasium API, sessions, info schema, reward."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import offline_dynamite
from offline_dynamite.envs import ENV_IDS, resolve_env_id
from tests.helpers import random_trace, stacked_info

ALL_ENVS = sorted(ENV_IDS.values())
SESSION_KEYS = {"latent": np.float32, "session_id": np.int64, "session_start": np.bool_}
# Horizons short enough to keep the suite fast, long enough to see several sessions.
SHORT = {"horizon": 40}


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_passes_gymnasium_env_checker(env_id):
    env = gym.make(env_id)
    # The 'human' render mode needs a display; rgb_array rendering is tested below.
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_same_seed_gives_identical_trajectories_switches_included(env_id):
    first = random_trace(gym.make(env_id, switch_prob=0.2, **SHORT), seed=7)
    second = random_trace(gym.make(env_id, switch_prob=0.2, **SHORT), seed=7)
    assert stacked_info(first, "session_id")[-1] > 2, "expected several switches"
    np.testing.assert_array_equal(np.stack(first.observations), np.stack(second.observations))
    np.testing.assert_array_equal(first.rewards, second.rewards)
    for key in SESSION_KEYS:
        np.testing.assert_array_equal(stacked_info(first, key), stacked_info(second, key))
    other = random_trace(gym.make(env_id, switch_prob=0.2, **SHORT), seed=8)
    assert not np.array_equal(stacked_info(first, "latent"), stacked_info(other, "latent"))


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_switch_prob_zero_is_one_session_and_one_switches_every_step(env_id):
    trace = random_trace(gym.make(env_id, switch_prob=0.0, **SHORT), seed=0)
    assert (stacked_info(trace, "session_id") == 0).all()
    assert stacked_info(trace, "session_start").tolist() == [True] + [False] * 40
    assert (stacked_info(trace, "latent") == trace.infos[0]["latent"]).all()

    trace = random_trace(gym.make(env_id, switch_prob=1.0, **SHORT), seed=0)
    # A new session after every step but the last (it would hold no transition).
    assert stacked_info(trace, "session_id").tolist() == list(range(40)) + [39]
    assert stacked_info(trace, "session_start").tolist() == [True] * 40 + [False]


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_info_schema_is_identical_after_reset_and_every_step(env_id):
    env = gym.make(env_id, switch_prob=0.3, **SHORT)
    trace = random_trace(env, seed=3)
    latent_size = env.unwrapped.latent_size
    reference = trace.infos[0]
    assert SESSION_KEYS.keys() <= reference.keys()
    assert reference["latent"].shape == (latent_size,)
    for key, dtype in SESSION_KEYS.items():
        assert np.asarray(reference[key]).dtype == dtype, key
    for info in trace.infos:
        assert info.keys() == reference.keys()
        for key, value in info.items():
            assert np.asarray(value).dtype == np.asarray(reference[key]).dtype, key
            assert np.shape(value) == np.shape(reference[key]), key


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_episode_truncates_exactly_at_the_horizon(env_id):
    trace = random_trace(gym.make(env_id, **SHORT), seed=1)
    assert len(trace.rewards) == 40
    assert trace.truncations == [False] * 39 + [True]


def other_latent(env_id: str, latent: np.ndarray) -> np.ndarray:
    """A different latent of the same env (the gridworld's is a goal index)."""
    if env_id == "dynamite/Gridworld-v0":
        return 1.0 - latent
    return -latent + 0.5


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_vectorised_reward_equals_step_reward(env_id):
    env = gym.make(env_id, switch_prob=0.1)
    has_oracle = env_id in ("dynamite/Gridworld-v0", "dynamite/Reacher-v0")
    trace = random_trace(env, seed=5, oracle_share=0.7 if has_oracle else 0.0)
    observations = np.stack(trace.observations)
    latents = stacked_info(trace, "latent")
    rewards = env.unwrapped.reward(
        observations[:-1], np.stack(trace.actions), observations[1:], latents[:-1]
    )
    assert rewards.shape == (len(trace.rewards),)
    np.testing.assert_allclose(rewards, trace.rewards, rtol=0, atol=1e-12)
    # A latent that changed must change some rewards, except where it only moves the dynamics.
    if env_id != "dynamite/HalfCheetahWind-v0":
        other = env.unwrapped.reward(
            observations[:-1],
            np.stack(trace.actions),
            observations[1:],
            other_latent(env_id, latents[:-1]),
        )
        assert not np.allclose(other, rewards)


# Does the latent act on the dynamics (so that observations must differ) or only on the reward?
LATENT_MOVES_DYNAMICS = {
    "dynamite/Gridworld-v0": False,
    "dynamite/Reacher-v0": False,
    "dynamite/HalfCheetahVel-v0": False,
    "dynamite/HalfCheetahWind-v0": True,
}


@pytest.mark.parametrize("env_id", sorted(LATENT_MOVES_DYNAMICS))
def test_latent_is_not_in_the_observation(env_id):
    envs = [gym.make(env_id, switch_prob=0.0, **SHORT) for _ in range(2)]
    for env in envs:
        env.reset(seed=11)
    first, second = (env.unwrapped for env in envs)
    second.set_latent(other_latent(env_id, first.latent))
    envs[0].action_space.seed(0)
    observations = [[], []]
    for _ in range(40):
        action = envs[0].action_space.sample()
        for env, trace in zip(envs, observations):
            trace.append(env.step(action)[0])
    same = np.array_equal(np.stack(observations[0]), np.stack(observations[1]))
    assert same is not LATENT_MOVES_DYNAMICS[env_id]


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_default_horizon_and_switch_prob_give_at_least_three_sessions(env_id):
    env = gym.make(env_id).unwrapped
    assert 1 + (env.horizon - 1) * env.switch_prob >= 3
    from offline_dynamite.policies import RandomPolicy
    from offline_dynamite.rollout import run_episodes

    result = run_episodes(env_id, RandomPolicy(env.action_space), 40, seed=0)
    # Expected ≥ 3 with a standard deviation of the mean below 0.3: 2.5 is far in the tail.
    assert result.sessions_per_episode.mean() > 2.5


@pytest.mark.parametrize("env_id", ["dynamite/Gridworld-v0", "dynamite/Reacher-v0"])
def test_rgb_array_rendering_works_headless(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0, "blank frame"


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_spec_rebuilds_the_env_in_a_fresh_process(env_id):
    """Minari stores the spec as JSON and rebuilds the env with gym.make in a new process."""
    spec_json = gym.make(env_id, switch_prob=0.25).spec.to_json()
    code = (
        "import sys, gymnasium as gym\n"
        "from gymnasium.envs.registration import EnvSpec\n"
        "env = gym.make(EnvSpec.from_json(sys.argv[1]))\n"
        "print(env.unwrapped.switch_prob)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, spec_json], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "0.25"
    assert json.loads(spec_json)["entry_point"].startswith("offline_dynamite.envs.")


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_bad_constructor_arguments_are_rejected(env_id):
    with pytest.raises(TypeError, match="unexpected keyword argument 'switch_probability'"):
        gym.make(env_id, switch_probability=0.1)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"switch_prob must be in \[0, 1\], got"):
            gym.make(env_id, switch_prob=bad)
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        gym.make(env_id, horizon=0)


@pytest.mark.parametrize("env_id", [e for e in ALL_ENVS if e != "dynamite/Gridworld-v0"])
def test_continuous_actions_of_wrong_shape_or_range_are_rejected(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    shape = env.action_space.shape
    with pytest.raises(ValueError, match=r"action has shape \(\d+,\), expected"):
        env.step(np.zeros(shape[0] + 1, dtype=np.float32))
    for bad in (2.0, -1.5, np.nan):
        action = np.zeros(shape, dtype=np.float32)
        action[0] = bad
        with pytest.raises(ValueError, match="outside the action space"):
            env.step(action)


def test_gridworld_rejects_unknown_actions():
    env = gym.make("dynamite/Gridworld-v0")
    env.reset(seed=0)
    for bad in (5, -1, 1.5, np.array([1, 2])):
        with pytest.raises(ValueError, match="is not one of the 5 discrete actions"):
            env.step(bad)


def test_unknown_env_names_are_rejected_with_the_known_ones():
    assert resolve_env_id("HalfCheetah-Vel") == "dynamite/HalfCheetahVel-v0"
    assert resolve_env_id("dynamite/Reacher-v0") == "dynamite/Reacher-v0"
    with pytest.raises(ValueError, match="unknown env 'cartpole': choose one of gridworld"):
        resolve_env_id("cartpole")


def test_importing_the_package_registers_every_env():
    assert set(offline_dynamite.ENV_IDS.values()) <= set(gym.registry)
