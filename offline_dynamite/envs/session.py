"""Session mechanics shared by every DLCMDP simulator.

A DLCMDP's hidden context (the *latent*) holds for a session, then changes. After every step that
does not end the episode a switch ``d ~ Bernoulli(switch_prob)`` is drawn; on ``d = 1`` the latent
moves by the env's transition kernel and the session index increases. ``switch_prob = 0`` is a
latent MDP (one session per episode), ``switch_prob = 1`` a new session at every step.

Every env reports the same three ``info`` keys, with the same shapes and dtypes after ``reset`` and
after every ``step`` (Minari stores infos only when their structure never changes):

``latent``
    float32 vector: the context that governs the *next* transition. With Minari's T+1 infos per
    episode, ``infos["latent"][t]`` is the latent of transition ``t``.
``session_id``
    int64: the index of the session the observation belongs to (0 at reset).
``session_start``
    bool: a new session began at this observation (always true at reset).

An env plugs in by mixing in :class:`SessionMixin` and implementing the abstract methods: where a
latent starts (:meth:`initial_latent`), how it moves at a switch (:meth:`next_latent`), what it does
to the simulator (:meth:`_apply_latent`), and the vectorised :meth:`reward`.
"""

from __future__ import annotations

import abc
from typing import Any

import gymnasium as gym
import numpy as np

from offline_dynamite.policies import BatchPolicy


class SessionMixin(abc.ABC):
    """Latent context, session switching, horizon and the shared info schema.

    Mix in before the gymnasium base class: ``class MyEnv(SessionMixin, MujocoEnv)``. Call
    :meth:`_init_sessions` in ``__init__``, :meth:`_begin_episode` in ``reset`` (after the
    simulator state is reset) and :meth:`_end_step` at the end of ``step`` (after the reward is
    computed with the current latent).
    """

    #: Length of the latent vector.
    latent_size: int

    np_random: np.random.Generator
    action_space: gym.spaces.Space

    def _init_sessions(self, *, switch_prob: float, horizon: int) -> None:
        if not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"switch_prob must be in [0, 1], got {switch_prob}")
        if int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon}")
        self.switch_prob = float(switch_prob)
        self.horizon = int(horizon)
        self._latent = np.zeros(self.latent_size, dtype=np.float32)
        self._session_id = 0
        self._session_start = True
        self._elapsed_steps = 0

    # ------------------------------------------------------------------ env-specific parts
    @abc.abstractmethod
    def initial_latent(self, rng: np.random.Generator) -> np.ndarray:
        """Draw the first session's latent."""

    @abc.abstractmethod
    def next_latent(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw the next session's latent from the transition kernel ``T_m(m' | m)``."""

    @abc.abstractmethod
    def _apply_latent(self, latent: np.ndarray) -> None:
        """Make the simulator follow ``latent`` (move a target, set a force); may do nothing."""

    @abc.abstractmethod
    def reward(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, latent: np.ndarray
    ) -> np.ndarray:
        """Reward of transitions, vectorised over any leading batch shape.

        Equals the reward ``step`` returns for ``(obs, action) -> next_obs`` under ``latent``
        (the ``info["latent"]`` that came with ``obs``), so datasets can be relabelled under
        other latents.
        """

    @abc.abstractmethod
    def make_oracle(self) -> BatchPolicy:
        """A batched policy that knows the latent and solves the task."""

    # ------------------------------------------------------------------ shared mechanics
    @property
    def latent(self) -> np.ndarray:
        """The current latent (a copy)."""
        return self._latent.copy()

    @property
    def session_id(self) -> int:
        return self._session_id

    def set_latent(self, latent: np.ndarray) -> None:
        """Replace the current session's latent, e.g. to replay a recorded context."""
        latent = np.asarray(latent, dtype=np.float32)
        if latent.shape != (self.latent_size,):
            raise ValueError(f"latent must have shape ({self.latent_size},), got {latent.shape}")
        self._latent = latent.copy()
        self._apply_latent(self._latent)

    def _begin_episode(self) -> dict[str, Any]:
        self._elapsed_steps = 0
        self._session_id = 0
        self._session_start = True
        self.set_latent(self.initial_latent(self.np_random))
        return self._session_info()

    def _end_step(self) -> tuple[bool, dict[str, Any]]:
        """Advance time and maybe switch the session; returns ``(truncated, info)``."""
        self._elapsed_steps += 1
        truncated = self._elapsed_steps >= self.horizon
        # A switch after the last step would open a session with no transitions in it.
        self._session_start = (not truncated) and self.np_random.random() < self.switch_prob
        if self._session_start:
            self._session_id += 1
            self.set_latent(self.next_latent(self._latent, self.np_random))
        return truncated, self._session_info()

    def _session_info(self) -> dict[str, Any]:
        return {
            "latent": self._latent.copy(),
            "session_id": np.int64(self._session_id),
            "session_start": np.bool_(self._session_start),
        }

    def _check_action(self, action: Any) -> np.ndarray:
        """Reject actions of the wrong shape, out of range or not finite, with one clear line."""
        space = self.action_space
        action = np.asarray(action)
        if action.shape != space.shape:
            raise ValueError(
                f"{type(self).__name__}: action has shape {action.shape}, expected {space.shape}"
            )
        # Written so that NaN fails too (every comparison with NaN is false).
        if not ((action >= space.low) & (action <= space.high)).all():
            raise ValueError(
                f"{type(self).__name__}: action {action} is outside the action space "
                f"[{space.low}, {space.high}]; clip it first"
            )
        return action
