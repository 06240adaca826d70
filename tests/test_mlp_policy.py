"""The numpy MLP oracle format: exact agreement with d3rlpy's SAC actor, the training script."""

from __future__ import annotations

import subprocess
import sys

import d3rlpy
import gymnasium as gym
import numpy as np
import pytest

from collect.train_oracle import (
    LatentInObservation,
    LatentRelabellingPicker,
    OracleTrainingOptions,
    export_actor,
    main,
    steps_into_session,
    train,
    with_latent,
)
from offline_dynamite.envs.mlp_policy import MLPPolicy
from offline_dynamite.policies import BatchPolicy, OracleUnavailableError

# A few hundred steps of a small SAC: enough for real, updated weights in seconds.
TINY = dict(steps=600, random_steps=300, batch_size=64, hidden_units=(32, 32), steps_per_epoch=300)


def visited_inputs(env_id: str, steps: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Observations and latents of a random walk, with latents switching often."""
    env = gym.make(env_id, switch_prob=0.1)
    env.action_space.seed(0)
    observation, info = env.reset(seed=0)
    observations, latents = [], []
    for _ in range(steps):
        observations.append(observation)
        latents.append(info["latent"])
        observation, _, _, _, info = env.step(env.action_space.sample())
    return np.stack(observations), np.stack(latents)


@pytest.mark.parametrize("env", ["halfcheetahvel", "halfcheetahwind"])
def test_exported_actor_acts_exactly_like_d3rlpy_predict(env, tmp_path):
    algo, training_env, _ = train(OracleTrainingOptions(env=env, **TINY), report=False)
    path = tmp_path / "actor.npz"
    export_actor(algo, path, observation_size=17, latent_size=1, metadata={"seed": 0})
    policy = MLPPolicy.load(path)
    assert isinstance(policy, BatchPolicy)
    assert policy.layer_sizes == [18, 32, 32, 6] and policy.metadata == {"seed": 0}

    observations, latents = visited_inputs(training_env.spec.id)
    # Far-off inputs too: saturated tanh outputs and every ReLU pattern must agree as well.
    observations = np.concatenate([observations, 20 * observations])
    latents = np.concatenate([latents, latents])
    actions = policy.act(observations, latents)
    assert actions.dtype == np.float32 and actions.shape == (400, 6)
    np.testing.assert_allclose(
        actions, algo.predict(with_latent(observations, latents)), rtol=0, atol=1e-5
    )


def test_training_is_reproducible_from_its_seed(tmp_path):
    options = OracleTrainingOptions(env="halfcheetahvel", relabel_share=0.5, **TINY)
    for name in ("first.npz", "second.npz"):
        algo, *_ = train(options, report=False)
        export_actor(algo, tmp_path / name, observation_size=17, latent_size=1, metadata={})
    first, second = MLPPolicy.load(tmp_path / "first.npz"), MLPPolicy.load(tmp_path / "second.npz")
    for a, b in zip(first.weights + first.biases, second.weights + second.biases):
        np.testing.assert_array_equal(a, b)


def test_training_script_writes_a_loadable_oracle_and_records_its_command(tmp_path, capsys):
    output = tmp_path / "oracle.npz"
    argv = ["--env", "halfcheetahwind", "--steps", "600", "--random-steps", "300"]
    argv += ["--batch-size", "64", "--hidden-units", "32", "32", "--eval-episodes", "2"]
    argv += ["--output", str(output)]
    results = main(argv)

    policy = MLPPolicy.load(output)
    assert policy.metadata["command"] == "python -m collect.train_oracle " + " ".join(argv)
    assert policy.metadata["env_id"] == "dynamite/HalfCheetahWind-v0"
    assert policy.metadata["steps"] == 600 and policy.metadata["seed"] == 0
    assert set(results) == {"oracle", "random"}
    assert results["oracle"].returns.shape == (2,)
    assert "|v - target|" in capsys.readouterr().out


def test_training_script_rejects_an_unknown_env_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--env", "cartpole"])
    assert exit_info.value.code == 2
    assert "unknown env 'cartpole'" in capsys.readouterr().err


def test_relabelled_transitions_carry_the_reward_of_their_new_latent():
    env = LatentInObservation(gym.make("dynamite/HalfCheetahVel-v0", switch_prob=0.0))
    env.action_space.seed(0)
    buffer = d3rlpy.dataset.create_fifo_replay_buffer(
        limit=100, env=env, transition_picker=LatentRelabellingPicker(env, share=1.0, seed=0)
    )
    observation, info = env.reset(seed=0)
    for _ in range(60):
        action = env.action_space.sample()
        next_observation, reward, *_ = env.step(action)
        buffer.append(observation, action, reward)
        observation = next_observation
    buffer.clip_episode(False)
    batch = buffer.sample_transition_batch(32)
    latents = batch.observations[:, -1:]
    assert len(np.unique(latents)) == 32, "every transition gets its own fresh latent"
    np.testing.assert_array_equal(latents, batch.next_observations[:, -1:])
    recomputed = env.unwrapped.reward(
        batch.observations[:, :-1], batch.actions, batch.next_observations[:, :-1], latents
    )
    np.testing.assert_allclose(batch.rewards[:, 0], recomputed, rtol=1e-6)


def test_relabelling_is_refused_where_the_latent_moves_the_cheetah():
    options = OracleTrainingOptions(env="halfcheetahwind", relabel_share=0.5, **TINY)
    with pytest.raises(ValueError, match="cannot be relabelled"):
        train(options, report=False)


def test_steps_into_session_restart_at_every_switch():
    starts = np.array([True, False, False, True, False, True, True, False])
    np.testing.assert_array_equal(steps_into_session(starts), [0, 1, 2, 0, 1, 0, 0, 1])


@pytest.mark.parametrize("env_id", ["dynamite/HalfCheetahVel-v0", "dynamite/HalfCheetahWind-v0"])
def test_shipped_oracle_records_how_it_was_trained(env_id):
    oracle = gym.make(env_id).unwrapped.make_oracle()
    assert oracle.metadata["env_id"] == env_id
    assert oracle.metadata["command"].startswith("python -m collect.train_oracle --env ")
    assert oracle.layer_sizes[0] == 18 and oracle.action_size == 6


def test_loading_and_running_an_oracle_imports_no_torch():
    script = (
        "import sys, gymnasium as gym, numpy as np, offline_dynamite\n"
        "oracle = gym.make('dynamite/HalfCheetahVel-v0').unwrapped.make_oracle()\n"
        "oracle.act(np.zeros((1, 17)), np.ones((1, 1), dtype=np.float32))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_missing_oracle_file_names_the_command_that_trains_it(monkeypatch):
    env = gym.make("dynamite/HalfCheetahVel-v0").unwrapped
    monkeypatch.setattr(env, "oracle_file", "halfcheetahvel-missing.npz")
    with pytest.raises(OracleUnavailableError, match="python -m collect.train_oracle --env"):
        env.make_oracle()


def test_policy_rejects_inputs_of_the_wrong_shape():
    policy = MLPPolicy(
        weights=[np.ones((3, 4)), np.ones((4, 2))],
        biases=[np.zeros(4), np.zeros(2)],
        observation_size=2,
        latent_size=1,
        input_shift=np.zeros(3),
        input_scale=np.ones(3),
    )
    assert policy.act(np.zeros((5, 2)), np.zeros((5, 1))).shape == (5, 2)
    with pytest.raises(ValueError, match=r"observations must have shape \[B, 2\]"):
        policy.act(np.zeros((5, 3)), np.zeros((5, 1)))
    with pytest.raises(ValueError, match=r"latents must have shape \[5, 1\]"):
        policy.act(np.zeros((5, 2)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="layer 1"):
        MLPPolicy(
            weights=[np.ones((3, 4)), np.ones((5, 2))],
            biases=[np.zeros(4), np.zeros(2)],
            observation_size=2,
            latent_size=1,
            input_shift=np.zeros(3),
            input_scale=np.ones(3),
        )
