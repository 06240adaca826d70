"""Online evaluation: known returns, metrics on hand-made episodes, comparisons, bad input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from collect.recipe import load_recipe
from collect.writer import collect
from evaluation.compare import comparison_table, markdown
from evaluation.evaluate import Episodes, roll_out, score
from offline_dynamite.envs.gridworld import GridworldOracle
from offline_dynamite.online import OnlinePolicy
from offline_dynamite.rollout import Rollouts, run_episodes
from tests.helpers import console_script
from tests.test_train import train_in_process

GRID = "dynamite/Gridworld-v0"


class OracleOnHyperStates:
    """A d3rlpy-like ``predict`` that plays the gridworld oracle from ``[s, m]`` hyper-states."""

    def predict(self, hyper_states: np.ndarray) -> np.ndarray:
        return GridworldOracle().act(hyper_states[:, :6], hyper_states[:, 6:])


def test_the_evaluator_on_a_scripted_policy_gives_the_known_return():
    policy = OnlinePolicy(OracleOnHyperStates(), "oracle", gym.spaces.Discrete(5), None)
    evaluated = roll_out(policy, GRID, {}, episodes=10, seed=3, num_envs=4)
    reference = run_episodes(GRID, GridworldOracle(), 10, 3, num_envs=3)
    np.testing.assert_array_equal(evaluated.rollouts.rewards, reference.rewards)
    metrics = score(evaluated, policy, {"ref_min_score": 0.0, "ref_max_score": float(reference.returns.mean())})
    assert metrics["normalised_score_mean"] == pytest.approx(100.0)
    assert metrics["return_mean"] == pytest.approx(reference.returns.mean())


def hand_made_episodes() -> Episodes:
    # Two episodes of 6 steps; episode 0 switches before step 3 (session_start at observation 3).
    session_ids = np.array([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    starts = np.zeros_like(session_ids, dtype=bool)
    starts[:, 0] = True
    starts[0, 3] = True
    rewards = np.array([[1.0, 1, 1, 0, 0, 2], [0, 0, 0, 0, 0, 3]])
    rollouts = Rollouts(rewards=rewards, session_ids=session_ids, latents=np.zeros((2, 7, 1), dtype=np.float32))
    # b_4 is the first belief that saw the switched session's first transition (step 3).
    probability = np.zeros((2, 6))
    probability[0, 4] = 0.9
    return Episodes(rollouts, np.zeros((2, 7, 6)), starts, None, probability)


def test_metrics_on_hand_made_episodes():
    episodes = hand_made_episodes()
    metrics = score(episodes, None, {"ref_min_score": 1.0, "ref_max_score": 5.0})
    assert metrics["return_mean"] == 4.0 and metrics["return_std"] == 1.0
    assert metrics["normalised_score_mean"] == pytest.approx(75.0)  # returns 5 and 3 → 100 and 50
    # Session 0: episode 0 earned 3, episode 1 earned 3; session 1 (episode 0 only): 2.
    assert metrics["return_per_session"] == {"0": 3.0, "1": 2.0}
    assert metrics["sessions_per_episode"] == 1.5


def test_boundary_scores_of_the_online_beliefs():
    from evaluation.evaluate import boundary_metrics

    episodes = hand_made_episodes()
    perfect = boundary_metrics(episodes)
    assert perfect["boundary_precision"] == 1.0 and perfect["boundary_recall"] == 1.0
    late = episodes.boundary_probability.copy()
    late[0, 4], late[0, 5] = 0.0, 0.9  # one step late: wrong exactly, right within 3 steps
    scores = boundary_metrics(Episodes(episodes.rollouts, episodes.observations, episodes.session_starts, None, late))
    assert scores["boundary_precision"] == 0.0 and scores["boundary_precision_within_3"] == 1.0


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("eval")
    os.environ["MINARI_DATASETS_PATH"] = str(root / "minari")
    recipe = load_recipe("dynamite/gridworld/mixed-v0").replace(episodes=40, reference_episodes=2)
    data_file = collect(recipe, root / "minari", workers=1).data_file
    return [train_in_process(data_file, root / "runs", variant=variant, steps=50, belief_steps=20)
            for variant in ("dynamite", "no-belief")]


def run_eval(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([console_script("dynamite-eval"), *arguments], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, check=False)


def test_compare_writes_the_table_and_plots(grid_runs, tmp_path):
    result = run_eval(*map(str, grid_runs), "--episodes", "4", "--num-envs", "2", "--compare", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert {"comparison.md", "comparison.csv", "return_per_session.png", "belief_trace.png"} <= {
        p.name for p in tmp_path.iterdir()}
    lines = (tmp_path / "comparison.md").read_text().splitlines()
    assert len(lines) == 4 and "| dynamite |" in lines[2] + lines[3] and "| no-belief |" in lines[2] + lines[3]
    evaluation = json.loads(next((grid_runs[0] / "evaluations").glob("*.json")).read_text())
    assert evaluation["metrics"]["episodes"] == 4 and "belief_latent_accuracy" in evaluation["metrics"]
    assert 0 <= evaluation["metrics"]["belief_latent_accuracy"] <= 1
    # The same seeds give the same metrics.
    again = run_eval(str(grid_runs[0]), "--episodes", "4", "--num-envs", "4")
    assert again.returncode == 0, again.stderr
    assert json.loads(next((grid_runs[0] / "evaluations").glob("*.json")).read_text()) == evaluation


def test_seeds_of_one_variant_become_one_row():
    evaluation = {"env": GRID, "variant": "dynamite", "algo": "discrete-cql", "env_kwargs": {},
                  "metrics": {"return_mean": 1.0, "return_per_session": {"0": 1.0}}}
    table = comparison_table([evaluation | {"train_seed": 0}, {**evaluation, "train_seed": 1,
                                                                "metrics": {"return_mean": 3.0, "return_per_session": {}}}])
    assert table["seeds"].to_list() == [2] and table["return_mean"].to_list() == [2.0]
    assert "| 2.0 ± 1.0 |" in markdown(table)
    assert "| 1.0 |" in markdown(comparison_table([evaluation | {"train_seed": 0}]))  # one seed: no spread


def test_bad_input_is_one_clear_line(grid_runs, tmp_path):
    import shutil

    corrupted = tmp_path / "corrupted"
    shutil.copytree(grid_runs[1], corrupted)
    (corrupted / "policy.d3").write_bytes((corrupted / "policy.d3").read_bytes()[:100])
    cases = [
        ([str(tmp_path / "missing")], "is not a run folder"),
        ([str(grid_runs[0]), "--env", "reacher"], "evaluate the run in the env its dataset was collected in"),
        ([str(grid_runs[0]), "--env", "nowhere"], "unknown env"),
        ([str(corrupted)], "is missing or corrupted"),
    ]
    for arguments, message in cases:
        result = run_eval(*arguments, "--episodes", "2")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (arguments, result.stderr)


def test_the_experiment_command_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [console_script("dynamite-experiment"), "--env", "gridworld", "--variants", "dynamite,no-belief,oracle",
         "--seeds", "2", "--dataset-episodes", "20", "--belief-steps", "3", "--policy-steps", "5", "--eval-episodes", "4",
         "--switch-probs", "0,0.2", "--root", str(tmp_path / "minari"), "--runs", str(tmp_path / "runs"),
         "--results", str(tmp_path / "results")],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, check=False)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "results" / "gridworld"
    assert {"comparison.md", "comparison.csv", "return_per_session.png", "belief_trace.png", "switch_sweep.png",
            "switch_sweep.md", "experiment.json"} <= {p.name for p in out.iterdir()}
    table = (out / "comparison.md").read_text().splitlines()
    assert len(table) == 2 + 3 and all("| 2 |" in line for line in table[2:])  # 3 variants, 2 seeds each
    assert len((out / "switch_sweep.md").read_text().splitlines()) == 2 + 2 * 3  # 2 probabilities × 3 variants
    record = json.loads((out / "experiment.json").read_text())
    assert record["command"].startswith("dynamite-experiment --env gridworld") and len(record["runs"]) == 6
    assert "dynamite/gridworld/mixed-20ep-v0" in record["dataset"]
    # A second experiment on the same env reuses the dataset; the belief options reach every belief
    # variant, the counterfactual reconstruction only those with session masking.
    again = subprocess.run(
        [console_script("dynamite-experiment"), "--env", "gridworld", "--variants", "dynamite,dynamite-no-session-masking",
         "--seeds", "1", "--dataset-episodes", "20", "--belief-steps", "2", "--policy-steps", "2", "--eval-episodes", "2",
         "--latent", "categorical", "--latent-dim", "2", "--counterfactual-reconstruction",
         "--root", str(tmp_path / "minari"), "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "again")],
        capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "reusing" in again.stdout, again.stderr
    runs = json.loads((tmp_path / "again" / "gridworld" / "experiment.json").read_text())["runs"]
    configs = [json.loads((Path(run) / "run.json").read_text())["belief"]["config"] for run in runs]
    assert [config["latent"] for config in configs] == ["categorical", "categorical"]
    assert [config["counterfactual_reconstruction"] for config in configs] == [True, False]


def test_the_experiment_command_refuses_bad_flags(tmp_path):
    for arguments, message in ((["--env", "pong"], "unknown env"), (["--env", "gridworld", "--variants", "dynamite,bayes"],
                                                                     "unknown variant 'bayes'"),
                               (["--env", "gridworld", "--switch-probs", "0,2"], "switch probabilities must be in [0, 1]"),
                               (["--env", "gridworld", "--latent", "dirichlet"], "unknown latent kind 'dirichlet'"),
                               (["--env", "gridworld", "--latent", "categorical", "--latent-dim", "1"],
                                "at least 2 classes")):
        result = subprocess.run([console_script("dynamite-experiment"), *arguments, "--root", str(tmp_path)],
                                capture_output=True, text=True, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (arguments, result.stderr)
    assert list(tmp_path.iterdir()) == []
