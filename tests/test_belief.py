"""The belief model: its losses on hand-built batches, checkpoints, resume, learning, bad input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from collect.recipe import load_recipe
from collect.writer import collect
from offline_dynamite.belief import losses
from offline_dynamite.belief.config import BeliefConfig, belief_config_for, variant_name
from offline_dynamite.belief.latents import CategoricalLatent, CategoricalTransition, GaussianLatent
from offline_dynamite.belief.model import Batch, BeliefModel, DataSpec, to_tensors
from offline_dynamite.belief.trainer import (
    BeliefTrainConfig,
    BeliefTrainer,
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
)
from offline_dynamite.data import load_flat, sequence_batch
from tests.helpers import bad_datasets, console_script

SPEC = DataSpec(observation_size=3, action_size=2, discrete_actions=False)


def hand_batch(lengths=(8, 5), sessions=((0, 0, 0, 1, 1, 1, 2, 2, 2), (0, 0, 1, 1, 1, 1, 0, 0, 0)),
               padding: float = 0.0, seed: int = 0) -> Batch:
    """Two sequences; entries past each length are set to ``padding``."""
    rng = np.random.default_rng(seed)
    horizon = max(lengths)
    observations = rng.normal(size=(2, horizon + 1, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(2, horizon, 2)).astype(np.float32)
    rewards = rng.normal(size=(2, horizon))
    session_ids = np.array(sessions, dtype=np.int64)[:, : horizon + 1]
    starts = np.zeros_like(session_ids, dtype=bool)
    starts[:, 0] = True
    starts[:, 1:] = session_ids[:, 1:] != session_ids[:, :-1]
    # The reward of every transition under each session's latent (the counterfactual targets).
    session_rewards = rng.normal(size=(2, int(session_ids.max()) + 1, horizon))
    for row, length in enumerate(lengths):
        observations[row, length + 1:] = padding
        actions[row, length:] = padding
        rewards[row, length:] = padding
        session_rewards[row, :, length:] = padding
    return Batch(torch.from_numpy(observations), torch.from_numpy(actions), torch.from_numpy(rewards),
                 torch.tensor(lengths), torch.from_numpy(session_ids), torch.from_numpy(starts),
                 torch.from_numpy(session_rewards))


def model(config: BeliefConfig, seed: int = 0) -> BeliefModel:
    torch.manual_seed(seed)
    return BeliefModel(config, SPEC)


# ---------------------------------------------------------------------------- the objective
@pytest.mark.parametrize("masking", [True, False])
def test_masked_reconstruction_gets_no_gradient_from_other_sessions(masking):
    net = model(BeliefConfig(session_masking=masking))
    batch = hand_batch()
    batch.rewards.requires_grad_(True)
    observations, actions, rewards = net._sanitise(batch)
    hidden = net.hidden_states(observations, actions, rewards)
    sessions = losses.belief_sessions(batch.session_ids)
    beliefs = net.beliefs(hidden, batch.lengths, sessions)
    pairs = losses.reconstruction_pairs(beliefs.sessions, batch.lengths, batch.session_ids, masking)
    per_belief = net.reconstruction_errors(beliefs.parameters, observations, actions, rewards, pairs, sample=False)
    # Belief 2 of sequence 0 has seen transitions 0 and 1 (session 0); session 0 is transitions 0-2.
    per_belief[0, 2].backward()
    gradient = batch.rewards.grad[0]
    assert (gradient[:3] != 0).all()
    other_sessions = gradient[3:8]
    assert (other_sessions == 0).all() if masking else (other_sessions != 0).all()
    # Σ over sessions of (beliefs tracking it) × (its transitions): sequence 0 has sessions of
    # 4, 3, 2 beliefs and 3, 3, 2 transitions, sequence 1 of 3, 3 beliefs and 2, 3 transitions.
    expected = (4 * 3 + 3 * 3 + 2 * 2) + (3 * 2 + 3 * 3) if masking else 9 * 8 + 6 * 5
    assert pairs.sum().item() == expected


def test_consistency_is_zero_when_delta_falls_and_positive_when_it_rises():
    sessions = torch.zeros(1, 4, dtype=torch.long)
    valid = torch.ones(1, 4, dtype=torch.bool)
    kl = GaussianLatent(1).kl

    def penalty(means: list[float], sessions: torch.Tensor) -> float:
        parameters = torch.tensor([[[mean, 0.0] for mean in means]])  # (μ, log σ² = 0)
        return losses.consistency_penalty(parameters, sessions, valid, kl).item()

    assert penalty([3.0, 2.0, 1.0, 0.0], sessions) == 0  # KL to the last belief falls
    assert penalty([1.0, 2.0, 1.5, 0.0], sessions) == pytest.approx(1.5 / 3)  # δ: 0.5, 2, 1.125, 0: one rise of 1.5
    # A rise across a session boundary is not a rise within a session.
    assert penalty([0.5, 0.0, 5.0, 0.0], torch.tensor([[0, 0, 1, 1]])) == 0


CATEGORICAL = BeliefConfig(latent="categorical", latent_dim=3, counterfactual_reconstruction=True)


@pytest.mark.parametrize("config", [BeliefConfig(), BeliefConfig.varibad(), CATEGORICAL],
                         ids=["dynamite", "varibad", "categorical-counterfactual"])
def test_padding_values_never_change_the_loss(config):
    def loss_and_gradients(padding):
        net = model(config)
        torch.manual_seed(1)
        terms = net.loss(hand_batch(padding=padding))
        terms["total"].backward()
        return terms, [p.grad.clone() for p in net.parameters() if p.grad is not None]

    clean_terms, clean_grads = loss_and_gradients(0.0)
    for padding in (1e6, float("nan")):
        terms, grads = loss_and_gradients(padding)
        for key in clean_terms:
            assert torch.equal(terms[key], clean_terms[key]), key
        for grad, clean in zip(grads, clean_grads):
            assert torch.equal(grad, clean)


def test_with_every_switch_off_the_loss_is_varibads_elbo_written_out():
    config = BeliefConfig.varibad(kl_weight=0.3)
    net = model(config)
    batch = hand_batch()
    torch.manual_seed(5)
    terms = net.loss(batch)

    # VariBAD, step by step: belief t = head(GRU(s_≤t, a_<t, r_<t)); one sample per belief decodes
    # every transition of its trajectory; KL to the previous belief, N(0, I) before any.
    observations, actions, rewards = net._sanitise(batch)
    hidden = net.hidden_states(observations, actions, rewards)
    mu, logvar = net.belief_head(hidden).chunk(2, dim=-1)
    torch.manual_seed(5)
    samples = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    reconstruction_terms, kl_terms = [], []
    for b, length in enumerate(batch.lengths.tolist()):
        for t in range(length + 1):
            errors = []
            for j in range(length):
                predicted = net.reward_decoder(samples[b, t], observations[b, j + 1])  # p(r_j | m, s_{j+1})
                errors.append((predicted - rewards[b, j]) ** 2)
            reconstruction_terms.append(torch.stack(errors).mean())
            prior_mu = mu[b, t - 1] if t else torch.zeros_like(mu[b, t])
            prior_logvar = logvar[b, t - 1] if t else torch.zeros_like(logvar[b, t])
            kl = 0.5 * (prior_logvar - logvar[b, t] + (logvar[b, t].exp() + (mu[b, t] - prior_mu) ** 2)
                        / prior_logvar.exp() - 1).sum()
            kl_terms.append(kl)
    reconstruction = torch.stack(reconstruction_terms).mean()
    kl = torch.stack(kl_terms).mean()
    torch.testing.assert_close(terms["reconstruction"], reconstruction)
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["total"], reconstruction + 0.3 * kl)
    assert set(terms) == {"reconstruction", "kl", "total", "decoded_pairs"}


def test_categorical_beliefs_written_out():
    """KL, the transition prior and the exact expected reconstruction of a categorical belief."""
    latent = CategoricalLatent(3)
    q, p = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.2, 0.3, 0.5])
    torch.testing.assert_close(latent.kl(q.log(), p.log()), (q * (q / p).log()).sum())
    assert latent.kl(q.log(), q.log()).item() == pytest.approx(0.0, abs=1e-7)
    transition = CategoricalTransition(3)
    with torch.no_grad():
        transition.logits.copy_(torch.randn(3, 3))
    logits = torch.randn(3)
    expected = torch.softmax(logits, -1) @ torch.softmax(transition.logits, -1)  # Σ_c q(c) T[c, ·]
    torch.testing.assert_close(transition(logits).exp(), expected)
    valid = torch.ones(1, 2, dtype=torch.bool)
    one_class = torch.tensor([[[0.0, -30.0, -30.0], [0.0, -30.0, -30.0]]])
    assert latent.class_balance(one_class, valid).item() == pytest.approx(np.log(3), abs=1e-6)
    balanced = torch.tensor([[[0.0, -30.0, -30.0], [-30.0, 0.0, -30.0]]]).log_softmax(-1)
    assert latent.class_balance(balanced, valid).item() == pytest.approx(np.log(3 / 2), abs=1e-6)

    net = model(CATEGORICAL)
    batch = hand_batch()
    observations, actions, rewards = net._sanitise(batch)
    beliefs = net.beliefs(net.hidden_states(observations, actions, rewards), batch.lengths,
                          losses.belief_sessions(batch.session_ids))
    pairs = losses.reconstruction_pairs(beliefs.sessions, batch.lengths, batch.session_ids, masking=False)
    per_belief = net.reconstruction_errors(beliefs.parameters, observations, actions, rewards, pairs)
    b, t = 1, 4
    probabilities = beliefs.parameters[b, t].exp()
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0))
    errors = []
    for j in range(int(batch.lengths[b])):
        per_class = torch.stack([net.reward_decoder(F.one_hot(torch.tensor(c), 3).float(), observations[b, j + 1])
                                 for c in range(3)])
        errors.append((probabilities * (per_class - rewards[b, j]) ** 2).sum())
    torch.testing.assert_close(per_belief[b, t], torch.stack(errors).mean())


def test_counterfactual_reconstruction_decodes_the_episode_under_each_beliefs_session():
    batch = hand_batch()
    net = model(BeliefConfig(counterfactual_reconstruction=True))
    terms = net.loss(batch)
    # Every belief decodes every transition of its sequence, not only its session's.
    assert terms["decoded_pairs"].item() == 9 * 8 + 6 * 5
    # Pair (t, j) targets the reward of j under the latent of t's session.
    observations, actions, rewards = net._sanitise(batch)
    beliefs = net.beliefs(net.hidden_states(observations, actions, rewards), batch.lengths,
                          losses.belief_sessions(batch.session_ids))
    pairs = losses.reconstruction_pairs(beliefs.sessions, batch.lengths, batch.session_ids, masking=False)
    targets = batch.session_rewards.float() / net.reward_scale
    counterfactual = net.reconstruction_errors(beliefs.parameters, observations, actions, rewards, pairs, targets,
                                               beliefs.sessions, sample=False)
    b, t = 0, 5  # belief 5 of sequence 0 tracks session 1
    assert beliefs.sessions[b, t] == 1
    predicted = net.reward_decoder(beliefs.mu[b, t], observations[b, 1:9])
    torch.testing.assert_close(counterfactual[b, t], ((predicted - targets[b, 1, :8]) ** 2).mean())


def test_session_rewards_are_the_envs_rewards_under_each_sessions_latent(grid_dataset):
    import gymnasium as gym

    from offline_dynamite.belief.trainer import reward_function_of, session_rewards

    flat = load_flat(grid_dataset)
    sequences = sequence_batch(flat, np.arange(16))
    table = session_rewards(sequences, reward_function_of(flat))
    env = gym.make("dynamite/Gridworld-v0").unwrapped
    rows, steps = np.arange(16)[:, None], np.arange(sequences.actions.shape[1])[None]
    valid = steps < sequences.lengths[:, None]
    own = table[rows, sequences.session_ids[:, :-1], steps]
    np.testing.assert_array_equal(own[valid], sequences.rewards[valid])  # own session: the reward received
    switched = [row for row in range(16) if sequences.session_ids[row].max() > 0]
    assert switched
    for row in switched:
        first_session_latent = sequences.latents[row, 0]
        expected = env.reward(sequences.observations[row, :-1], sequences.actions[row], sequences.observations[row, 1:],
                              np.broadcast_to(first_session_latent, sequences.latents[row, :-1].shape))
        length = sequences.lengths[row]
        np.testing.assert_array_equal(table[row, 0, :length], expected[:length])


def test_latent_conditioning_uses_the_dynamics_prior_at_session_starts():
    net = model(BeliefConfig())
    batch = hand_batch()
    observations, actions, rewards = net._sanitise(batch)
    hidden = net.hidden_states(observations, actions, rewards)
    beliefs = net.beliefs(hidden, batch.lengths, losses.belief_sessions(batch.session_ids))
    # Sequence 0: transitions 0-2 in session 0, 3-5 in 1; belief 4 is the first to see session 1.
    expected = net.latent_dynamics(torch.cat([beliefs.mu[0, 3], beliefs.logvar[0, 3]]))
    torch.testing.assert_close(beliefs.session_prior[0, 4], expected)
    new_session = losses.new_session_flags(beliefs.sessions)
    assert new_session[0].tolist() == [False, False, False, False, True, False, False, True, False]


# ---------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def grid_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("belief-data")
    recipe = load_recipe("dynamite/gridworld/mixed-v0").replace(episodes=400, reference_episodes=4)
    return collect(recipe, root, workers=1).data_file


def test_sequence_batches_match_the_episodes(grid_dataset):
    import minari  # the reference reader

    flat = load_flat(grid_dataset)
    episodes = np.array([3, 0, 17])
    batch = sequence_batch(flat, episodes)
    os.environ["MINARI_DATASETS_PATH"] = str(grid_dataset.parents[4])
    dataset = minari.load_dataset(flat.dataset_id)
    for row, episode in enumerate(episodes):
        reference = dataset[int(episode)]
        np.testing.assert_array_equal(batch.observations[row], reference.observations)
        np.testing.assert_array_equal(batch.actions[row], reference.actions)
        np.testing.assert_array_equal(batch.session_ids[row], reference.infos["session_id"])
        np.testing.assert_array_equal(batch.latents[row], reference.infos["latent"])


def small_trainer(path: Path, config: BeliefConfig | None = None, steps: int = 6) -> BeliefTrainer:
    train_config = BeliefTrainConfig(steps=steps, batch_size=8, seed=3, log_every=2, checkpoint_every=3)
    return BeliefTrainer(load_flat(path), config or BeliefConfig(), train_config)


def test_checkpoint_round_trip_gives_identical_beliefs(grid_dataset, tmp_path):
    trainer = small_trainer(grid_dataset)
    for _ in range(3):
        trainer.train_step()
    trainer.save(tmp_path / "belief.pt")
    reloaded = model_from_checkpoint(load_checkpoint(tmp_path / "belief.pt"))
    batch = to_tensors(sequence_batch(trainer.flat, np.arange(10)))
    trainer.model.eval()
    with torch.no_grad():
        original, restored = trainer.model.encode(batch), reloaded.encode(batch)
    assert torch.equal(original.mu, restored.mu) and torch.equal(original.logvar, restored.logvar)
    assert torch.equal(original.termination_logits, restored.termination_logits)


def test_resume_continues_exactly(grid_dataset, tmp_path):
    straight = small_trainer(grid_dataset)
    for _ in range(6):
        straight.train_step()
    first_half = small_trainer(grid_dataset)
    for _ in range(3):
        first_half.train_step()
    first_half.save(tmp_path / "belief.pt")
    second_half = small_trainer(grid_dataset)
    second_half.restore(load_checkpoint(tmp_path / "belief.pt"))
    for _ in range(3):
        second_half.train_step()
    for name, parameter in straight.model.state_dict().items():
        assert torch.equal(parameter, second_half.model.state_dict()[name]), name


def test_reward_relabelling_swaps_latents_and_recomputes_rewards(grid_dataset):
    import gymnasium as gym

    from offline_dynamite.belief.trainer import relabel_rewards, reward_function_of

    flat = load_flat(grid_dataset)
    sequences = sequence_batch(flat, np.arange(16))
    reward = reward_function_of(flat)
    relabelled = relabel_rewards(sequences, reward, 1.0, np.random.default_rng(0))
    changed = ~(relabelled.latents == sequences.latents).all(axis=(1, 2))
    assert changed.sum() >= 8
    env = gym.make("dynamite/Gridworld-v0").unwrapped
    expected = env.reward(sequences.observations[:, :-1], sequences.actions, sequences.observations[:, 1:],
                          relabelled.latents[:, :-1])
    np.testing.assert_array_equal(relabelled.rewards, expected)
    # Each row took another row's whole latent and session sequence.
    for row in np.flatnonzero(changed):
        donors = [d for d in range(16) if (sequences.latents[d] == relabelled.latents[row]).all()
                  and (sequences.session_ids[d] == relabelled.session_ids[row]).all()]
        assert donors


@torch.no_grad()
def paying_goal_accuracy(net: BeliefModel, flat, episodes: np.ndarray) -> tuple[float, float]:
    """Does the belief know which gridworld goal pays? Ask its own reward decoder about standing
    on goal 0 and on goal 1, and take the goal it expects to pay more. Scored on the steps whose
    session has already visited a goal (before that, nothing in the session shows the latent);
    returns (accuracy, accuracy in sessions after the first switch)."""
    net.eval()
    sequences = sequence_batch(flat, episodes)
    beliefs = net.encode(to_tensors(sequences))
    observations = torch.from_numpy(sequences.observations[:, :-1]).float()
    expected = []
    for goal in (0, 1):
        on_goal = observations.clone()
        on_goal[..., 0:2] = observations[..., 2 + 2 * goal : 4 + 2 * goal]
        expected.append(net.reward_decoder(beliefs.mu[:, :-1], net._observations(on_goal)))
    chosen = (expected[1] > expected[0]).numpy()
    sessions = sequences.session_ids[:, :-1]
    visited = np.zeros_like(sequences.rewards, dtype=bool)  # a goal visit earlier in this session
    for t in range(1, visited.shape[1]):
        visited[:, t] = (visited[:, t - 1] | (sequences.rewards[:, t - 1] >= 0)) & (sessions[:, t] == sessions[:, t - 1])
    correct = (chosen == (sequences.latents[:, :-1, 0] > 0.5))[visited]
    return float(correct.mean()), float(correct[(sessions > 0)[visited]].mean())


def test_the_belief_learns_which_goal_pays_and_where_sessions_end(grid_dataset):
    trainer = BeliefTrainer(load_flat(grid_dataset), BeliefConfig(),
                            BeliefTrainConfig(steps=2000, batch_size=32, learning_rate=3e-3, seed=0))
    for _ in range(trainer.train_config.steps):
        trainer.train_step()
    accuracy, after_switch = paying_goal_accuracy(trainer.model, trainer.flat, trainer.validation_episodes)
    assert accuracy > 0.8 and after_switch > 0.75, (accuracy, after_switch)  # chance: 0.5
    metrics = trainer.diagnostics()
    assert metrics["boundary_precision_within_3"] > 2 * metrics["boundary_chance_precision_within_3"], metrics
    assert metrics["boundary_recall_within_3"] > 0.2, metrics


# ---------------------------------------------------------------------------- the CLI and bad input
def run_offline(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([console_script("dynamite-offline"), *arguments], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})


def test_belief_cli_writes_a_complete_run_and_resumes(grid_dataset, tmp_path):
    result = run_offline("belief", str(grid_dataset), "--steps", "4", "--batch-size", "8", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith("gridworld__belief-dynamite__seed0__")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "complete" and record["step"] == 4
    assert record["dataset"]["sha256"] == load_flat(grid_dataset).content_hasher().hexdigest()
    assert {"belief.pt", "metrics.csv", "diagnostics.json"} <= {p.name for p in run_dir.iterdir()}
    assert "latent_accuracy" in json.loads((run_dir / "diagnostics.json").read_text())
    resumed = run_offline("belief", "--resume", str(run_dir), "--steps", "6")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "run.json").read_text())["step"] == 6
    assert load_checkpoint(run_dir / "belief.pt")["step"] == 6


def test_ablations_and_varibad_are_configurations_of_one_model():
    assert belief_config_for("dynamite", consistency=False).consistency is False
    assert variant_name("dynamite", BeliefConfig(consistency=False)) == "dynamite-no-consistency"
    assert variant_name("varibad", BeliefConfig.varibad(latent="categorical", latent_dim=2)) == "varibad-categorical"
    assert variant_name("dynamite", CATEGORICAL) == "dynamite-categorical-counterfactual"
    varibad = belief_config_for("varibad")
    assert not (varibad.consistency or varibad.latent_conditioning or varibad.session_masking or varibad.termination)
    with pytest.raises(ValueError, match="ablation flags apply to the dynamite variant"):
        belief_config_for("varibad", session_masking=False)
    with pytest.raises(ValueError, match="needs the termination head"):
        BeliefConfig(termination=False)


def test_bad_input_is_one_clear_line(grid_dataset, tmp_path):
    bad = bad_datasets(grid_dataset, tmp_path)
    not_hdf5, not_minari, unlabelled = bad["not_hdf5"], bad["not_minari"], bad["unlabelled"]
    with_nan = tmp_path / "nan" / "main_data.hdf5"
    __import__("shutil").copytree(grid_dataset.parent, with_nan.parent)
    with h5py.File(with_nan, "a") as file:
        file["episode_3/rewards"][2] = np.nan
    cases = [
        ([str(not_hdf5)], "is not an HDF5 file"),
        ([str(not_minari)], "is not a Minari dataset"),
        ([str(tmp_path / "missing")], "no dataset at"),
        ([str(unlabelled)], "has no session labels"),
        ([str(with_nan)], "non-finite values in rewards"),
        ([str(grid_dataset), "--variant", "transformer"], "unknown belief variant"),
    ]
    for arguments, message in cases:
        result = run_offline("belief", *arguments, "--steps", "2", "--out", str(tmp_path / "runs"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (arguments, result.stderr)
    assert not (tmp_path / "runs").exists()
    # Without labels, VariBAD's VAE still trains.
    result = run_offline("belief", str(unlabelled), "--variant", "varibad", "--steps", "2", "--out", str(tmp_path / "ok"))
    assert result.returncode == 2 and "pass --relabel-fraction 0" in result.stderr
    result = run_offline("belief", str(unlabelled), "--variant", "varibad", "--relabel-fraction", "0", "--steps", "2",
                         "--out", str(tmp_path / "ok"))
    assert result.returncode == 0, result.stderr


def test_resuming_on_another_dataset_or_a_broken_checkpoint_is_refused(grid_dataset, tmp_path):
    trainer = small_trainer(grid_dataset)
    trainer.save(tmp_path / "belief.pt")
    other = tmp_path / "other"
    collect(load_recipe("dynamite/gridworld/mixed-v0").replace(episodes=20, reference_episodes=2, seed=9), other)
    different = small_trainer(next(other.glob("**/main_data.hdf5")))
    with pytest.raises(CheckpointError, match="another content hash"):
        different.restore(load_checkpoint(tmp_path / "belief.pt"))
    broken = tmp_path / "broken.pt"
    broken.write_bytes((tmp_path / "belief.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(broken)


def test_a_non_finite_loss_stops_training_without_touching_the_weights(grid_dataset):
    from offline_dynamite.belief.trainer import TrainingDiverged

    trainer = small_trainer(grid_dataset)
    trainer.train_step()
    with torch.no_grad():
        trainer.model.reward_decoder.head[-1].bias.fill_(float("inf"))  # what an overflow leaves behind
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="diverged .* at step 2"):
        trainer.train_step()
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert trainer.step == 1
