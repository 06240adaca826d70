"""The maths of the belief objective, as pure functions on tensors.

Indexing conventions (``B`` sequences, ``T`` transitions each, padded):

- transition ``j`` (``0 ≤ j < L``) goes from observation ``j`` to ``j + 1``; its session is
  ``session_ids[:, j]`` (the session of the observation it starts from);
- belief ``t`` (``0 ≤ t ≤ L``) has seen transitions ``0 … t-1`` (``b_0`` has seen only the first
  observation). It tracks the session of the last transition it saw: ``S_b[t] = session_ids[t-1]``,
  ``S_b[0] = 0``;
- a session boundary becomes visible one step late: transition ``j`` opens a new session when
  ``session_starts[j]``, and the first belief that has seen it is ``b_{j+1}``, so the termination
  head at belief ``t ≥ 2`` is trained on ``session_starts[t-1]`` (``t = 1`` is the episode start).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F


def belief_valid(lengths: torch.Tensor, horizon: int) -> torch.Tensor:
    """[B, T + 1]: belief t exists (t ≤ L)."""
    return torch.arange(horizon + 1, device=lengths.device)[None] <= lengths[:, None]


def transition_valid(lengths: torch.Tensor, horizon: int) -> torch.Tensor:
    """[B, T]: transition j exists (j < L)."""
    return torch.arange(horizon, device=lengths.device)[None] < lengths[:, None]


def belief_sessions(session_ids: torch.Tensor) -> torch.Tensor:
    """[B, T + 1] session tracked by each belief, from the per-observation session ids."""
    return torch.cat([torch.zeros_like(session_ids[:, :1]), session_ids[:, :-1]], dim=1)


def sessions_from_boundaries(boundaries: torch.Tensor) -> torch.Tensor:
    """Belief sessions from boundary flags at beliefs (``boundaries[:, t]``: b_t opens a session)."""
    flags = boundaries.clone()
    flags[:, :2] = False  # b_0 and b_1 are in session 0 by definition
    return flags.long().cumsum(dim=1)


def termination_targets(session_starts: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels ``[B, T + 1]`` of the termination head and the mask of beliefs that have one."""
    targets = torch.cat([torch.zeros_like(session_starts[:, :1]), session_starts[:, :-1]], dim=1)
    has_label = valid.clone()
    has_label[:, :2] = False
    return targets.float(), has_label


def reconstruction_pairs(sessions: torch.Tensor, lengths: torch.Tensor, session_ids: torch.Tensor,
                         masking: bool) -> torch.Tensor:
    """[B, T + 1, T] mask of (belief t, transition j) pairs whose reward is reconstructed.

    Without masking every belief reconstructs the whole trajectory (VariBAD, (L + 1)·L pairs);
    with it, only the transitions of its own session (Σ_i (l_i + 1)·l_i pairs at most).
    """
    horizon = session_ids.shape[1] - 1
    pairs = belief_valid(lengths, horizon)[:, :, None] & transition_valid(lengths, horizon)[:, None, :]
    if masking:
        pairs &= sessions[:, :, None] == session_ids[:, None, :-1]
    return pairs


def kl_priors(parameters: torch.Tensor, new_session: torch.Tensor, session_prior: torch.Tensor | None,
              standard_prior: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The prior of each belief (parameters ``[B, T + 1, p]``): ``standard_prior`` at t = 0, else the
    previous belief, except at a session's first belief where ``session_prior`` (the latent
    dynamics' prediction) takes over if given."""
    prior = torch.cat([standard_prior(parameters[:, :1]), parameters[:, :-1]], dim=1)
    if session_prior is not None:
        prior = torch.where(new_session[..., None], session_prior, prior)
    return prior


def new_session_flags(sessions: torch.Tensor) -> torch.Tensor:
    """[B, T + 1]: belief t tracks a different session than belief t - 1."""
    flags = torch.zeros_like(sessions, dtype=torch.bool)
    flags[:, 1:] = sessions[:, 1:] != sessions[:, :-1]
    return flags


def session_end_indices(sessions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, K]: the last valid belief of each session (−1 where the sequence has no such session)."""
    steps = torch.arange(sessions.shape[1], device=sessions.device).expand_as(sessions)
    ends = torch.full((sessions.shape[0], int(sessions.max()) + 1), -1, dtype=torch.long, device=sessions.device)
    return ends.scatter_reduce(1, torch.where(valid, sessions, 0), torch.where(valid, steps, -1), reduce="amax")


def consistency_penalty(parameters: torch.Tensor, sessions: torch.Tensor, valid: torch.Tensor,
                        kl: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mean of max(0, δ_{t+1} − δ_t) over consecutive beliefs of one session, with
    δ_t = KL(q_t ‖ q_end-of-session) (``kl`` of the belief's kind).

    The session-end belief is the target and is detached: the penalty moves earlier beliefs
    towards it monotonically rather than pulling the best-informed belief back.
    """
    ends = session_end_indices(sessions, valid)
    end_index = ends.gather(1, torch.where(valid, sessions, 0))
    end_index = torch.where(valid, end_index, 0)[..., None].expand_as(parameters)
    delta = kl(parameters, parameters.gather(1, end_index).detach())
    same = valid[:, 1:] & valid[:, :-1] & (sessions[:, 1:] == sessions[:, :-1])
    rises = F.relu(delta[:, 1:] - delta[:, :-1])
    return torch.where(same, rises, 0.0).sum() / same.sum().clamp(min=1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; padded entries never enter (even NaN ones)."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)
