"""The DynaMITE-RL belief model: a GRU posterior, a termination head, a latent dynamics model
and a reward decoder, with the ELBO of :mod:`offline_dynamite.belief.losses` over a Gaussian or
a categorical belief (:mod:`offline_dynamite.belief.latents`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from offline_dynamite.belief import losses
from offline_dynamite.belief.config import BeliefConfig
from offline_dynamite.belief.latents import latent_of


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(size_in, size_out))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RewardDecoder(nn.Module):
    """p(r_j | m, s_j, a_j, s_{j+1}): an MLP whose first layer is split in a latent part and a
    transition part. That is the same function as one layer on the concatenation, but each part
    is computed once per belief and once per transition instead of once per (belief, transition)
    pair, which is most of the cost of reconstructing many transitions from many beliefs."""

    def __init__(self, latent_dim: int, transition_size: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.latent_layer = nn.Linear(latent_dim, hidden[0])
        self.transition_layer = nn.Linear(transition_size, hidden[0], bias=False)
        self.head = mlp([*hidden, 1])

    def pairwise(self, latent_features: torch.Tensor, transition_features: torch.Tensor) -> torch.Tensor:
        """Predictions for rows of already projected features (``project_*``), summed pairwise."""
        return self.head(F.relu(latent_features + transition_features))[..., 0]

    def forward(self, latents: torch.Tensor, transitions: torch.Tensor) -> torch.Tensor:
        return self.pairwise(self.latent_layer(latents), self.transition_layer(transitions))


@dataclass(frozen=True)
class DataSpec:
    """What the model needs to know about the dataset it models."""

    observation_size: int
    action_size: int  # number of actions if discrete, else the action dimension
    discrete_actions: bool


@dataclass
class Beliefs:
    #: [B, T + 1, p]: each belief's parameters, (μ, log σ²) or class log-probabilities (latents.py)
    parameters: torch.Tensor
    termination_logits: torch.Tensor | None  # [B, T + 1]
    sessions: torch.Tensor  # [B, T + 1]: the session each belief tracks (labels or predicted)
    session_prior: torch.Tensor | None  # [B, T + 1, p]: the latent dynamics' prior of each belief's session

    @property
    def mu(self) -> torch.Tensor:
        """The mean of a Gaussian belief."""
        return self.parameters.chunk(2, dim=-1)[0]

    @property
    def logvar(self) -> torch.Tensor:
        """The log-variance of a Gaussian belief."""
        return self.parameters.chunk(2, dim=-1)[1]


@dataclass
class OnlineState:
    """What the posterior carries from one step to the next when run online (a batch of envs)."""

    hidden: torch.Tensor  # [B, H]: the GRU state
    condition: torch.Tensor | None  # [B, p]: the latent dynamics' prior of the current session
    previous_belief: torch.Tensor | None  # [B, p]: the belief head's last output
    steps: int  # beliefs produced so far (the index t of the next one)


@dataclass
class Batch:
    """A padded batch as tensors (see :class:`offline_dynamite.data.SequenceBatch`)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    lengths: torch.Tensor
    session_ids: torch.Tensor
    session_starts: torch.Tensor
    #: [B, K, T]: the reward of each transition under the latent of each session of its episode,
    #: for the counterfactual reconstruction (BeliefConfig.counterfactual_reconstruction).
    session_rewards: torch.Tensor | None = None


class BeliefModel(nn.Module):
    def __init__(self, config: BeliefConfig, spec: DataSpec) -> None:
        super().__init__()
        self.config, self.spec = config, spec
        self.latent = latent_of(config.latent, config.latent_dim)
        p = self.latent.parameter_size
        self.state_embed = nn.Linear(spec.observation_size, config.state_embed_size)
        self.action_embed = nn.Linear(spec.action_size, config.action_embed_size)
        self.reward_embed = nn.Linear(1, config.reward_embed_size)
        embed = config.state_embed_size + config.action_embed_size + config.reward_embed_size
        self.gru = nn.GRU(embed, config.hidden_size, batch_first=True)
        head_input = config.hidden_size + (p if config.latent_conditioning else 0)
        self.belief_head = nn.Linear(head_input, p)
        self.termination_head = nn.Linear(config.hidden_size, 1) if config.termination else None
        self.latent_dynamics = self.latent.dynamics(config.hidden_size) if config.latent_conditioning else None
        transition_size = 2 * spec.observation_size + spec.action_size if config.decoder_sees_action else spec.observation_size
        self.reward_decoder = RewardDecoder(config.latent_dim, transition_size, config.decoder_hidden)
        # Normalisation, fitted on the training data (set_normalisation) and saved with the weights.
        self.register_buffer("observation_mean", torch.zeros(spec.observation_size))
        self.register_buffer("observation_std", torch.ones(spec.observation_size))
        self.register_buffer("reward_scale", torch.ones(()))

    def set_normalisation(self, observation_mean, observation_std, reward_scale) -> None:
        self.observation_mean.copy_(torch.as_tensor(observation_mean, dtype=torch.float32))
        self.observation_std.copy_(torch.as_tensor(observation_std, dtype=torch.float32).clamp(min=1e-6))
        self.reward_scale.copy_(torch.as_tensor(reward_scale, dtype=torch.float32).clamp(min=1e-6))

    # ------------------------------------------------------------------ inputs
    def _observations(self, observations: torch.Tensor) -> torch.Tensor:
        return (observations.float() - self.observation_mean) / self.observation_std

    def _actions(self, actions: torch.Tensor) -> torch.Tensor:
        if self.spec.discrete_actions:
            return F.one_hot(actions.long().reshape(actions.shape[:2]), self.spec.action_size).float()
        return actions.float().reshape(*actions.shape[:2], -1)

    def _sanitise(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised inputs with padding zeroed, so padded values can never reach a loss."""
        horizon = batch.actions.shape[1]
        obs_valid = losses.belief_valid(batch.lengths, horizon)
        step_valid = losses.transition_valid(batch.lengths, horizon)
        observations = torch.where(obs_valid[..., None], self._observations(batch.observations), 0.0)
        actions = self._actions(torch.where(step_valid.view(*step_valid.shape, *[1] * (batch.actions.dim() - 2)),
                                            batch.actions, torch.zeros((), dtype=batch.actions.dtype)))
        rewards = torch.where(step_valid, batch.rewards.float() / self.reward_scale, 0.0)
        return observations, actions, rewards

    def hidden_states(self, observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """GRU states ``[B, T + 1, H]`` over (s_t, a_{t-1}, r_{t-1}); a and r are zero at t = 0."""
        previous_actions = F.pad(actions, (0, 0, 1, 0))
        previous_rewards = F.pad(rewards, (1, 0))[..., None]
        inputs = torch.cat(
            [
                F.relu(self.state_embed(observations)),
                F.relu(self.action_embed(previous_actions)),
                F.relu(self.reward_embed(previous_rewards)),
            ],
            dim=-1,
        )
        return self.gru(inputs)[0]

    # ------------------------------------------------------------------ beliefs
    def beliefs(self, hidden: torch.Tensor, lengths: torch.Tensor, sessions: torch.Tensor | None = None) -> Beliefs:
        """Beliefs for every step. ``sessions`` (the dataset's labels, teacher forcing) decides
        where sessions begin; without it the termination head does (probability > 0.5)."""
        valid = losses.belief_valid(lengths, hidden.shape[1] - 1)
        logits = self.termination_head(hidden)[..., 0] if self.termination_head is not None else None
        if sessions is None:
            boundaries = (logits > 0) if logits is not None else torch.zeros_like(valid)
            sessions = losses.sessions_from_boundaries(boundaries & valid)
        sessions = torch.where(valid, sessions, 0)
        if self.latent_dynamics is None:
            return Beliefs(self.latent.parameters(self.belief_head(hidden)), logits, sessions, None)
        # Session k's beliefs are conditioned on the latent dynamics' prediction from session
        # k - 1's last belief. The recursion runs over sessions (a handful), never over steps.
        batch = torch.arange(hidden.shape[0], device=hidden.device)
        ends = losses.session_end_indices(sessions, valid)
        conditions = [torch.zeros(hidden.shape[0], self.latent.parameter_size, device=hidden.device)]
        for k in range(1, ends.shape[1]):
            last = hidden[batch, ends[:, k - 1].clamp(min=0)]
            last_belief = self.belief_head(torch.cat([last, conditions[-1]], dim=-1))
            conditions.append(self.latent_dynamics(last_belief))
        condition = torch.stack(conditions, dim=1)[batch[:, None], sessions]  # [B, T + 1, p]
        parameters = self.latent.parameters(self.belief_head(torch.cat([hidden, condition], dim=-1)))
        return Beliefs(parameters, logits, sessions, self.latent.parameters(condition))

    def encode(self, batch: Batch, use_labels: bool = False) -> Beliefs:
        observations, actions, rewards = self._sanitise(batch)
        hidden = self.hidden_states(observations, actions, rewards)
        labels = losses.belief_sessions(batch.session_ids) if use_labels else None
        return self.beliefs(hidden, batch.lengths, labels)

    # ------------------------------------------------------------------ online
    def initial_state(self, batch_size: int) -> OnlineState:
        p = self.latent.parameter_size
        condition = torch.zeros(batch_size, p) if self.latent_dynamics is not None else None
        return OnlineState(torch.zeros(batch_size, self.config.hidden_size), condition, None, 0)

    @torch.no_grad()
    def step(self, state: OnlineState, observations: torch.Tensor, previous_actions: torch.Tensor | None,
             previous_rewards: torch.Tensor | None) -> tuple[OnlineState, Beliefs]:
        """The next belief b_t from s_t, a_{t-1} and r_{t-1} (``None`` at t = 0): the same
        function as :meth:`encode` on the whole sequence, one step at a time.

        Returns beliefs of shape ``[B, 1, ·]`` and the state to pass to the next call.
        """
        batch = observations.shape[0]
        if state.steps == 0:
            previous_actions = torch.zeros(batch, self.spec.action_size)
            previous_rewards = torch.zeros(batch, 1)
        else:
            if previous_actions is None or previous_rewards is None:
                raise ValueError("after the first step the posterior needs the previous actions and rewards")
            previous_actions = self._actions(previous_actions.reshape(batch, 1, -1))[:, 0]
            previous_rewards = previous_rewards.float().reshape(batch, 1) / self.reward_scale
        inputs = torch.cat([F.relu(self.state_embed(self._observations(observations))),
                            F.relu(self.action_embed(previous_actions)),
                            F.relu(self.reward_embed(previous_rewards))], dim=-1)
        hidden = self.gru(inputs[:, None], state.hidden[None])[0][:, 0]
        logits = self.termination_head(hidden)[:, 0] if self.termination_head is not None else None
        condition = state.condition
        if condition is not None:
            # b_0 and b_1 belong to session 0 by definition, as in losses.sessions_from_boundaries.
            opens = (logits > 0) & (state.steps >= 2)
            if opens.any():
                condition = torch.where(opens[:, None], self.latent_dynamics(state.previous_belief), condition)
            belief = self.belief_head(torch.cat([hidden, condition], dim=-1))
        else:
            belief = self.belief_head(hidden)
        beliefs = Beliefs(self.latent.parameters(belief)[:, None], None if logits is None else logits[:, None],
                          torch.zeros(batch, 1, dtype=torch.long), None)
        return OnlineState(hidden, condition, belief, state.steps + 1), beliefs

    def transitions(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """[B, T, ·]: what the reward decoder sees of each transition (normalised inputs):
        s_{j+1}, or (s_j, a_j, s_{j+1}) with ``decoder_sees_action``."""
        if self.config.decoder_sees_action:
            return torch.cat([observations[:, :-1], actions, observations[:, 1:]], dim=-1)
        return observations[:, 1:]

    # ------------------------------------------------------------------ objective
    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The training objective and its terms (labels used as teacher forcing)."""
        config = self.config
        observations, actions, rewards = self._sanitise(batch)
        hidden = self.hidden_states(observations, actions, rewards)
        horizon = batch.actions.shape[1]
        valid = losses.belief_valid(batch.lengths, horizon)
        sessions = losses.belief_sessions(batch.session_ids)
        beliefs = self.beliefs(hidden, batch.lengths, sessions)
        parameters = beliefs.parameters

        # Reconstruction: each belief decodes its paired transitions (Gaussian: one sample each).
        # The counterfactual reconstruction pairs a belief with every transition of its episode.
        masking = config.session_masking and not config.counterfactual_reconstruction
        pairs = losses.reconstruction_pairs(beliefs.sessions, batch.lengths, torch.where(valid, batch.session_ids, 0),
                                            masking)
        per_belief = self.reconstruction_errors(parameters, observations, actions, rewards, pairs,
                                                self._session_rewards(batch), beliefs.sessions)
        reconstruction = losses.masked_mean(per_belief, pairs.any(-1))

        new_session = losses.new_session_flags(beliefs.sessions)
        prior = losses.kl_priors(parameters, new_session, beliefs.session_prior, self.latent.standard_prior)
        kl = losses.masked_mean(self.latent.kl(parameters, prior), valid)

        terms = {"reconstruction": reconstruction, "kl": kl}
        total = reconstruction + config.kl_weight * kl
        if config.latent == "categorical":
            terms["class_balance"] = self.latent.class_balance(parameters, valid)
            total = total + config.class_balance_weight * terms["class_balance"]
        if config.consistency:
            terms["consistency"] = losses.consistency_penalty(parameters, beliefs.sessions, valid, self.latent.kl)
            total = total + config.consistency_weight * terms["consistency"]
        if config.termination:
            targets, has_label = losses.termination_targets(batch.session_starts, valid)
            bce = F.binary_cross_entropy_with_logits(beliefs.termination_logits, targets, reduction="none")
            terms["termination"] = losses.masked_mean(bce, has_label)
            total = total + config.termination_weight * terms["termination"]
        terms["total"] = total
        terms["decoded_pairs"] = pairs.sum().float()
        return terms

    def _session_rewards(self, batch: Batch) -> torch.Tensor | None:
        if not self.config.counterfactual_reconstruction:
            return None
        if batch.session_rewards is None:
            raise ValueError("the counterfactual reconstruction needs the batch's session_rewards")
        return batch.session_rewards.float() / self.reward_scale

    def reconstruction_errors(self, parameters: torch.Tensor, observations: torch.Tensor, actions: torch.Tensor,
                              rewards: torch.Tensor, pairs: torch.Tensor, session_rewards: torch.Tensor | None = None,
                              sessions: torch.Tensor | None = None, sample: bool = True) -> torch.Tensor:
        """[B, T + 1]: each belief's mean squared reward error over its paired transitions.

        Only the pairs in ``pairs`` are decoded (the decoder runs once per pair, no more). The
        target of pair (t, j) is the reward of transition j, or with ``session_rewards``
        (``[B, K, T]``, normalised) its reward under the latent of belief t's session ``sessions[t]``.
        """
        b, t, j = pairs.nonzero(as_tuple=True)
        transition_features = self.reward_decoder.transition_layer(self.transitions(observations, actions))[b, j]
        targets = rewards[b, j] if session_rewards is None else session_rewards[b, sessions[b, t], j]
        errors = self.latent.squared_errors(self.reward_decoder, parameters, (b, t), transition_features, targets, sample)
        # Summed through a dense [B, T + 1, T] buffer rather than a scatter-add, whose parallel
        # accumulation order (and so the last bits of the result) is not fixed on the CPU.
        dense = torch.zeros(pairs.shape, device=parameters.device, dtype=errors.dtype).masked_scatter(pairs, errors)
        return dense.sum(-1) / pairs.sum(-1).clamp(min=1)

    def predicted_rewards(self, parameters: torch.Tensor, transitions: torch.Tensor) -> torch.Tensor:
        """``[...]``: the reward each belief predicts for the transition paired with it (the
        Gaussian's mean decoded, or the expectation over the classes)."""
        return self.latent.expected_reward(self.reward_decoder, parameters, transitions)


def to_tensors(sequences) -> Batch:
    """A :class:`Batch` of tensors from a numpy :class:`~offline_dynamite.data.SequenceBatch`."""
    return Batch(
        observations=torch.from_numpy(sequences.observations),
        actions=torch.from_numpy(sequences.actions),
        rewards=torch.from_numpy(sequences.rewards),
        lengths=torch.from_numpy(sequences.lengths),
        session_ids=torch.from_numpy(sequences.session_ids),
        session_starts=torch.from_numpy(sequences.session_starts),
    )
