"""Policy learning on beliefs: hyper-states, relabelling, the online policy, run folders, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from collect.recipe import load_recipe
from collect.writer import collect
from offline_dynamite.belief.model import to_tensors
from offline_dynamite.belief.trainer import (
    BeliefTrainConfig,
    load_checkpoint,
    model_from_checkpoint,
    reward_function_of,
)
from offline_dynamite.data import load_flat, sequence_batch
from offline_dynamite.online import ClosedLoopPolicy, OnlinePolicy
from offline_dynamite.rollout import run_episodes
from offline_dynamite.train import hyperstates, runs
from offline_dynamite.train.config import PolicyTrainConfig
from offline_dynamite.train.trainer import PolicyTrainer
from tests.helpers import bad_datasets, console_script

ABLATIONS = ("--no-consistency", "--no-latent-conditioning", "--no-session-masking")
VARIANTS = [("--variant", name) for name in ("dynamite", "varibad", "no-belief", "oracle")] + [(flag,) for flag in ABLATIONS]
TINY = ("--belief-steps", "3", "--steps", "4")
CATEGORICAL = {"latent": "categorical", "latent_dim": 2, "counterfactual_reconstruction": True}


@pytest.fixture(scope="module")
def grid_dataset(tmp_path_factory) -> Path:
    recipe = load_recipe("dynamite/gridworld/mixed-v0").replace(episodes=40, reference_episodes=2)
    return collect(recipe, tmp_path_factory.mktemp("grid"), workers=1).data_file


@pytest.fixture(scope="module")
def reacher_dataset(tmp_path_factory) -> Path:
    recipe = load_recipe("dynamite/reacher/mixed-v0").replace(episodes=16, reference_episodes=2)
    return collect(recipe, tmp_path_factory.mktemp("reacher"), workers=1).data_file


def train_in_process(dataset: Path, out: Path, variant: str = "dynamite", steps: int = 6, belief_steps: int = 4,
                     belief_fields: dict | None = None, **policy) -> Path:
    run = runs.new_train_run(str(dataset), out, variant=variant, belief_fields=belief_fields or {}, belief=None,
                             ablations=dict.fromkeys(runs.ABLATIONS, True),
                             belief_train_config=BeliefTrainConfig(steps=belief_steps, batch_size=8),
                             policy_config=PolicyTrainConfig(steps=steps, batch_size=32, **policy))
    from rich.console import Console

    runs.execute(run, Console(quiet=True))
    return run.run_dir


def run_offline(*arguments: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([console_script("dynamite-offline"), *arguments], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, **kwargs)


# ---------------------------------------------------------------------------- hyper-states
def test_hyper_states_are_the_state_and_what_each_variant_adds(grid_dataset, tmp_path):
    flat = load_flat(grid_dataset)
    run_dir = train_in_process(grid_dataset, tmp_path)
    model = model_from_checkpoint(load_checkpoint(run_dir / "belief" / "belief.pt"))
    states = {variant: hyperstates.hyper_states(flat, variant, model) for variant in ("no-belief", "oracle", "dynamite")}
    np.testing.assert_array_equal(states["no-belief"], flat.observations)
    np.testing.assert_array_equal(states["oracle"][:, 6:], flat.infos["latent"])
    features = hyperstates.encode_dataset(model, flat)
    np.testing.assert_array_equal(states["dynamite"], np.concatenate([flat.observations, features], axis=1))
    # Row e of the flat beliefs is the belief the model gives episode e alone.
    with torch.no_grad():
        alone = model.encode(to_tensors(sequence_batch(flat, np.array([7]))))
    first = flat.episode_starts[7] + 7
    np.testing.assert_allclose(features[first : first + flat.episode_lengths[7] + 1], alone.parameters[0].numpy(), atol=1e-6)
    assert json.loads((run_dir / "run.json").read_text())["hyper_state"] == [
        ["observation", 6], ["belief_mu", 5], ["belief_logvar", 5]]


def test_policy_relabelling_appends_real_behaviour_with_the_envs_rewards(grid_dataset):
    flat = load_flat(grid_dataset)
    reward = reward_function_of(flat)
    relabelled = hyperstates.add_relabelled_episodes(flat, 0.5, reward, np.random.default_rng(0))
    extra = relabelled.num_episodes - flat.num_episodes
    assert extra == 20 and relabelled.num_transitions == flat.num_transitions + extra * 60
    new = slice(flat.num_transitions, None)
    starts = relabelled.observation_rows()[new]
    latents = relabelled.infos["latent"][starts]
    recomputed = reward(relabelled.observations[starts], relabelled.actions[new], relabelled.observations[starts + 1], latents)
    np.testing.assert_array_equal(relabelled.rewards[new], recomputed)
    # The reward function is the env's: on the recorded transitions it gives the recorded rewards.
    recorded = flat.observation_rows()
    np.testing.assert_allclose(reward(flat.observations[recorded], flat.actions, flat.observations[recorded + 1],
                                      flat.infos["latent"][recorded]), flat.rewards)
    # Each appended episode replays a recorded one (same observations and actions) under another
    # episode's latents, which pay differently for the same behaviour.
    episode_of = {flat.observations[flat.episode_starts[e] + e : flat.episode_starts[e + 1] + e + 1].tobytes(): e
                  for e in range(flat.num_episodes)}
    changed = 0
    for e in range(flat.num_episodes, relabelled.num_episodes):
        rows = slice(relabelled.episode_starts[e] + e, relabelled.episode_starts[e + 1] + e + 1)
        source = episode_of[relabelled.observations[rows].tobytes()]
        steps = slice(relabelled.episode_starts[e], relabelled.episode_starts[e + 1])
        np.testing.assert_array_equal(relabelled.actions[steps], flat.actions[flat.episode_starts[source] : flat.episode_starts[source + 1]])
        changed += not np.array_equal(relabelled.rewards[steps], flat.rewards[flat.episode_starts[source] : flat.episode_starts[source + 1]])
    assert changed > extra // 2, changed


def test_sampled_batches_are_dataset_transitions_including_truncated_ends(grid_dataset):
    flat = load_flat(grid_dataset)
    states = np.arange(len(flat.observations), dtype=np.float32)[:, None]  # each row names itself
    sampler = hyperstates.TransitionSampler(flat, states, discrete_action_start=0)
    batch = sampler.sample(4096, np.random.default_rng(0))
    indices = batch.observations[:, 0].astype(np.int64)
    np.testing.assert_array_equal(batch.next_observations[:, 0], indices + 1)
    last_steps = np.isin(indices, flat.episode_starts[1:] - 1 + np.arange(flat.num_episodes))
    assert last_steps.any(), "truncated episode ends must be sampled too (d3rlpy's MDPDataset drops them)"
    transition = indices - np.searchsorted(flat.episode_starts + np.arange(flat.num_episodes + 1), indices, side="right") + 1
    np.testing.assert_array_equal(batch.actions[:, 0], flat.actions[transition])
    np.testing.assert_array_equal(batch.rewards[:, 0], flat.rewards[transition].astype(np.float32))
    again = hyperstates.TransitionSampler(flat, states, 0).sample(4096, np.random.default_rng(0))
    np.testing.assert_array_equal(again.observations, batch.observations)


# ---------------------------------------------------------------------------- the online policy
@pytest.mark.parametrize("belief_fields", [{}, CATEGORICAL], ids=["gaussian", "categorical"])
def test_online_beliefs_equal_the_relabelled_datasets(belief_fields, grid_dataset, tmp_path):
    flat = load_flat(grid_dataset)
    run_dir = train_in_process(grid_dataset, tmp_path, belief_steps=30, belief_fields=belief_fields)
    policy = OnlinePolicy.load(run_dir)
    with torch.no_grad():  # a barely trained head rarely fires: centre it, to cover online session switches
        logits = policy.belief_model.encode(to_tensors(sequence_batch(flat, np.arange(10)))).termination_logits
        policy.belief_model.termination_head.bias -= logits.median()
    expected = hyperstates.hyper_states(flat, "dynamite", policy.belief_model)
    episodes = [3, 11]
    policy.reset(len(episodes))
    starts = flat.episode_starts[episodes]
    boundaries = []
    for t in range(flat.episode_lengths[3] + 1):
        observations = flat.observations[starts + episodes + t]
        previous = (None, None) if t == 0 else (flat.actions[starts + t - 1], flat.rewards[starts + t - 1])
        online = policy.observe(observations, *previous)
        np.testing.assert_allclose(online, expected[starts + episodes + t], atol=2e-5)
        boundaries.append(policy.boundary_probability > 0.5)
    assert 0 < np.mean(boundaries[2:]) < 1, "the test should cover detected session boundaries"


def test_a_reloaded_run_gives_identical_actions(grid_dataset, tmp_path):
    run_dir = train_in_process(grid_dataset, tmp_path, steps=100)
    first, second = OnlinePolicy.load(run_dir), OnlinePolicy.load(run_dir)
    states = hyperstates.hyper_states(load_flat(grid_dataset), "dynamite", first.belief_model)
    actions = first.predict(states)
    np.testing.assert_array_equal(actions, second.predict(states))
    assert len(np.unique(actions)) > 1  # a trained, not a constant, policy
    # Driven through seeded roll-outs, two loads play identical episodes.
    results = [run_episodes("dynamite/Gridworld-v0", ClosedLoopPolicy(OnlinePolicy.load(run_dir)), 4, 0, 2, {})
               for _ in range(2)]
    np.testing.assert_array_equal(results[0].rewards, results[1].rewards)


def test_the_oracle_variant_acts_on_true_latents_and_refuses_without(grid_dataset, tmp_path):
    policy = OnlinePolicy.load(train_in_process(grid_dataset, tmp_path, variant="oracle"))
    policy.reset(2)
    observations = load_flat(grid_dataset).observations[:2]
    with pytest.raises(ValueError, match="pass latents="):
        policy.act(observations)
    assert policy.act(observations, latents=np.array([[0.0], [1.0]])).shape == (2,)


def test_policy_resume_continues_exactly(grid_dataset):
    flat = load_flat(grid_dataset)
    sampler = hyperstates.TransitionSampler(flat, flat.observations, 0)
    config = PolicyTrainConfig(algo="discrete-cql", steps=8, batch_size=32, seed=2)
    straight = PolicyTrainer(sampler, gym.spaces.Discrete(5), config)
    for _ in range(8):
        straight.train_step()
    interrupted = PolicyTrainer(sampler, gym.spaces.Discrete(5), config)
    for _ in range(4):
        interrupted.train_step()
    path = Path(os.environ["MINARI_DATASETS_PATH"]).parent / "policy_checkpoint.pt"
    interrupted.save(path)
    resumed = PolicyTrainer(sampler, gym.spaces.Discrete(5), config)
    resumed.restore(path)
    for _ in range(4):
        resumed.train_step()
    states = flat.observations[:200]
    for name, value in straight.algo.impl.q_function.state_dict().items():
        torch.testing.assert_close(resumed.algo.impl.q_function.state_dict()[name], value, rtol=0, atol=0, msg=name)
    np.testing.assert_array_equal(straight.algo.predict(states), resumed.algo.predict(states))


# ---------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v[-1])
@pytest.mark.parametrize("data", ["grid_dataset", "reacher_dataset"])
def test_every_variant_trains_from_the_command_line(variant, data, request, tmp_path):
    dataset = request.getfixturevalue(data)
    result = run_offline("train", str(dataset), *variant, *TINY, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run_dir,) = tmp_path.iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    algo = "discrete-cql" if data == "grid_dataset" else "iql"
    name = variant[-1] if variant[0] == "--variant" else f"dynamite-{variant[0].removeprefix('--')}"
    assert run_dir.name.startswith(f"{'gridworld' if data == 'grid_dataset' else 'reacher'}__{name}__{algo}__seed0__")
    assert record["status"] == "complete" and record["step"] == 4 and record["variant"] == name
    assert record["dataset"]["sha256"] == load_flat(dataset).content_hasher().hexdigest()
    assert set(record["timings"]) == ({"relabel_s", "policy_s"} | ({"belief_s"} if record["belief"] else set()))
    assert {"policy.d3", "metrics.csv", "policy_checkpoint.pt"} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / "belief" / "belief.pt").is_file() == (name not in ("no-belief", "oracle"))
    result = run_episodes(json.loads(record["env_spec"])["id"], ClosedLoopPolicy(OnlinePolicy.load(run_dir)), 2, 0, 2, {})
    assert np.isfinite(result.returns).all()


def test_a_categorical_counterfactual_belief_trains_and_evaluates_from_the_command_line(grid_dataset, tmp_path):
    result = run_offline("train", str(grid_dataset), "--latent", "categorical", "--latent-dim", "2",
                         "--counterfactual-reconstruction", *TINY, "--out", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("gridworld__dynamite-categorical-counterfactual__discrete-cql__seed0__")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["hyper_state"] == [["observation", 6], ["belief_probabilities", 2]]
    config = load_checkpoint(run_dir / "belief" / "belief.pt")["belief_config"]
    assert config["latent"] == "categorical" and config["counterfactual_reconstruction"] is True
    policy = OnlinePolicy.load(run_dir)
    policy.reset(3)
    states = policy.observe(load_flat(grid_dataset).observations[:3])
    np.testing.assert_allclose(states[:, 6:].sum(axis=1), 1.0, rtol=1e-6)  # the class probabilities
    evaluation = subprocess.run([console_script("dynamite-eval"), str(run_dir), "--episodes", "4", "--num-envs", "2"],
                                capture_output=True, text=True)
    assert evaluation.returncode == 0, evaluation.stderr
    (written,) = (run_dir / "evaluations").iterdir()
    assert "belief_latent_accuracy" in json.loads(written.read_text())["metrics"]


def test_cql_on_continuous_actions_and_a_given_belief(reacher_dataset, tmp_path):
    result = run_offline("train", str(reacher_dataset), "--algo", "cql", *TINY, "--out", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr
    (first,) = (tmp_path / "a").iterdir()
    result = run_offline("train", str(reacher_dataset), "--belief", str(first), "--steps", "3", "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    (second,) = (tmp_path / "b").iterdir()
    record = json.loads((second / "run.json").read_text())
    assert record["variant"] == "dynamite" and record["belief"]["source"] == str(first)
    assert "belief_s" not in record["timings"]
    assert (second / "belief" / "belief.pt").read_bytes() == (first / "belief" / "belief.pt").read_bytes()


def test_resumed_run_equals_an_uninterrupted_one(grid_dataset, tmp_path):
    straight = run_offline("train", str(grid_dataset), "--belief-steps", "3", "--steps", "8", "--out", str(tmp_path / "a"))
    assert straight.returncode == 0, straight.stderr
    short = run_offline("train", str(grid_dataset), "--belief-steps", "3", "--steps", "4", "--out", str(tmp_path / "b"))
    assert short.returncode == 0, short.stderr
    (first,), (second,) = (tmp_path / "a").iterdir(), (tmp_path / "b").iterdir()
    resumed = run_offline("train", "--resume", str(second), "--steps", "8")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((second / "run.json").read_text())["step"] == 8
    states = hyperstates.hyper_states(load_flat(grid_dataset), "dynamite", OnlinePolicy.load(first).belief_model)
    np.testing.assert_array_equal(OnlinePolicy.load(first).predict(states), OnlinePolicy.load(second).predict(states))


def test_ctrl_c_leaves_a_resumable_run(grid_dataset, tmp_path):
    process = subprocess.Popen([console_script("dynamite-offline"), "train", str(grid_dataset), "--variant", "no-belief",
                                "--steps", "1000000", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records = list(tmp_path.glob("*/metrics.csv"))
        if records:
            break
        time.sleep(0.2)
    assert records, "the policy never started"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "continue with: dynamite-offline train --resume" in stderr.strip().splitlines()[-1]
    run_dir = records[0].parent
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and record["step"] > 0
    with pytest.raises(ValueError, match="not complete"):
        OnlinePolicy.load(run_dir)
    resumed = run_offline("train", "--resume", str(run_dir), "--steps", str(record["step"] + 3))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    OnlinePolicy.load(run_dir)


def test_bad_input_is_one_clear_line_and_no_run_folder(grid_dataset, tmp_path):
    bad = bad_datasets(grid_dataset, tmp_path)
    not_hdf5, not_minari, unlabelled = bad["not_hdf5"], bad["not_minari"], bad["unlabelled"]
    unknown_env = tmp_path / "unknown-env"
    __import__("shutil").copytree(grid_dataset.parent, unknown_env)
    metadata = json.loads((unknown_env / "metadata.json").read_text())
    spec = json.loads(metadata["env_spec"])
    metadata["env_spec"] = json.dumps({**spec, "id": "someone/Unknown-v0", "entry_point": "nowhere:Env"})
    (unknown_env / "metadata.json").write_text(json.dumps(metadata))
    cases = [
        ([str(not_hdf5)], "is not an HDF5 file"),
        ([str(not_minari)], "is not a Minari dataset"),
        ([str(unlabelled)], "has no session labels"),
        ([str(unlabelled), "--variant", "oracle"], "has no session labels"),
        ([str(unknown_env)], "needs the dataset's env and its reward()"),
        ([str(grid_dataset), "--algo", "cql"], "cql is for continuous actions"),
        ([str(grid_dataset), "--algo", "sac"], "unknown algorithm 'sac'"),
        ([str(grid_dataset), "--variant", "transformer"], "unknown variant"),
        ([str(grid_dataset), "--variant", "no-belief", "--no-consistency"], "ablation flags apply to the dynamite"),
        ([str(grid_dataset), "--belief", str(tmp_path / "nothing")], "no belief checkpoint there"),
        ([str(grid_dataset), "--belief", str(tmp_path / "nothing"), "--latent", "categorical"],
         "--belief gives a trained one"),
        ([str(grid_dataset), "--latent", "dirichlet"], "unknown latent kind 'dirichlet'"),
        ([str(grid_dataset), "--latent", "categorical", "--latent-dim", "1"], "at least 2 classes"),
        ([str(grid_dataset), "--counterfactual-reconstruction", "--no-session-masking"], "extends session masking"),
        ([str(grid_dataset), "--variant", "varibad", "--counterfactual-reconstruction"], "extends session masking"),
        ([str(unknown_env), "--relabel-fraction", "0", "--counterfactual-reconstruction"],
         "pass --no-counterfactual-reconstruction"),
        (["--resume", str(tmp_path)], "is not a run folder"),
    ]
    for arguments, message in cases:
        result = run_offline("train", *arguments, *TINY, "--out", str(tmp_path / "runs"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (arguments, result.stderr)
    assert not (tmp_path / "runs").exists()
    # What the variants without a belief need, an unlabelled dataset has.
    result = run_offline("train", str(unlabelled), "--variant", "no-belief", *TINY, "--out", str(tmp_path / "ok"))
    assert result.returncode == 0, result.stderr


def test_a_non_finite_policy_loss_stops_training(grid_dataset):
    from offline_dynamite.belief.trainer import TrainingDiverged

    flat = load_flat(grid_dataset)
    trainer = PolicyTrainer(hyperstates.TransitionSampler(flat, flat.observations, 0), gym.spaces.Discrete(5),
                            PolicyTrainConfig(algo="discrete-cql", steps=4, batch_size=32))
    trainer.train_step()
    with torch.no_grad():
        next(trainer.algo.impl.q_function.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="at update 2"):
        trainer.train_step()
    assert trainer.step == 1
