"""``dynamite/HalfCheetahVel-v0`` and ``dynamite/HalfCheetahWind-v0``.

Both run gymnasium's ``half_cheetah.xml`` at its stock control rate (5 substeps of 0.01 s) with
HalfCheetah-v5's observation (``qpos[1:]`` then ``qvel``, 17 values) and reset noise.

- **Vel**: the latent is a target forward velocity. Between sessions it *ramps*: it rises by
  ``drift`` ± ``drift_noise`` m/s and wraps from ``max_velocity`` back to ``min_velocity``, so a
  latent-dynamics model has a regular pattern to learn. Reward ``-|v - v_target| - 0.05‖a‖²``.
- **Wind**: the latent is a horizontal force on the torso (N, +x pushes forward), applied through
  ``xfrc_applied``. Between sessions it takes a Gaussian random-walk step, clipped to
  ``±max_wind``. Reward ``-|v - target_velocity| - 0.05‖a‖²``: the wind changes the dynamics,
  never the reward.

``v`` is the forward velocity of the root at the end of the step (``qvel[0]``, observation index
8), so the reward is a function of the next observation.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from offline_dynamite.envs.mlp_policy import MLPPolicy
from offline_dynamite.envs.mujoco_session import MujocoSessionEnv
from offline_dynamite.policies import OracleUnavailableError

FORWARD_VELOCITY_INDEX = 8  # qvel[0] follows the 8 values of qpos[1:]
CONTROL_COST_WEIGHT = 0.05
TOTAL_MASS = 14.0  # half_cheetah.xml's settotalmass


class _HalfCheetahDLCMDP(MujocoSessionEnv):
    """HalfCheetah dynamics and observation; subclasses define the latent and the target."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 20}
    latent_size = 1
    #: Name of the trained oracle's file in ``assets/oracles/``; set by each subclass.
    oracle_file: str

    def __init__(
        self,
        horizon: int,
        switch_prob: float,
        reset_noise_scale: float,
        render_mode: str | None,
        width: int,
        height: int,
    ) -> None:
        self.reset_noise_scale = reset_noise_scale
        observation_space = spaces.Box(-np.inf, np.inf, shape=(17,), dtype=np.float64)
        MujocoEnv.__init__(
            self,
            "half_cheetah.xml",
            frame_skip=5,
            observation_space=observation_space,
            render_mode=render_mode,
            width=width,
            height=height,
            default_camera_config={"distance": 4.0},
        )
        self._init_sessions(switch_prob=switch_prob, horizon=horizon)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        # half_cheetah.xml sets the total mass with the deprecated compiler attribute
        # `settotalmass`, which makes MuJoCo print a warning and append to ./MUJOCO_LOG.TXT on
        # every load. Scaling the compiled model instead gives bit-identical masses, inertias and
        # trajectories.
        with open(self.fullpath) as file:
            xml = file.read().replace(f' settotalmass="{TOTAL_MASS:g}"', "")
        model = mujoco.MjModel.from_xml_string(xml)
        model.vis.global_.offwidth = self.width
        model.vis.global_.offheight = self.height
        data = mujoco.MjData(model)
        mujoco.mj_setTotalmass(model, TOTAL_MASS)
        mujoco.mj_setConst(model, data)
        return model, data

    def _target_velocity(self, latent: np.ndarray) -> np.ndarray | float:
        raise NotImplementedError

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[1:], self.data.qvel])

    def reset_model(self) -> np.ndarray:
        noise = self.reset_noise_scale
        qpos = self.init_qpos + self.np_random.uniform(-noise, noise, size=self.model.nq)
        qvel = self.init_qvel + noise * self.np_random.standard_normal(self.model.nv)
        self.set_state(qpos, qvel)
        self._reset_info = self._begin_episode()
        return self._get_obs()

    def reward(
        self, obs: np.ndarray | None, action: np.ndarray, next_obs: np.ndarray, latent: np.ndarray
    ) -> np.ndarray:
        velocity = next_obs[..., FORWARD_VELOCITY_INDEX]
        tracking = np.abs(velocity - self._target_velocity(latent))
        return -tracking - CONTROL_COST_WEIGHT * np.square(action).sum(axis=-1)

    def make_oracle(self) -> MLPPolicy:
        """The shipped SAC actor trained with the latent in view (``collect/train_oracle.py``).

        There is no scripted way to run a cheetah at a speed, so the oracle is a trained policy,
        stored as plain matrices in ``assets/oracles/<oracle_file>`` and run with numpy.
        """
        path = Path(__file__).parent / "assets" / "oracles" / self.oracle_file
        if not path.exists():
            env_name = Path(self.oracle_file).stem
            raise OracleUnavailableError(
                f"{type(self).__name__}'s oracle {path} is missing: train it with "
                f"`python -m collect.train_oracle --env {env_name}` (docs/environments.md gives "
                "the exact command of the shipped file)"
            )
        return MLPPolicy.load(path)


class HalfCheetahVelEnv(_HalfCheetahDLCMDP):
    """Latent (float32, 1): the target forward velocity in m/s."""

    oracle_file = "halfcheetahvel.npz"

    def __init__(
        self,
        horizon: int = 200,
        switch_prob: float = 0.015,
        min_velocity: float = 0.5,
        max_velocity: float = 3.0,
        drift: float = 0.8,
        drift_noise: float = 0.1,
        reset_noise_scale: float = 0.1,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        if not min_velocity < max_velocity:
            raise ValueError(
                f"min_velocity must be below max_velocity, got {min_velocity} >= {max_velocity}"
            )
        self.min_velocity = min_velocity
        self.max_velocity = max_velocity
        self.drift = drift
        self.drift_noise = drift_noise
        super().__init__(horizon, switch_prob, reset_noise_scale, render_mode, width, height)

    def _target_velocity(self, latent: np.ndarray) -> np.ndarray:
        return latent[..., 0]

    def initial_latent(self, rng: np.random.Generator) -> np.ndarray:
        return np.array([rng.uniform(self.min_velocity, self.max_velocity)], dtype=np.float32)

    def next_latent(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        span = self.max_velocity - self.min_velocity
        step = rng.normal(self.drift, self.drift_noise)
        ramped = self.min_velocity + (latent[0] - self.min_velocity + step) % span
        return np.array([ramped], dtype=np.float32)

    def _apply_latent(self, latent: np.ndarray) -> None:
        pass  # the target velocity only enters the reward


class HalfCheetahWindEnv(_HalfCheetahDLCMDP):
    """Latent (float32, 1): the horizontal wind force on the torso in newtons."""

    oracle_file = "halfcheetahwind.npz"

    def __init__(
        self,
        horizon: int = 200,
        switch_prob: float = 0.015,
        target_velocity: float = 1.5,
        max_wind: float = 30.0,
        wind_step: float = 12.0,
        reset_noise_scale: float = 0.1,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        if max_wind < 0:
            raise ValueError(f"max_wind must be non-negative, got {max_wind}")
        self.target_velocity = target_velocity
        self.max_wind = max_wind
        self.wind_step = wind_step
        super().__init__(horizon, switch_prob, reset_noise_scale, render_mode, width, height)
        self._torso = self.model.body("torso").id

    def _target_velocity(self, latent: np.ndarray) -> float:
        return self.target_velocity

    def initial_latent(self, rng: np.random.Generator) -> np.ndarray:
        return np.array([rng.uniform(-self.max_wind, self.max_wind)], dtype=np.float32)

    def next_latent(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        wind = np.clip(latent[0] + rng.normal(0.0, self.wind_step), -self.max_wind, self.max_wind)
        return np.array([wind], dtype=np.float32)

    def _apply_latent(self, latent: np.ndarray) -> None:
        # mj_resetData clears xfrc_applied, and reset_model re-applies the latent after it.
        self.data.xfrc_applied[self._torso, 0] = latent[0]
