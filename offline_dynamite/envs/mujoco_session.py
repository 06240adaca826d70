"""The step and reset plumbing that MuJoCo DLCMDP envs share."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from offline_dynamite.envs.session import SessionMixin


class MujocoSessionEnv(SessionMixin, MujocoEnv):
    """A MuJoCo env whose reward is a function of the next observation, the action and the latent.

    Subclasses implement ``_get_obs``, ``reset_model`` (ending with
    ``self._reset_info = self._begin_episode()`` once the simulator state is set) and the
    :class:`SessionMixin` methods.
    """

    _reset_info: dict[str, Any]

    def _get_reset_info(self) -> dict[str, Any]:
        return self._reset_info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = self._check_action(action)
        self.do_simulation(action, self.frame_skip)
        obs = self._get_obs()
        reward = float(self.reward(None, action, obs, self._latent))  # the latent before a switch
        truncated, info = self._end_step()
        if self.render_mode == "human":
            self.render()
        return obs, reward, False, truncated, info
