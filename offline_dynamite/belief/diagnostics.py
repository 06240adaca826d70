"""How good a belief model is, on held-out episodes.

- **reward error**: MSE of the reward of transition ``t`` predicted from the belief *before* it
  (``b_t``, its mean), in the dataset's reward units;
- **latent probe**: how well the belief mean predicts the true latent of the next transition: a
  logistic-regression accuracy for discrete latents (at most 8 distinct values), else the R² of a
  linear regression, both fitted on training episodes; also reported for the steps after the
  first session switch, where VariBAD-style beliefs go stale;
- **session boundaries**: precision and recall of the termination head (probability > 0.5)
  against the dataset's labels, exactly and within ``window`` steps, with the chance precision (the
  rate at which a label lies in such a window) for comparison.
"""

from __future__ import annotations

import numpy as np
import torch

from offline_dynamite.belief import losses
from offline_dynamite.belief.model import BeliefModel, to_tensors
from offline_dynamite.data import FlatDataset, sequence_batch

DISCRETE_LATENT_VALUES = 8


@torch.no_grad()
def encode_episodes(model: BeliefModel, flat: FlatDataset, episodes: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Beliefs as the model computes them online (boundaries from its own termination head),
    with everything needed to score them, as flat per-belief arrays over ``episodes``."""
    model.eval()
    rows: dict[str, list[np.ndarray]] = {key: [] for key in
        ("mu", "latent", "session", "boundary_probability", "boundary_label", "has_label", "reward", "predicted_reward")}
    for first in range(0, len(episodes), batch_size):
        sequences = sequence_batch(flat, episodes[first : first + batch_size])
        batch = to_tensors(sequences)
        beliefs = model.encode(batch)
        observations, actions, rewards = model._sanitise(batch)
        horizon = batch.actions.shape[1]
        valid_steps = losses.transition_valid(batch.lengths, horizon)
        decoder = model.reward_decoder
        predicted = decoder(beliefs.mu[:, :-1], model.transitions(observations, actions))
        targets, has_label = losses.termination_targets(batch.session_starts, losses.belief_valid(batch.lengths, horizon))
        probability = torch.sigmoid(beliefs.termination_logits) if beliefs.termination_logits is not None else torch.zeros_like(targets)
        # Beliefs b_0 … b_{L-1}, each paired with transition t (the one it has to predict).
        select = valid_steps.numpy()
        rows["mu"].append(beliefs.mu[:, :-1].numpy()[select])
        rows["latent"].append(sequences.latents[:, :-1][select])
        rows["session"].append(sequences.session_ids[:, :-1][select])
        rows["boundary_probability"].append(probability[:, 1:].numpy()[select])
        rows["boundary_label"].append(targets[:, 1:].numpy()[select])
        rows["has_label"].append(has_label[:, 1:].numpy()[select])
        rows["reward"].append(sequences.rewards[select])
        rows["predicted_reward"].append((predicted * model.reward_scale).numpy()[select])
    return {key: np.concatenate(value) for key, value in rows.items()}


def latent_probe(train: dict[str, np.ndarray], held_out: dict[str, np.ndarray]) -> dict[str, float]:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    latents = train["latent"]
    if latents.shape[1] == 0:
        return {}
    after_switch = held_out["session"] > 0
    if len(np.unique(latents[:, 0])) <= DISCRETE_LATENT_VALUES and latents.shape[1] == 1:
        probe = LogisticRegression(max_iter=1000).fit(train["mu"], latents[:, 0].astype(str))
        correct = probe.predict(held_out["mu"]) == held_out["latent"][:, 0].astype(str)
        return {"latent_accuracy": float(correct.mean()),
                "latent_accuracy_after_switch": float(correct[after_switch].mean()) if after_switch.any() else float("nan"),
                "latent_chance": float(max(np.mean(held_out["latent"][:, 0] == v) for v in np.unique(latents[:, 0])))}
    probe = LinearRegression().fit(train["mu"], latents)

    def r2(select: np.ndarray) -> float:
        target = held_out["latent"][select]
        residual = ((probe.predict(held_out["mu"][select]) - target) ** 2).sum()
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
    rng = np.random.default_rng(seed)
    probe_train = rng.permutation(train_episodes)[:probe_episodes]
    held_out = encode_episodes(model, flat, held_out_episodes)
    metrics = {"reward_mse": float(np.mean((held_out["predicted_reward"] - held_out["reward"]) ** 2))}
    if flat.has_session_labels:
        metrics |= latent_probe(encode_episodes(model, flat, probe_train), held_out)
        if model.config.termination:
            metrics |= boundary_scores(held_out)
    return metrics
