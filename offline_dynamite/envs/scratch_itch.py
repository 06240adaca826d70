"""``dynamite/ScratchItch-v0``: scratch an itch that moves along a person's arm between sessions.

Assistive Gym's ScratchItch task (a robot holding a scratcher must reach an itch on a person's arm
and scratch it gently) rebuilt in MuJoCo as a DLCMDP, on the project's session mechanics.

Scene (``assets/scratch_itch.xml``, written for this project)
    A 6-joint robot arm (base pan, shoulder lift, elbow, wrist roll, wrist pitch, wrist yaw) on a
    pedestal, holding a 0.23 m scratching stick with a round tip. A seated person (torso, head,
    left arm in the lap) faces it with the right arm at rest on an armrest: upper arm 0.279 m ×
    radius 0.043 m sloping down from the shoulder, forearm 0.257 m × radius 0.033 m level, and a
    hand (Assistive Gym's male sizes). The world frame *is* the robot frame (base at the origin,
    z up), so every position below is in robot coordinates. The person is static; the robot's
    geoms collide with the person and the furniture (never with each other), and every force
    comes from ``mujoco.mj_contactForce`` (normal component).

Control (as Assistive Gym)
    ``action ∈ [−1, 1]⁶`` sets each joint's PD target (a MuJoCo position servo) to the
    *measured* joint angle plus ``0.05·action`` rad, within the joint's range; 5 physics substeps
    of 0.02 s make 10 Hz control. Because the target is relative to the measured angle, it is a
    function of the observation and the action, and the step stays Markov. The servos have
    gravity compensation, so ``a = 0`` holds the arm still, and pressing on the person needs a
    continued push (the force the robot can exert per step is bounded by the servo gain times
    0.05 rad).

Latent: the itch (float32, 9; see ``LATENT_*``)
    ``[x, y, z, nx, ny, nz, limb, axial, angle]``: the itch's position on the skin, the skin's
    outward normal there, which limb (0 upper arm, 1 forearm), the distance along the limb from its
    proximal joint (m) and the angle around the limb (rad, 0 = lateral side, π/2 = top, π = medial
    side). ``limb, axial, angle`` are the itch's coordinates (the kernel moves them); position and
    normal are derived from them and are what the reward and the oracle use. The itch lies on the
    limb's cylindrical part (``axial ∈ [radius, length − radius]``) and on its upper half
    (``angle ∈ [0, π]``), where a robot can reach a seated person's arm.

Kernel
    The itch starts uniformly on the upper half of either limb. At a session switch it moves along
    the arm by ``itch_step_min..itch_step_max`` m in a random direction, measured along the arm's
    length from shoulder to wrist (so it crosses the elbow between the upper arm and the forearm
    when it moves past it), and its angle moves by up to ``±itch_angle_step`` (reflected into
    [0, π]): the person's preference drifts. A step that would pass the shoulder or wrist end of
    the region goes the other way instead, so every switch moves the itch by ``itch_step_min..
    itch_step_max`` along the arm.

Observation (float64, 40; robot frame; see ``OBS_*``)
    tool tip position (3), tool orientation quaternion ``w, x, y, z`` with ``w ≥ 0`` (4), tool tip
    velocity (3), joint angles (6), joint velocities (6), the person's right shoulder, elbow and
    wrist positions (9), the total contact force on the tool (1), the tool's force on the arm (1)
    and its centre of pressure on the arm (3, zeros when not touching), the total force of the
    robot on the person (1), and the *scratch anchor* (3). The itch is not observed.

Reward (Assistive Gym's weights)
    ``−1.0·‖tip − itch‖ − 0.01·‖a‖ + 2.0·scratch − 0.25·‖tip velocity‖
    − 0.01·(force on the person − force at the itch)
    − 0.05·(force at the itch if ≥ 10 N)``,
    with ``scratch = 5`` when the tool touches the arm within 0.025 m of the itch, the contact
    point moved more than 0.01 m since the last scratch stroke, and the force at the itch is below
    10 N. All forces in newtons; the force at the itch is the tool's force on the arm when its
    centre of pressure lies within 0.025 m of the itch, else 0.

How ``reward(obs, action, next_obs, latent)`` can equal the step reward
    Assistive Gym compares the contact point with the *last rewarded* contact point, a piece of
    history that depends on where the itch was (only contacts near the itch are rewarded). Putting
    it in the observation would leak the itch, and it would be wrong when a dataset is relabelled
    under another latent. Instead the robot keeps a **scratch anchor** that does not depend on the
    itch: the arm contact point recorded at its latest stroke. Whenever the tool touches the arm
    more than 0.01 m from the anchor, that is a new stroke and the anchor moves there. It is the
    robot's own record of its contact trajectory (as a force-sensing tool would keep), so it is a
    fair observation; it starts at the origin (the robot's base, far from the arm: "no stroke
    yet"). A scratch is then "touching within 0.025 m of the itch on a new stroke", which reads
    the old anchor from ``obs`` and the contact from ``next_obs``. While scratching the itch back
    and forth this is Assistive Gym's rule exactly (every stroke there is a rewarded contact); it
    differs only for strokes that start away from the itch or press it with 10 N or more (they
    move our anchor, not Assistive Gym's). Likewise the contacts are summarised as
    the robot senses them: the tool's total force on the arm and its centre of pressure (one point
    per step), the total force on the person.

``info`` (besides the session keys): ``scratch_count`` (int64, successful scratches so far in the
episode; Assistive Gym's ``task_success``) and ``total_force_on_person`` (float64, N; Assistive
Gym's ``total_force_on_human``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from offline_dynamite.envs.session import SessionMixin

ASSET_PATH = os.path.join(os.path.dirname(__file__), "assets", "scratch_itch.xml")

# ---------------------------------------------------------------- observation layout (float64, 40)
OBS_TOOL_POS = slice(0, 3)
OBS_TOOL_QUAT = slice(3, 7)
OBS_TOOL_VEL = slice(7, 10)
OBS_JOINT_POS = slice(10, 16)
OBS_JOINT_VEL = slice(16, 22)
OBS_SHOULDER = slice(22, 25)
OBS_ELBOW = slice(25, 28)
OBS_WRIST = slice(28, 31)
OBS_TOOL_FORCE = 31
OBS_ARM_FORCE = 32
OBS_ARM_CONTACT = slice(33, 36)
OBS_PERSON_FORCE = 36
OBS_SCRATCH_ANCHOR = slice(37, 40)
OBS_SIZE = 40

# ---------------------------------------------------------------- latent layout (float32, 9)
LATENT_POS = slice(0, 3)
LATENT_NORMAL = slice(3, 6)
LATENT_LIMB = 6
LATENT_AXIAL = 7
LATENT_ANGLE = 8
LATENT_SIZE = 9

UPPER_ARM, FOREARM = 0, 1
JOINT_NAMES = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_roll", "wrist_pitch", "wrist_yaw")
ROBOT_BODIES = (
    "shoulder_pan_link",
    "upper_link",
    "fore_link",
    "wrist_roll_link",
    "wrist_pitch_link",
    "tool",
)

# ---------------------------------------------------------------- control and reward constants
ACTION_SCALE = 0.05  # rad of PD-target change per unit of action (Assistive Gym's 0.05)
FRAME_SKIP = 5  # substeps of 0.02 s: 10 Hz control
#: Resting pose: the stick points straight down, its tip 0.2 m above the elbow.
HOME_QPOS = np.array([0.19, 0.37, 1.79, 0.0, 0.98, 0.0])

DISTANCE_WEIGHT = 1.0
ACTION_WEIGHT = 0.01
SCRATCH_REWARD_WEIGHT = 2.0
SCRATCH_REWARD = 5.0
ITCH_RADIUS = 0.025  # m: contacts this close to the itch scratch it
STROKE_MIN_MOVE = 0.01  # m: a contact this far from the anchor starts a new stroke
MAX_ITCH_FORCE = 10.0  # N: scratching harder hurts
SPEED_WEIGHT = 0.25
FORCE_AWAY_WEIGHT = 0.01
HIGH_FORCE_WEIGHT = 0.05

# Roles of geoms in the contact bookkeeping.
_ROLE_SCENERY, _ROLE_ROBOT, _ROLE_TOOL, _ROLE_LIMB, _ROLE_PERSON = range(5)
_TOOL_GEOMS = ("tool_handle", "tool_shaft", "tool_tip")
_LIMB_GEOMS = ("upper_arm", "forearm")  # where itches are
_PERSON_JOINT_SITES = ("shoulder", "elbow", "wrist")  # of the right arm
_OTHER_PERSON_GEOMS = ("hand", "torso", "shoulders", "left_arm", "left_forearm", "neck", "head")


# ==================================================================== geometry of the person's arm
@dataclass(frozen=True)
class Limb:
    """A capsule from ``proximal`` to ``distal`` joint, with a frame for points on its skin."""

    proximal: np.ndarray
    distal: np.ndarray
    radius: float

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.distal - self.proximal))

    @property
    def axis(self) -> np.ndarray:
        """Unit vector from the proximal to the distal joint."""
        return (self.distal - self.proximal) / self.length

    @property
    def up(self) -> np.ndarray:
        """Unit vector perpendicular to the axis, as close to world up as possible (angle π/2)."""
        world_up = np.array([0.0, 0.0, 1.0])
        up = world_up - (world_up @ self.axis) * self.axis
        return up / np.linalg.norm(up)

    @property
    def lateral(self) -> np.ndarray:
        """Unit vector perpendicular to axis and up, pointing away from the body (angle 0)."""
        return np.cross(self.axis, self.up)

    @property
    def itch_span(self) -> tuple[float, float]:
        """Axial range of itches: the cylindrical part, clear of the rounded ends at the joints."""
        return self.radius, self.length - self.radius

    def surface_point(self, axial: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """Position and outward normal of the skin point at ``axial`` m along, ``angle`` around."""
        normal = np.cos(angle) * self.lateral + np.sin(angle) * self.up
        return self.proximal + axial * self.axis + self.radius * normal, normal


@dataclass(frozen=True)
class ArmGeometry:
    """The person's right upper arm and forearm, read from the compiled model."""

    limbs: tuple[Limb, Limb]

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> ArmGeometry:
        shoulder, elbow, wrist = (model.site(name).pos.copy() for name in _PERSON_JOINT_SITES)
        upper_arm = Limb(shoulder, elbow, float(model.geom("upper_arm").size[0]))
        forearm = Limb(elbow, wrist, float(model.geom("forearm").size[0]))
        return cls((upper_arm, forearm))

    def _span_length(self, limb: int) -> float:
        low, high = self.limbs[limb].itch_span
        return high - low

    @property
    def total_length(self) -> float:
        """Length of the itch region measured along the arm, shoulder end to wrist end."""
        return self._span_length(UPPER_ARM) + self._span_length(FOREARM)

    def along_arm(self, limb: int, axial: float) -> float:
        """Arm coordinate (m from the shoulder end of the itch region) of a limb point."""
        offset = 0.0 if limb == UPPER_ARM else self._span_length(UPPER_ARM)
        return offset + axial - self.limbs[limb].itch_span[0]

    def limb_point(self, along: float) -> tuple[int, float]:
        """Inverse of :meth:`along_arm`: ``(limb, axial)`` of an arm coordinate."""
        upper_length = self._span_length(UPPER_ARM)
        limb = UPPER_ARM if along <= upper_length else FOREARM
        offset = 0.0 if limb == UPPER_ARM else upper_length
        return limb, along - offset + self.limbs[limb].itch_span[0]


def _new_stroke(arm_force, contact_point, anchor):
    """Whether the tool touches the arm more than 0.01 m from the scratch anchor (a new stroke,
    after which the anchor moves to the contact point). Vectorised; the one rule that both the
    step's anchor update and :meth:`ScratchItchEnv.reward` apply."""
    moved = np.linalg.norm(contact_point - anchor, axis=-1) > STROKE_MIN_MOVE
    return (arm_force > 0) & moved


@dataclass(frozen=True)
class _Contacts:
    """The current contacts as the robot senses them (normal forces in N)."""

    tool_force: float  # every contact on the tool
    arm_force: float  # the tool on the upper arm and forearm
    arm_point: np.ndarray  # force-weighted centre of the tool's contacts on the arm
    person_force: float  # the robot, tool included, on any part of the person

    @classmethod
    def none(cls) -> _Contacts:
        return cls(0.0, 0.0, np.zeros(3), 0.0)


def _reflect(value: float, low: float, high: float) -> float:
    """Fold ``value`` back into ``[low, high]`` as if it bounced off the ends."""
    span = high - low
    folded = (value - low) % (2.0 * span)
    return low + (folded if folded <= span else 2.0 * span - folded)


# ==================================================================== the env
class ScratchItchEnv(SessionMixin, MujocoEnv):
    """Observation (float64, 40), latent (float32, 9) and action ([-1, 1]⁶): see the module doc."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 10}
    latent_size = LATENT_SIZE

    def __init__(
        self,
        horizon: int = 200,
        switch_prob: float = 0.015,
        itch_step_min: float = 0.04,
        itch_step_max: float = 0.10,
        itch_angle_step: float = np.pi / 4,
        reset_noise_scale: float = 0.05,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        if not 0.0 <= itch_step_min <= itch_step_max:
            raise ValueError(
                f"need 0 <= itch_step_min <= itch_step_max, got {itch_step_min}, {itch_step_max}"
            )
        if not 0.0 <= itch_angle_step <= np.pi:
            raise ValueError(f"itch_angle_step must be in [0, pi], got {itch_angle_step}")
        if reset_noise_scale < 0:
            raise ValueError(f"reset_noise_scale must be non-negative, got {reset_noise_scale}")
        self.itch_step_min = itch_step_min
        self.itch_step_max = itch_step_max
        self.itch_angle_step = itch_angle_step
        self.reset_noise_scale = reset_noise_scale
        observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_SIZE,), dtype=np.float64)
        MujocoEnv.__init__(
            self,
            ASSET_PATH,
            frame_skip=FRAME_SKIP,
            observation_space=observation_space,
            render_mode=render_mode,
            width=width,
            height=height,
            default_camera_config={
                "lookat": np.array([0.62, 0.05, 0.0]),
                "distance": 1.55,
                "azimuth": 60.0,
                "elevation": -30.0,
            },
        )
        model = self.model
        self.arm = ArmGeometry.from_model(model)
        if itch_step_max > self.arm.total_length / 2:
            # Longer steps could leave no room to turn back at the ends of the arm.
            raise ValueError(
                f"itch_step_max must be at most {self.arm.total_length / 2:.3f} m (half the "
                f"arm's itch region), got {itch_step_max}"
            )
        self._joint_qpos = np.array([model.joint(name).qposadr[0] for name in JOINT_NAMES])
        self._joint_qvel = np.array([model.joint(name).dofadr[0] for name in JOINT_NAMES])
        self._ctrl_low, self._ctrl_high = model.actuator_ctrlrange.T.copy()
        self._tool_tip = model.site("tool_tip").id
        self._tool_body = model.body("tool").id
        self._itch_site = model.site("itch").id
        self._person_joints = np.concatenate([model.site(name).pos for name in _PERSON_JOINT_SITES])
        self._geom_role = self._geom_roles(model)
        self._force = np.zeros(6)
        self._velocity = np.zeros(6)
        self._scratch_anchor = np.zeros(3)
        self._scratch_count = 0
        self._init_sessions(switch_prob=switch_prob, horizon=horizon)

    @staticmethod
    def _geom_roles(model: mujoco.MjModel) -> np.ndarray:
        roles = np.full(model.ngeom, _ROLE_SCENERY, dtype=np.int64)
        robot_bodies = {model.body(name).id for name in ROBOT_BODIES}
        for geom in range(model.ngeom):
            name = model.geom(geom).name
            if name in _TOOL_GEOMS:
                roles[geom] = _ROLE_TOOL
            elif name in _LIMB_GEOMS:
                roles[geom] = _ROLE_LIMB
            elif name in _OTHER_PERSON_GEOMS:
                roles[geom] = _ROLE_PERSON
            elif model.geom_bodyid[geom] in robot_bodies:
                roles[geom] = _ROLE_ROBOT
        return roles

    def _set_action_space(self) -> spaces.Box:
        # MujocoEnv would use the servos' ctrlrange (joint angles); actions are target deltas.
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.model.nu,), dtype=np.float32)
        return self.action_space

    # ------------------------------------------------------------------ latent
    def itch_latent(self, limb: int, axial: float, angle: float) -> np.ndarray:
        """The latent of an itch at ``axial`` m along limb ``limb``, ``angle`` rad around it."""
        position, normal = self.arm.limbs[limb].surface_point(axial, angle)
        return np.concatenate([position, normal, [limb, axial, angle]]).astype(np.float32)

    def initial_latent(self, rng: np.random.Generator) -> np.ndarray:
        limb = int(rng.integers(2))
        axial = rng.uniform(*self.arm.limbs[limb].itch_span)
        return self.itch_latent(limb, axial, rng.uniform(0.0, np.pi))

    def next_latent(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        limb = int(round(float(latent[LATENT_LIMB])))
        along = self.arm.along_arm(limb, float(latent[LATENT_AXIAL]))
        step = rng.choice([-1.0, 1.0]) * rng.uniform(self.itch_step_min, self.itch_step_max)
        if not 0.0 <= along + step <= self.arm.total_length:
            step = -step  # at the shoulder or wrist end: move the other way, as far
        limb, axial = self.arm.limb_point(along + step)
        angle_step = rng.uniform(-self.itch_angle_step, self.itch_angle_step)
        angle = _reflect(float(latent[LATENT_ANGLE]) + angle_step, 0.0, np.pi)
        return self.itch_latent(limb, axial, angle)

    def _apply_latent(self, latent: np.ndarray) -> None:
        # The itch marker is a site (never collides); refresh the kinematics so a render shows it
        # in place. mj_kinematics changes no state.
        self.model.site_pos[self._itch_site] = latent[LATENT_POS]
        mujoco.mj_kinematics(self.model, self.data)

    # ------------------------------------------------------------------ dynamics
    def reset_model(self) -> np.ndarray:
        noise = self.reset_noise_scale
        qpos = self.init_qpos.copy()
        qpos[self._joint_qpos] = HOME_QPOS + self.np_random.uniform(-noise, noise, size=6)
        self.set_state(qpos, np.zeros(self.model.nv))
        self.data.ctrl[:] = qpos[self._joint_qpos]  # the servos hold the pose
        self._scratch_anchor = np.zeros(3)
        self._scratch_count = 0
        self._reset_info = self._begin_episode()
        contact = self._sense_contacts()
        self._obs = self._get_obs(contact)
        self._reset_info.update(self._task_info(contact))
        return self._obs.copy()

    def _get_reset_info(self) -> dict[str, Any]:
        return self._reset_info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = self._check_action(action)
        targets = self.data.qpos[self._joint_qpos] + ACTION_SCALE * action
        self.do_simulation(np.clip(targets, self._ctrl_low, self._ctrl_high), self.frame_skip)
        # mj_step leaves positions, contacts and forces as they were at the start of its last
        # substep; measure at the end of the step instead, so that the observation is one instant.
        mujoco.mj_forward(self.model, self.data)
        contact = self._sense_contacts()
        if _new_stroke(contact.arm_force, contact.arm_point, self._scratch_anchor):
            self._scratch_anchor = contact.arm_point.copy()
        obs = self._get_obs(contact)
        terms = self.reward_terms(self._obs, action, obs, self._latent)
        self._scratch_count += int(terms["scratch"])
        self._obs = obs
        truncated, info = self._end_step()
        info.update(self._task_info(contact))
        if self.render_mode == "human":
            self.render()
        return obs.copy(), float(terms["reward"]), False, truncated, info

    def _task_info(self, contact: _Contacts) -> dict[str, Any]:
        return {
            "scratch_count": np.int64(self._scratch_count),
            "total_force_on_person": np.float64(contact.person_force),
        }

    def _sense_contacts(self) -> _Contacts:
        """Normal forces of the current contacts, summed the way the robot senses them."""
        ncon = self.data.ncon
        if ncon == 0:
            return _Contacts.none()
        contacts = self.data.contact
        roles = self._geom_role[contacts.geom[:ncon]]  # [ncon, 2]
        forces = np.zeros(ncon)
        for i in np.flatnonzero(contacts.efc_address[:ncon] >= 0):  # a few contacts at most
            mujoco.mj_contactForce(self.model, self.data, int(i), self._force)
            forces[i] = self._force[0]  # normal component, in the contact frame
        # Robot geoms only collide with person and scenery geoms, so every contact has one robot
        # side and one other side.
        tool = (roles == _ROLE_TOOL).any(axis=1)
        on_limb = tool & (roles == _ROLE_LIMB).any(axis=1)
        on_person = (roles >= _ROLE_LIMB).any(axis=1)
        arm_force = float(forces[on_limb].sum())
        if arm_force > 0:
            arm_point = forces[on_limb] @ contacts.pos[:ncon][on_limb] / arm_force
        else:
            arm_point = np.zeros(3)
        return _Contacts(
            tool_force=float(forces[tool].sum()),
            arm_force=arm_force,
            arm_point=arm_point,
            person_force=float(forces[on_person].sum()),
        )

    def _get_obs(self, contact: _Contacts) -> np.ndarray:
        data = self.data
        quaternion = data.xquat[self._tool_body]
        quaternion = quaternion if quaternion[0] >= 0 else -quaternion  # q and -q: same rotation
        mujoco.mj_objectVelocity(
            self.model, data, mujoco.mjtObj.mjOBJ_SITE, self._tool_tip, self._velocity, 0
        )
        return np.concatenate(
            [
                data.site_xpos[self._tool_tip],
                quaternion,
                self._velocity[3:],  # world-frame linear velocity (the first three are angular)
                data.qpos[self._joint_qpos],
                data.qvel[self._joint_qvel],
                self._person_joints,
                [contact.tool_force, contact.arm_force],
                contact.arm_point,
                [contact.person_force],
                self._scratch_anchor,
            ]
        )

    # ------------------------------------------------------------------ reward
    @staticmethod
    def reward_terms(
        obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, latent: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The reward and its parts (``scratch`` is a bool), vectorised over leading axes."""
        itch = latent[..., LATENT_POS]
        distance = np.linalg.norm(next_obs[..., OBS_TOOL_POS] - itch, axis=-1)
        arm_force = next_obs[..., OBS_ARM_FORCE]
        contact_point = next_obs[..., OBS_ARM_CONTACT]
        at_itch = (arm_force > 0) & (np.linalg.norm(contact_point - itch, axis=-1) < ITCH_RADIUS)
        force_at_itch = np.where(at_itch, arm_force, 0.0)
        new_stroke = _new_stroke(arm_force, contact_point, obs[..., OBS_SCRATCH_ANCHOR])
        scratch = at_itch & new_stroke & (force_at_itch < MAX_ITCH_FORCE)
        preference = (
            -SPEED_WEIGHT * np.linalg.norm(next_obs[..., OBS_TOOL_VEL], axis=-1)
            - FORCE_AWAY_WEIGHT * (next_obs[..., OBS_PERSON_FORCE] - force_at_itch)
            - HIGH_FORCE_WEIGHT * np.where(force_at_itch >= MAX_ITCH_FORCE, force_at_itch, 0.0)
        )
        reward = (
            -DISTANCE_WEIGHT * distance
            - ACTION_WEIGHT * np.linalg.norm(action, axis=-1)
            + SCRATCH_REWARD_WEIGHT * SCRATCH_REWARD * scratch
            + preference
        )
        return {"reward": reward, "scratch": scratch, "distance": distance}

    def reward(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, latent: np.ndarray
    ) -> np.ndarray:
        return self.reward_terms(obs, action, next_obs, latent)["reward"]

    def make_oracle(self) -> ScratchItchOracle:
        return ScratchItchOracle()



# ==================================================================== the oracle
class ScratchItchOracle:
    """Reach the itch, press lightly and scratch back and forth along the limb, then follow it.

    Differential inverse kinematics: each step it picks a tool-tip target and a stick direction,
    and turns their errors into joint-target deltas by damped least squares on MuJoCo's site
    Jacobians (``mj_jacSite``, from its own copy of the model posed at the observed joint angles),
    plus a pull towards the resting pose in the task's null space. The deltas are scaled, not
    clipped, into the action range, so the tip still moves the planned way.

    Where the tip goes, from the observation and the latent (itch position and normal):

    - **Away from the itch** (at the start, or after a switch): back off the skin if touching it;
      go straight to the *hover point* ``hover_height`` above the itch if that path keeps clear of
      the person (their arm, hand, torso and head as capsules); otherwise over the top, at
      ``safe_height`` with the stick pointing down. Steps of at most ``max_tip_step``.
    - **Over the itch**: descend along the normal and *press*: aim a little below the skin. The
      servos press with a force proportional to how far below the current tip the target lies, so
      the push is set from the tip, ``push`` plus ``force_gain`` times the shortfall of the sensed
      arm force from ``contact_force`` (one step late, which is why the target is a few newtons).
    - **Scratching**: aim ``stroke`` past the itch along the limb, and turn back once the tip has
      passed ``stroke_turn``: strokes are timed by where the tip is, not by the clock, because the
      servos lag (more so in contact). Each stroke moves the contact by more than the 0.01 m a
      scratch needs and stays inside the 0.025 m itch radius. Steps of at most ``contact_step``.

    The stick may lean up to ``max_tilt`` rad from the wanted direction while travelling and
    ``scratch_tilt`` over the itch: turning the stick is the slow part of a move (a joint turns at
    most 0.05 rad per step), and a round tip scratches as well at a slant.

    State per env: the direction of the current stroke, reset by :meth:`reset`.
    """

    def __init__(
        self,
        hover_height: float = 0.04,
        push: float = 0.0015,
        contact_force: float = 4.0,
        force_gain: float = 0.0005,
        stroke: float = 0.018,
        stroke_turn: float = 0.007,
        safe_height: float = 0.26,
        max_tip_step: float = 0.05,
        contact_step: float = 0.02,
        max_tilt: float = 0.5,
        scratch_tilt: float = 0.3,
        damping: float = 0.1,
        rotation_weight: float = 0.3,
        posture_gain: float = 0.2,
    ) -> None:
        self.hover_height = hover_height
        self.push = push
        self.contact_force = contact_force
        self.force_gain = force_gain
        self.stroke = stroke
        self.stroke_turn = stroke_turn
        self.safe_height = safe_height
        self.max_tip_step = max_tip_step
        self.contact_step = contact_step
        self.max_tilt = max_tilt
        self.scratch_tilt = scratch_tilt
        self.damping = damping
        self.rotation_weight = rotation_weight
        self.posture_gain = posture_gain
        self.model = mujoco.MjModel.from_xml_path(ASSET_PATH)
        self.data = mujoco.MjData(self.model)
        self._tool_tip = self.model.site("tool_tip").id
        self._joint_qpos = np.array([self.model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._obstacles = self._person_capsules()
        self._stroke_sign = np.ones(0)

    def _person_capsules(self) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """End points and radius of each of the person's geoms (a sphere: a zero-length capsule)."""
        mujoco.mj_forward(self.model, self.data)
        capsules = []
        for name in _LIMB_GEOMS + _OTHER_PERSON_GEOMS:
            geom = self.model.geom(name)
            centre, axis = self.data.geom_xpos[geom.id], self.data.geom_xmat[geom.id][2::3]
            half_length = geom.size[1] if geom.type[0] == mujoco.mjtGeom.mjGEOM_CAPSULE else 0.0
            capsules.append(
                (centre - half_length * axis, centre + half_length * axis, float(geom.size[0]))
            )
        return capsules

    def reset(self, seeds: Sequence[int]) -> None:
        # Deterministic: the seeds only say how many episodes the batch holds.
        self._stroke_sign = np.ones(len(seeds))

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        observations = np.asarray(observations, dtype=np.float64)
        latents = np.asarray(latents, dtype=np.float64)
        if len(self._stroke_sign) != len(observations):
            raise ValueError(
                f"ScratchItchOracle: got {len(observations)} observations after reset for "
                f"{len(self._stroke_sign)} episodes; call reset(seeds) with one seed per env"
            )
        actions = [
            self._act_one(env, obs, latent)
            for env, (obs, latent) in enumerate(zip(observations, latents))
        ]
        return np.stack(actions).astype(np.float32)

    # ------------------------------------------------------------------ one env
    def _act_one(self, env: int, obs: np.ndarray, latent: np.ndarray) -> np.ndarray:
        model, data = self.model, self.data
        q = obs[OBS_JOINT_POS]
        data.qpos[self._joint_qpos] = q
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)  # mj_jacSite needs the com-based frames
        mujoco.mj_jacSite(model, data, self._jacp, self._jacr, self._tool_tip)
        tip = data.site_xpos[self._tool_tip].copy()
        tool_axis = data.site_xmat[self._tool_tip][2::3].copy()  # the stick points along site z

        target, direction, max_step, max_tilt = self._plan(env, obs, latent, tip)
        direction = _within_cone(tool_axis, direction, max_tilt)
        tip_error = target - tip
        tip_error *= min(1.0, max_step / max(np.linalg.norm(tip_error), 1e-12))
        turn_axis = np.cross(tool_axis, direction)
        sin_angle = np.linalg.norm(turn_axis)
        angle = np.arctan2(sin_angle, tool_axis @ direction)
        turn = turn_axis / sin_angle * min(angle, 0.3) if sin_angle > 1e-9 else np.zeros(3)
        # Spinning the round stick about its own axis changes nothing: leave that rotation free.
        no_spin = np.eye(3) - np.outer(tool_axis, tool_axis)
        jacobian = np.vstack([self._jacp, self.rotation_weight * no_spin @ self._jacr])
        error = np.concatenate([tip_error, self.rotation_weight * turn])
        damped = jacobian @ jacobian.T + self.damping**2 * np.eye(len(error))
        delta = jacobian.T @ np.linalg.solve(damped, error)
        # The posture pull must not disturb the task, so project it with the exact null space
        # (the damped inverse's "I - J+ J" would leak it into the tip's motion as a steady offset).
        _, singular_values, rows = np.linalg.svd(jacobian)
        task_rows = rows[singular_values > 1e-6 * singular_values[0]]
        posture = self.posture_gain * (HOME_QPOS - q)
        delta += posture - task_rows.T @ (task_rows @ posture)
        delta /= max(1.0, np.abs(delta).max() / ACTION_SCALE)
        return delta / ACTION_SCALE

    def _plan(
        self, env: int, obs: np.ndarray, latent: np.ndarray, tip: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Tool-tip target, stick direction, step limit (m) and allowed lean (rad)."""
        itch, normal = latent[LATENT_POS], latent[LATENT_NORMAL]
        normal = normal / np.linalg.norm(normal)
        offset = tip - itch
        height = offset @ normal
        off_normal = np.linalg.norm(offset - height * normal)
        down = np.array([0.0, 0.0, -1.0])

        if off_normal < self.stroke + 0.015 and height > -0.02:  # over the itch
            shortfall = self.contact_force - obs[OBS_ARM_FORCE]
            push = np.clip(self.push + self.force_gain * shortfall, 0.0, 2.0 * self.push)
            press = itch + (min(height, 0.0) - push) * normal
            if height > 0.01:
                return press, -normal, self.contact_step, self.scratch_tilt
            if int(round(latent[LATENT_LIMB])) == UPPER_ARM:
                limb_axis = obs[OBS_ELBOW] - obs[OBS_SHOULDER]
            else:
                limb_axis = obs[OBS_WRIST] - obs[OBS_ELBOW]
            limb_axis /= np.linalg.norm(limb_axis)
            if self._stroke_sign[env] * (offset @ limb_axis) >= self.stroke_turn:
                self._stroke_sign[env] *= -1
            stroke_end = press + self._stroke_sign[env] * self.stroke * limb_axis
            return stroke_end, -normal, self.contact_step, self.scratch_tilt

        hover = itch + self.hover_height * normal
        clearance, outward = self._clearance(tip)
        if clearance < 0.025:  # on the skin, or about to be: back off first
            return tip + 0.05 * outward, -normal, self.max_tip_step, self.max_tilt
        if self._path_clear(tip, hover):
            return hover, -normal, self.max_tip_step, self.max_tilt
        above_hover = np.array([hover[0], hover[1], max(self.safe_height, hover[2])])
        if self._path_clear(tip, above_hover):
            return above_hover, down, self.max_tip_step, self.max_tilt
        above_tip = np.array([tip[0], tip[1], max(self.safe_height, tip[2])])
        return above_tip, down, self.max_tip_step, self.max_tilt

    def _clearance(self, point: np.ndarray) -> tuple[float, np.ndarray]:
        """Distance from ``point`` to the person's skin, and the direction away from it."""
        best, outward = np.inf, np.array([0.0, 0.0, 1.0])
        for start, end, radius in self._obstacles:
            nearest = start + _segment_fraction(point, start, end) * (end - start)
            gap = point - nearest
            distance = np.linalg.norm(gap) - radius
            if distance < best:
                best, outward = distance, gap / max(np.linalg.norm(gap), 1e-12)
        return best, outward

    def _path_clear(self, start: np.ndarray, end: np.ndarray, margin: float = 0.02) -> bool:
        """Whether the straight path keeps the tool tip ``margin`` off the person's skin."""
        return all(
            _segment_distance(start, end, a, b) > radius + margin
            for a, b, radius in self._obstacles
        )


def _within_cone(current: np.ndarray, axis: np.ndarray, half_angle: float) -> np.ndarray:
    """The direction nearest to ``current`` within ``half_angle`` of ``axis`` (unit vectors)."""
    cos_angle = float(np.clip(current @ axis, -1.0, 1.0))
    if cos_angle >= np.cos(half_angle):
        return current
    across = current - cos_angle * axis
    norm = np.linalg.norm(across)
    if norm < 1e-9:  # pointing straight away: any side will do
        return axis
    return np.cos(half_angle) * axis + np.sin(half_angle) * across / norm


def _segment_fraction(point: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    """Fraction along the segment of its point nearest to ``point``."""
    span = end - start
    length2 = span @ span
    return 0.0 if length2 == 0 else float(np.clip((point - start) @ span / length2, 0.0, 1.0))


def _segment_distance(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray) -> float:
    """Shortest distance between segments ``p0-p1`` and ``q0-q1``."""
    # Minimise over a few candidate pairs: the closest points of the infinite lines, clipped,
    # then each end against the other segment (exact for segments, and cheap at this size).
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a, e, f = d1 @ d1, d2 @ d2, d2 @ r
    candidates = []
    if a > 0 and e > 0:
        b, c = d1 @ d2, d1 @ r
        denominator = a * e - b * b
        s = np.clip((b * f - c * e) / denominator, 0.0, 1.0) if denominator > 1e-12 else 0.0
        t = np.clip((b * s + f) / e, 0.0, 1.0)
        s = np.clip((b * t - c) / a, 0.0, 1.0)
        candidates.append(np.linalg.norm(p0 + s * d1 - q0 - t * d2))
    for point in (p0, p1):
        nearest = q0 + _segment_fraction(point, q0, q1) * d2
        candidates.append(np.linalg.norm(point - nearest))
    for point in (q0, q1):
        nearest = p0 + _segment_fraction(point, p0, p1) * d1
        candidates.append(np.linalg.norm(point - nearest))
    return float(min(candidates))
