"""From a dataset to what the policy trains on: hyper-states and batches of transitions.

Frozen-encoder relabelling (BOReL): every trajectory is run through the trained posterior once,
with the boundaries its own termination head finds (as it will run online), and each observation
``s_t`` becomes ``[s_t, b_t]``, with ``b_t`` what the policy sees of the belief after
``s_0, a_0, r_0 … s_t``: ``[μ_t, log σ²_t]`` of a Gaussian one, the class probabilities of a
categorical one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from offline_dynamite.belief import losses
from offline_dynamite.belief.model import BeliefModel, to_tensors
from offline_dynamite.data import SESSION_KEYS, FlatDataset, sequence_batch


@torch.no_grad()
def encode_dataset(model: BeliefModel, flat: FlatDataset, batch_size: int = 256) -> np.ndarray:
    """What the policy sees of the beliefs, ``[N + E, d]``, one row per observation row of the dataset."""
    model.eval()
    features = []
    episodes = np.arange(flat.num_episodes)
    for first in range(0, flat.num_episodes, batch_size):
        batch = to_tensors(sequence_batch(flat, episodes[first : first + batch_size]))
        beliefs = model.encode(batch)
        # Episodes are consecutive in the flat arrays, so the valid beliefs row by row are the
        # dataset's observation rows in order.
        valid = losses.belief_valid(batch.lengths, batch.actions.shape[1])
        features.append(model.latent.features(beliefs.parameters[valid]).numpy())
    return np.concatenate(features)


def hyper_states(flat: FlatDataset, variant: str, model: BeliefModel | None = None) -> np.ndarray:
    """What the policy of ``variant`` observes at each observation row, ``[N + E, d]`` float32."""
    observations = flat.observations.reshape(len(flat.observations), -1).astype(np.float32)
    if variant == "no-belief":
        return observations
    if variant == "oracle":
        if not flat.has_session_labels:
            raise ValueError(f"the oracle variant appends the true latent, and dataset {flat.dataset_id} has no "
                             "session labels (infos latent): collect it with dynamite-collect")
        return np.concatenate([observations, flat.infos["latent"].astype(np.float32)], axis=1)
    if model is None:
        raise ValueError(f"the {variant} variant needs a belief model")
    return np.concatenate([observations, encode_dataset(model, flat)], axis=1)


def add_relabelled_episodes(flat: FlatDataset, fraction: float, reward: Callable[..., np.ndarray],
                            rng: np.random.Generator) -> FlatDataset:
    """The dataset with ``fraction`` of its episodes appended again, each under the latents and
    sessions of another episode of the same length, its rewards recomputed by ``reward``.

    Observations and actions are the original ones (real behaviour); only what the context would
    have paid for it changes.
    """
    count = int(round(fraction * flat.num_episodes))
    if count == 0:
        return flat
    lengths = flat.episode_lengths
    chosen = np.sort(rng.permutation(flat.num_episodes)[:count])
    donors = np.empty_like(chosen)
    for length in np.unique(lengths[chosen]):
        peers = np.flatnonzero(lengths == length)
        mine = chosen[lengths[chosen] == length]
        if len(peers) == 1:
            donors[lengths[chosen] == length] = mine
            continue
        # Any other episode of the same length, never the episode itself.
        position = np.searchsorted(peers, mine)
        donors[lengths[chosen] == length] = peers[(position + rng.integers(1, len(peers), len(mine))) % len(peers)]

    transition_rows, donor_transitions = _transition_rows(flat, chosen), _transition_rows(flat, donors)
    observation_rows, donor_observations = _observation_rows(flat, chosen), _observation_rows(flat, donors)
    infos = {key: np.concatenate([values, values[donor_observations if key in SESSION_KEYS else observation_rows]])
             for key, values in flat.infos.items()}
    # A transition's latent is the one in the info of the observation it starts from.
    starts = flat.observation_rows()
    latents = flat.infos["latent"][starts[donor_transitions]]
    rewards = reward(flat.observations[starts[transition_rows]], flat.actions[transition_rows],
                     flat.observations[starts[transition_rows] + 1], latents).astype(flat.rewards.dtype)
    new_lengths = np.concatenate([lengths, lengths[chosen]])
    return FlatDataset(
        dataset_id=flat.dataset_id,
        metadata=flat.metadata,
        observations=np.concatenate([flat.observations, flat.observations[observation_rows]]),
        actions=np.concatenate([flat.actions, flat.actions[transition_rows]]),
        rewards=np.concatenate([flat.rewards, rewards]),
        terminations=np.concatenate([flat.terminations, flat.terminations[transition_rows]]),
        truncations=np.concatenate([flat.truncations, flat.truncations[transition_rows]]),
        infos=infos,
        episode_starts=np.concatenate([[0], np.cumsum(new_lengths)]),
    )


def _transition_rows(flat: FlatDataset, episodes: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(flat.episode_starts[e], flat.episode_starts[e + 1]) for e in episodes])


def _observation_rows(flat: FlatDataset, episodes: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(flat.episode_starts[e] + e, flat.episode_starts[e + 1] + e + 1) for e in episodes])


class TransitionSampler:
    """Uniform mini-batches of transitions over hyper-states, as d3rlpy ``TransitionMiniBatch``.

    Vectorised (one fancy-indexing pass per array instead of d3rlpy's loop over transitions) and
    complete: the last transition of a truncated episode keeps its real next observation, where a
    d3rlpy ``MDPDataset`` built from the same episodes drops it.
    """

    def __init__(self, flat: FlatDataset, states: np.ndarray, discrete_action_start: int | None = None) -> None:
        if len(states) != len(flat.observations):
            raise ValueError(f"hyper-states need {len(flat.observations)} rows, got {len(states)}")
        self.states = np.ascontiguousarray(states, dtype=np.float32)
        self.rows = flat.observation_rows()
        if discrete_action_start is not None:
            self.actions = (flat.actions.reshape(-1, 1) - discrete_action_start).astype(np.float32)
        else:
            self.actions = flat.actions.reshape(flat.num_transitions, -1).astype(np.float32)
        self.rewards = flat.rewards.reshape(-1, 1).astype(np.float32)
        self.terminals = flat.terminations.reshape(-1, 1).astype(np.float32)
        # The action taken at the next observation; zero after an episode's last transition.
        last = np.zeros(flat.num_transitions, dtype=bool)
        last[flat.episode_starts[1:] - 1] = True
        self.next_actions = np.where(last[:, None], 0.0, np.roll(self.actions, -1, axis=0)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, batch_size: int, rng: np.random.Generator):
        from offline_dynamite.train.algos import import_d3rlpy

        index = rng.integers(len(self.rows), size=batch_size)
        rows = self.rows[index]
        return import_d3rlpy().dataset.TransitionMiniBatch(
            observations=self.states[rows],
            actions=self.actions[index],
            rewards=self.rewards[index],
            next_observations=self.states[rows + 1],
            next_actions=self.next_actions[index],
            terminals=self.terminals[index],
            intervals=np.ones((batch_size, 1), dtype=np.float32),
            transitions=[],
        )
