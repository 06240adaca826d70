"""The two kinds of belief the posterior can output, as the maths each needs.

A belief is one tensor of *parameters* per step, ``[..., p]``:

- **Gaussian** (VariBAD, DynaMITE-RL): ``(μ, log σ²)`` concatenated, ``p = 2k``. The reward decoder
  reads one reparameterised sample; the policy sees ``[μ, log σ²]``.
- **Categorical**: the log-probabilities of ``k`` classes, ``p = k``. For contexts that take a few
  discrete values (the gridworld's paying goal). The reconstruction is the exact expectation over
  the classes (no sampling), the latent dynamics are a learned ``k × k`` transition matrix, and
  the policy sees the class probabilities.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Bounds of every Gaussian log-variance. Without them a belief can grow so narrow that the KL
#: between consecutive beliefs overflows and training turns to NaN (seen with weak KL weights);
#: the bounds are far from where a converged belief sits.
LOGVAR_RANGE = (-10.0, 5.0)

def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) ‖ N(mu_p, e^logvar_p)), summed over the last (latent) axis."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0).sum(-1)


class GaussianLatent:
    """N(μ, diag σ²) over ``k`` dimensions."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.parameter_size = 2 * k

    def parameters(self, head_output: torch.Tensor) -> torch.Tensor:
        """Belief parameters from a head's raw output (the log-variance bounded)."""
        mu, logvar = head_output.chunk(2, dim=-1)
        return torch.cat([mu, logvar.clamp(*LOGVAR_RANGE)], dim=-1)

    def standard_prior(self, like: torch.Tensor) -> torch.Tensor:
        """N(0, I)."""
        return torch.zeros_like(like)

    def kl(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return gaussian_kl(*q.chunk(2, dim=-1), *p.chunk(2, dim=-1))

    def features(self, parameters: torch.Tensor) -> torch.Tensor:
        """What the policy sees of a belief: ``[μ, log σ²]``."""
        return parameters

    def summary(self, parameters: torch.Tensor) -> torch.Tensor:
        """The belief as one point, for probes and plots: μ."""
        return parameters[..., : self.k]

    def feature_names(self) -> list[list]:
        return [["belief_mu", self.k], ["belief_logvar", self.k]]

    def dynamics(self, hidden_size: int) -> nn.Module:
        """p(m_i | m_{i-1}): an MLP from the belief head's last output to the next session's
        prior (raw; :meth:`parameters` bounds it)."""
        return nn.Sequential(nn.Linear(self.parameter_size, hidden_size), nn.ReLU(),
                             nn.Linear(hidden_size, self.parameter_size))

    def squared_errors(self, decoder, parameters: torch.Tensor, pair_beliefs: tuple[torch.Tensor, torch.Tensor],
                       transition_features: torch.Tensor, targets: torch.Tensor, sample: bool) -> torch.Tensor:
        """``[P]`` squared reward errors of (belief, transition) pairs.

        ``parameters`` are ``[B, T + 1, p]``; ``pair_beliefs`` the (sequence, step) index of each
        pair's belief; ``transition_features`` (``[P, H]``) and ``targets`` (``[P]``) are per pair.
        One reparameterised sample per belief when ``sample``, else the mean.
        """
        mu, logvar = parameters.chunk(2, dim=-1)
        latents = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if sample else mu
        return (decoder.pairwise(decoder.latent_layer(latents)[pair_beliefs], transition_features) - targets) ** 2

    def expected_reward(self, decoder, parameters: torch.Tensor, transitions: torch.Tensor) -> torch.Tensor:
        """The reward each belief's mean predicts for the transition paired with it."""
        return decoder(self.summary(parameters), transitions)


class CategoricalTransition(nn.Module):
    """p(c_i | c_{i-1}) as a learned ``k × k`` matrix (rows: the previous class)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(k, k))

    def forward(self, head_output: torch.Tensor) -> torch.Tensor:
        """log Σ_c q(c) T[c, ·]: the next session's prior (log-probabilities) from the belief
        head's last output (logits)."""
        log_probs = F.log_softmax(head_output, dim=-1)
        return torch.logsumexp(log_probs[..., :, None] + F.log_softmax(self.logits, dim=-1), dim=-2)


class CategoricalLatent:
    """A distribution over ``k`` classes."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.parameter_size = k

    def parameters(self, head_output: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(head_output, dim=-1)

    def standard_prior(self, like: torch.Tensor) -> torch.Tensor:
        """Uniform over the classes."""
        return torch.full_like(like, -math.log(self.k))

    def kl(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return (q.exp() * (q - p)).sum(-1)

    def features(self, parameters: torch.Tensor) -> torch.Tensor:
        """What the policy sees of a belief: the class probabilities."""
        return parameters.exp()

    def summary(self, parameters: torch.Tensor) -> torch.Tensor:
        return self.features(parameters)

    def feature_names(self) -> list[list]:
        return [["belief_probabilities", self.k]]

    def dynamics(self, hidden_size: int) -> nn.Module:
        return CategoricalTransition(self.k)

    def squared_errors(self, decoder, parameters: torch.Tensor, pair_beliefs: tuple[torch.Tensor, torch.Tensor],
                       transition_features: torch.Tensor, targets: torch.Tensor, sample: bool) -> torch.Tensor:
        """The expected squared error over the classes, exactly (``sample`` does not apply)."""
        predicted = decoder.pairwise(self._class_features(decoder, parameters)[None], transition_features[:, None])
        return ((predicted - targets[:, None]) ** 2 * parameters[pair_beliefs].exp()).sum(-1)

    def _class_features(self, decoder, parameters: torch.Tensor) -> torch.Tensor:
        """``[k, H]``: the decoder's latent layer on each class (one-hot)."""
        return decoder.latent_layer(torch.eye(self.k, device=parameters.device))

    def class_balance(self, parameters: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """KL(mean class probabilities of the batch's valid beliefs ‖ uniform): zero when every
        class is used equally, log k when one class takes every belief."""
        mean = parameters.exp()[valid].mean(0)
        return (mean * (mean.clamp(min=1e-12) * self.k).log()).sum()

    def expected_reward(self, decoder, parameters: torch.Tensor, transitions: torch.Tensor) -> torch.Tensor:
        """The reward each belief expects for the transition paired with it, over its classes."""
        per_class = decoder.pairwise(self._class_features(decoder, parameters),
                                     decoder.transition_layer(transitions)[..., None, :])
        return (per_class * parameters.exp()).sum(-1)


LATENTS = {"gaussian": GaussianLatent, "categorical": CategoricalLatent}
LATENT_KINDS = tuple(LATENTS)


def latent_of(kind: str, k: int) -> GaussianLatent | CategoricalLatent:
    """The maths of a belief of ``kind`` (one of LATENT_KINDS, checked by BeliefConfig) over ``k``."""
    return LATENTS[kind](k)
