"""How good a belief model is, on held-out episodes.

- **reward error**: MSE of the reward of transition ``t`` predicted from the belief *before* it
  (``b_t``: its mean, or the expectation over its classes), in the dataset's reward units;
- **latent probe**: how well the belief (its mean, or its class probabilities) predicts the true
  latent of the next transition, fitted on training episodes, scored on held-out ones, and also on
  the steps after the first session switch, where VariBAD-style beliefs go stale. Continuous
  latents: the R² of a linear regression on the belief. Discrete latents (one coordinate, at most
  8 values): the accuracy of a small MLP classifier on the belief *and the observation*, against
  the same classifier on the observation alone. The observation is needed because a belief may name the latent
  relative to the state (the gridworld's "which goal pays" is naturally held as "the goal at these
  coordinates pays"); the state-only baseline measures what the behaviour policy leaks through the
  states it visits (an oracle walks towards the paying goal), so the belief's own contribution is
  the difference;
- **session boundaries**: precision and recall of the termination head (probability > 0.5)
  against the dataset's labels, exactly and within ``window`` steps, with the chance precision (the
  rate at which a label lies in such a window) for comparison.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from offline_dynamite.belief import losses
from offline_dynamite.belief.model import BeliefModel, to_tensors
from offline_dynamite.data import FlatDataset, sequence_batch

DISCRETE_LATENT_VALUES = 8
PROBE_ROWS = 20_000  # training rows of the probes: enough for a 64-unit classifier, and quick


@torch.no_grad()
def encode_episodes(model: BeliefModel, flat: FlatDataset, episodes: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Beliefs as the model computes them online (boundaries from its own termination head),
    with everything needed to score them, as flat per-belief arrays over ``episodes``."""
    model.eval()
    rows: dict[str, list[np.ndarray]] = {key: [] for key in
        ("belief", "observation", "latent", "session", "boundary_probability", "boundary_label", "has_label", "reward", "predicted_reward")}
    for first in range(0, len(episodes), batch_size):
        sequences = sequence_batch(flat, episodes[first : first + batch_size])
        batch = to_tensors(sequences)
        beliefs = model.encode(batch)
        observations, actions, rewards = model._sanitise(batch)
        horizon = batch.actions.shape[1]
        valid_steps = losses.transition_valid(batch.lengths, horizon)
        predicted = model.predicted_rewards(beliefs.parameters[:, :-1], model.transitions(observations, actions))
        targets, has_label = losses.termination_targets(batch.session_starts, losses.belief_valid(batch.lengths, horizon))
        probability = torch.sigmoid(beliefs.termination_logits) if beliefs.termination_logits is not None else torch.zeros_like(targets)
        # Beliefs b_0 … b_{L-1}, each paired with transition t (the one it has to predict).
        select = valid_steps.numpy()
        rows["belief"].append(model.latent.summary(beliefs.parameters[:, :-1]).numpy()[select])
        rows["observation"].append(observations[:, :-1].numpy()[select])
        rows["latent"].append(sequences.latents[:, :-1][select])
        rows["session"].append(sequences.session_ids[:, :-1][select])
        rows["boundary_probability"].append(probability[:, 1:].numpy()[select])
        rows["boundary_label"].append(targets[:, 1:].numpy()[select])
        rows["has_label"].append(has_label[:, 1:].numpy()[select])
        rows["reward"].append(sequences.rewards[select])
        rows["predicted_reward"].append((predicted * model.reward_scale).numpy()[select])
    return {key: np.concatenate(value) for key, value in rows.items()}


def latent_probe(train: dict[str, np.ndarray], held_out: dict[str, np.ndarray]) -> dict[str, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPClassifier

    if train["latent"].shape[1] == 0:
        return {}
    keep = np.random.default_rng(0).permutation(len(train["latent"]))[:PROBE_ROWS]
    train = {key: value[keep] for key, value in train.items()}
    latents = train["latent"]
    after_switch = held_out["session"] > 0
    if len(np.unique(latents[:, 0])) <= DISCRETE_LATENT_VALUES and latents.shape[1] == 1:
        labels, held_out_labels = latents[:, 0].astype(str), held_out["latent"][:, 0].astype(str)
        metrics = {"latent_chance": float(max(np.mean(held_out_labels == v) for v in np.unique(labels)))}
        for name, keys in (("latent_accuracy", ("belief", "observation")), ("latent_accuracy_state_only", ("observation",))):
            probe = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                probe.fit(np.concatenate([train[k] for k in keys], axis=1), labels)
            correct = probe.predict(np.concatenate([held_out[k] for k in keys], axis=1)) == held_out_labels
            metrics[name] = float(correct.mean())
            metrics[f"{name}_after_switch"] = float(correct[after_switch].mean()) if after_switch.any() else float("nan")
        return metrics
    probe = LinearRegression().fit(train["belief"], latents)

    def r2(select: np.ndarray) -> float:
        target = held_out["latent"][select]
        residual = ((probe.predict(held_out["belief"][select]) - target) ** 2).sum()
        total = ((target - target.mean(axis=0)) ** 2).sum()
        return float(1.0 - residual / total) if total > 0 else float("nan")

    return {"latent_r2": r2(np.ones_like(after_switch)),
            "latent_r2_after_switch": r2(after_switch) if after_switch.sum() > 1 else float("nan")}


def boundary_scores(encoded: dict[str, np.ndarray], window: int = 3) -> dict[str, float]:
    labelled = encoded["has_label"]
    predicted = (encoded["boundary_probability"] > 0.5) & labelled
    truth = (encoded["boundary_label"] > 0.5) & labelled
    # Rows are consecutive steps of consecutive episodes; a window never crosses an episode start,
    # because the first two steps of every episode carry no label.
    def near(flags: np.ndarray, before: int, after: int) -> np.ndarray:
        hits = flags.copy()
        for shift in range(1, before + 1):
            hits[shift:] |= flags[:-shift]
        for shift in range(1, after + 1):
            hits[:-shift] |= flags[shift:]
        return hits & labelled

    def ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
        return float(numerator.sum() / denominator.sum()) if denominator.sum() else float("nan")

    return {
        "boundary_precision": ratio(predicted & truth, predicted),
        "boundary_recall": ratio(predicted & truth, truth),
        f"boundary_precision_within_{window}": ratio(predicted & near(truth, window, 0), predicted),
        f"boundary_recall_within_{window}": ratio(truth & near(predicted, 0, window), truth),
        f"boundary_chance_precision_within_{window}": ratio(near(truth, window, 0), labelled),
        "boundary_rate": ratio(truth, labelled),
    }


def diagnose(model: BeliefModel, flat: FlatDataset, train_episodes: np.ndarray, held_out_episodes: np.ndarray,
             probe_episodes: int = 500, seed: int = 0) -> dict[str, float]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small probes: extra BLAS threads only contend on a busy machine
        return _diagnose(model, flat, train_episodes, held_out_episodes, probe_episodes, seed)


def _diagnose(model: BeliefModel, flat: FlatDataset, train_episodes: np.ndarray, held_out_episodes: np.ndarray,
              probe_episodes: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    probe_train = rng.permutation(train_episodes)[:probe_episodes]
    held_out = encode_episodes(model, flat, held_out_episodes)
    metrics = {"reward_mse": float(np.mean((held_out["predicted_reward"] - held_out["reward"]) ** 2))}
    if flat.has_session_labels:
        metrics |= latent_probe(encode_episodes(model, flat, probe_train), held_out)
        if model.config.termination:
            metrics |= boundary_scores(held_out)
    return metrics
