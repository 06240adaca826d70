"""``dynamite/Reacher-v0``: reach a goal that rotates along a circle between sessions.

Gymnasium's Reacher (two-link planar arm, torque control, ``reacher.xml``) with the goal drawn on a
circle of radius ``goal_radius`` inside the arm's reach. At a session switch the goal rotates
along the circle by ``rotation_step`` ± ``rotation_noise`` radians (counter-clockwise on average).
The observation drops what gymnasium's Reacher shows of the goal (its position and the
fingertip−goal vector) and shows the fingertip position instead, so that the reward is a function
of the observation and the latent.
"""

from __future__ import annotations


import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from offline_dynamite.envs.mujoco_session import MujocoSessionEnv
from offline_dynamite.policies import DeterministicPolicy

# Link lengths of reacher.xml: shoulder→elbow 0.1 m, elbow→fingertip 0.11 m.
LINK_LENGTHS = (0.1, 0.11)


class ReacherEnv(MujocoSessionEnv):
    """Observation (float64, 8): cos q (2), sin q (2), joint velocities (2), fingertip (x, y).
    Latent (float32, 2): goal (x, y) in metres. Action: joint torques in [-1, 1]²."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 50}
    latent_size = 2

    def __init__(
        self,
        horizon: int = 150,
        switch_prob: float = 0.02,
        goal_radius: float = 0.15,
        rotation_step: float = np.pi / 3,
        rotation_noise: float = np.pi / 12,
        control_cost_weight: float = 1.0,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        reach = sum(LINK_LENGTHS)
        if not abs(LINK_LENGTHS[0] - LINK_LENGTHS[1]) < goal_radius < reach:
            raise ValueError(f"goal_radius must be inside the arm's reach (0.01, {reach}) m")
        self.goal_radius = goal_radius
        self.rotation_step = rotation_step
        self.rotation_noise = rotation_noise
        self.control_cost_weight = control_cost_weight
        observation_space = spaces.Box(-np.inf, np.inf, shape=(8,), dtype=np.float64)
        MujocoEnv.__init__(
            self,
            "reacher.xml",
            frame_skip=2,
            observation_space=observation_space,
            render_mode=render_mode,
            width=width,
            height=height,
            default_camera_config={"trackbodyid": 0},
        )
        self._fingertip = self.data.body("fingertip").xpos
        self._init_sessions(switch_prob=switch_prob, horizon=horizon)

    # ------------------------------------------------------------------ latent
    def _goal_at(self, angle: float) -> np.ndarray:
        return (self.goal_radius * np.array([np.cos(angle), np.sin(angle)])).astype(np.float32)

    def initial_latent(self, rng: np.random.Generator) -> np.ndarray:
        return self._goal_at(rng.uniform(0.0, 2 * np.pi))

    def next_latent(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        angle = np.arctan2(latent[1], latent[0])
        return self._goal_at(angle + rng.normal(self.rotation_step, self.rotation_noise))

    def _apply_latent(self, latent: np.ndarray) -> None:
        # The target body only marks the goal on screen (it has no contacts); move it there.
        qpos, qvel = self.data.qpos.copy(), self.data.qvel.copy()
        qpos[2:4], qvel[2:4] = latent, 0.0
        self.set_state(qpos, qvel)

    # ------------------------------------------------------------------ dynamics
    def _get_obs(self) -> np.ndarray:
        angles = self.data.qpos[:2]
        return np.concatenate(
            [np.cos(angles), np.sin(angles), self.data.qvel[:2], self._fingertip[:2]]
        )

    def reset_model(self) -> np.ndarray:
        qpos = self.init_qpos + self.np_random.uniform(-0.1, 0.1, size=self.model.nq)
        qvel = self.init_qvel + self.np_random.uniform(-0.005, 0.005, size=self.model.nv)
        self.set_state(qpos, qvel)
        self._reset_info = self._begin_episode()
        return self._get_obs()

    def reward(
        self, obs: np.ndarray | None, action: np.ndarray, next_obs: np.ndarray, latent: np.ndarray
    ) -> np.ndarray:
        distance = np.linalg.norm(next_obs[..., 6:8] - latent, axis=-1)
        return -distance - self.control_cost_weight * np.square(action).sum(axis=-1)

    def make_oracle(self) -> ReacherOracle:
        return ReacherOracle()


class ReacherOracle(DeterministicPolicy):
    """Inverse kinematics to the goal, then joint-space PD on the torques.

    Low gains: the control cost (‖a‖², weight 1) punishes fast moves more than a slower approach
    costs in distance (gains picked by a grid search on the return).

    Jacobian-transpose control stalls when the arm is stretched straight (the Jacobian loses rank
    along the radius, and reset poses are nearly straight), so the oracle solves the two-link
    inverse kinematics exactly, keeping the elbow on the side it is already bent to.
    """

    def __init__(self, position_gain: float = 0.5, damping: float = 0.08) -> None:
        self.position_gain = position_gain
        self.damping = damping

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        cos, sin, velocities = observations[:, 0:2], observations[:, 2:4], observations[:, 4:6]
        angles = np.arctan2(sin, cos)
        l0, l1 = LINK_LENGTHS
        x, y = latents[:, 0], latents[:, 1]
        cos_elbow = (x**2 + y**2 - l0**2 - l1**2) / (2 * l0 * l1)
        elbow = np.arccos(np.clip(cos_elbow, -1.0, 1.0)) * np.where(angles[:, 1] < 0, -1.0, 1.0)
        shoulder = np.arctan2(y, x) - np.arctan2(l1 * np.sin(elbow), l0 + l1 * np.cos(elbow))
        error = np.stack([shoulder, elbow], axis=1) - angles
        error = (error + np.pi) % (2 * np.pi) - np.pi  # the shoulder turns freely: shortest way
        torque = self.position_gain * error - self.damping * velocities
        return np.clip(torque, -1.0, 1.0).astype(np.float32)
