"""``dynamite/Gridworld-v0``: two goal cells, the latent says which one pays.

A 5×5 grid. At reset two distinct goal cells and the agent's start cell are drawn. The goal cells
are observed; which one pays is the latent, and it flips with probability ``flip_prob`` (0.8) at a
session switch: the kernel ``[[0.2, 0.8], [0.8, 0.2]]``. Reward: +1 for arriving on (or staying
on) the paying goal, 0 on the other goal, -0.1 anywhere else.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from offline_dynamite.envs.session import SessionMixin
from offline_dynamite.policies import DeterministicPolicy

# Actions: stay, up (+y), down (-y), right (+x), left (-x).
MOVES = np.array([[0, 0], [0, 1], [0, -1], [1, 0], [-1, 0]], dtype=np.int64)
STAY, UP, DOWN, RIGHT, LEFT = range(5)

PAYING_REWARD = 1.0
OTHER_GOAL_REWARD = 0.0
STEP_REWARD = -0.1


class GridworldEnv(SessionMixin, gym.Env):
    """Observation (float32, 6): agent (x, y), goal 0 (x, y), goal 1 (x, y), integer cells.
    Latent (float32, 1): index of the paying goal, 0.0 or 1.0."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    latent_size = 1

    def __init__(
        self,
        size: int = 5,
        horizon: int = 60,
        switch_prob: float = 0.05,
        flip_prob: float = 0.8,
        render_mode: str | None = None,
    ) -> None:
        if size < 2:
            raise ValueError(f"size must be at least 2 (two goal cells), got {size}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.size = size
        self.flip_prob = flip_prob
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, size - 1.0, shape=(6,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self._init_sessions(switch_prob=switch_prob, horizon=horizon)
        self._agent = np.zeros(2, dtype=np.int64)
        self._goals = np.zeros((2, 2), dtype=np.int64)

    # ------------------------------------------------------------------ latent
    def initial_latent(self, rng: np.random.Generator) -> np.ndarray:
        return np.array([rng.integers(2)], dtype=np.float32)

    def next_latent(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flip = rng.random() < self.flip_prob
        return np.array([1.0 - latent[0] if flip else latent[0]], dtype=np.float32)

    def _apply_latent(self, latent: np.ndarray) -> None:
        pass  # the latent only decides which goal pays

    # ------------------------------------------------------------------ dynamics
    def _obs(self) -> np.ndarray:
        return np.concatenate([self._agent, self._goals.ravel()]).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        cells = self.np_random.choice(self.size * self.size, size=3, replace=False)
        xy = np.stack([cells % self.size, cells // self.size], axis=1)
        self._goals = xy[:2]
        self._agent = xy[2]
        info = self._begin_episode()
        return self._obs(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(
                f"GridworldEnv: action {action!r} is not one of the {self.action_space.n} "
                "discrete actions (0 stay, 1 up, 2 down, 3 right, 4 left)"
            )
        obs = self._obs()
        self._agent = np.clip(self._agent + MOVES[int(action)], 0, self.size - 1)
        next_obs = self._obs()
        reward = float(self.reward(obs, np.asarray(action), next_obs, self._latent))
        truncated, info = self._end_step()
        return next_obs, reward, False, truncated, info

    def reward(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, latent: np.ndarray
    ) -> np.ndarray:
        agent = next_obs[..., 0:2]
        paying = latent[..., 0:1] > 0.5
        paying_goal = np.where(paying, next_obs[..., 4:6], next_obs[..., 2:4])
        other_goal = np.where(paying, next_obs[..., 2:4], next_obs[..., 4:6])
        on_paying = (agent == paying_goal).all(axis=-1)
        on_other = (agent == other_goal).all(axis=-1)
        return np.where(
            on_paying, PAYING_REWARD, np.where(on_other, OTHER_GOAL_REWARD, STEP_REWARD)
        )

    def make_oracle(self) -> GridworldOracle:
        return GridworldOracle()

    def make_explorer(self) -> GridworldExplorer:
        return GridworldExplorer()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        cell = 32
        image = np.full((self.size * cell, self.size * cell, 3), 235, dtype=np.uint8)
        paying = int(self._latent[0] > 0.5)
        colours = {paying: (40, 170, 60), 1 - paying: (200, 60, 60)}
        for index, (x, y) in enumerate(self._goals):
            row = self.size - 1 - y  # +y is up on screen
            image[row * cell : (row + 1) * cell, x * cell : (x + 1) * cell] = colours[index]
        x, y = self._agent
        row = self.size - 1 - y
        pad = cell // 4
        image[row * cell + pad : (row + 1) * cell - pad, x * cell + pad : (x + 1) * cell - pad] = (
            30,
            60,
            200,
        )
        image[::cell] = image[:, ::cell] = 150  # grid lines
        return image


def _towards(observations: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Shortest-path actions to goal ``target`` (0 or 1, per env): larger axis gap first, then stay."""
    agent = observations[:, 0:2]
    goal = np.where(target[:, None] == 1, observations[:, 4:6], observations[:, 2:4])
    dx, dy = (goal - agent).T
    horizontal = np.where(dx > 0, RIGHT, LEFT)
    vertical = np.where(dy > 0, UP, DOWN)
    move = np.where(np.abs(dx) >= np.abs(dy), horizontal, vertical)
    return np.where((dx == 0) & (dy == 0), STAY, move).astype(np.int64)


class GridworldOracle(DeterministicPolicy):
    """Shortest path to the paying goal (larger axis gap first), then stay on it."""

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        return _towards(observations, (latents[:, 0] > 0.5).astype(np.int64))


class GridworldExplorer:
    """The Bayes-adaptive behaviour without the latent: walk to the nearest goal; the reward on
    arrival says whether it pays (+1) or the other one does (0); stay while paid, and when a goal
    stops paying (a switch), walk to the other one.

    It never sees the latent, only its own rewards (:class:`~offline_dynamite.policies.RewardFeedback`),
    so its data shows what a meta-RL agent must learn offline: that an unpaid goal means *go to the
    other one*, a transition a latent-aware oracle never makes (it leaves before any reward tells).
    """

    def reset(self, seeds) -> None:
        self._paying = np.full(len(seeds), -1, dtype=np.int64)  # believed paying goal; -1: unknown
        self._observations: np.ndarray | None = None

    def observe_rewards(self, rewards: np.ndarray) -> None:
        self._rewards = rewards

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        agent = observations[:, 0:2]
        on_goal = [(agent == observations[:, 2 + 2 * g : 4 + 2 * g]).all(axis=1) for g in (0, 1)]
        if self._observations is not None:  # what the last step's reward says about the goal it reached
            for goal in (0, 1):
                paid = self._rewards > 0.5
                self._paying = np.where(on_goal[goal] & paid, goal, self._paying)
                self._paying = np.where(on_goal[goal] & ~paid, 1 - goal, self._paying)
        self._observations = observations
        distance = [np.abs(observations[:, 2 + 2 * g : 4 + 2 * g] - agent).sum(axis=1) for g in (0, 1)]
        nearest = (distance[1] < distance[0]).astype(np.int64)
        return _towards(observations, np.where(self._paying >= 0, self._paying, nearest))

