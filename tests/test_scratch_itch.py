"""dynamite/ScratchItch-v0 in real MuJoCo: contract, physics, reward relabelling and the oracle.

The roll-outs shared by several tests (20 seeded oracle episodes and 20 random ones on the same
env seeds) are made once per module by the ``rollouts`` fixture.
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import offline_dynamite  # noqa: F401  (registers the envs)
from offline_dynamite.envs.scratch_itch import (
    FOREARM,
    ITCH_RADIUS,
    LATENT_ANGLE,
    LATENT_AXIAL,
    LATENT_LIMB,
    LATENT_NORMAL,
    LATENT_POS,
    OBS_ARM_FORCE,
    OBS_PERSON_FORCE,
    OBS_SIZE,
    OBS_TOOL_FORCE,
    OBS_TOOL_POS,
    UPPER_ARM,
    ScratchItchEnv,
    ScratchItchOracle,
)
from offline_dynamite.policies import BatchPolicy, RandomPolicy
from offline_dynamite.rollout import Trajectory, episode_seed, policy_seed, run_batch

ENV_ID = "dynamite/ScratchItch-v0"
EPISODES = 20
TASK_INFO = {"scratch_count": np.int64, "total_force_on_person": np.float64}
SESSION_INFO = {"latent": np.float32, "session_id": np.int64, "session_start": np.bool_}
# A session shorter than this cannot be scratched: the oracle needs up to ~2 s (20 steps) to move
# the tool from one itch to the next (a joint turns at most 0.05 rad per step). Geometric session
# lengths make a few sessions shorter; they are counted, not asserted on.
MIN_SCRATCHABLE_SESSION = 25


def make_env(**kwargs) -> gym.Env:
    return gym.make(ENV_ID, **kwargs)


def roll_out(policy: BatchPolicy, episodes: int = EPISODES, seed: int = 0) -> list[Trajectory]:
    envs = [make_env() for _ in range(episodes)]
    return run_batch(
        envs,
        policy,
        [episode_seed(seed, i) for i in range(episodes)],
        [policy_seed(seed, i) for i in range(episodes)],
    )


@pytest.fixture(scope="module")
def rollouts() -> dict[str, list[Trajectory]]:
    env = make_env().unwrapped
    return {
        "oracle": roll_out(env.make_oracle()),
        "random": roll_out(RandomPolicy(env.action_space)),
    }


def mixed_action(oracle: ScratchItchOracle, rng: np.random.Generator, obs, latent) -> np.ndarray:
    """The oracle's action 60% of the time, else a uniform one: the tool spends time on the arm
    (contacts, scratches, hard pushes) and also wanders off."""
    if rng.random() < 0.6:
        return oracle.act(obs[None], latent[None])[0]
    return rng.uniform(-1.0, 1.0, size=6).astype(np.float32)


def lockstep(envs: list[gym.Env], seed: int, steps: int):
    """Reset every env with ``seed``, then step them all with the same actions, mixed from the
    first env's view (:func:`mixed_action`). Returns each env's observations [T + 1, 40],
    rewards [T] and infos (T + 1 dicts)."""
    rng = np.random.default_rng(seed)
    oracle = envs[0].unwrapped.make_oracle()
    oracle.reset([seed])
    resets = [env.reset(seed=seed) for env in envs]
    traces = [([obs], [], [info]) for obs, info in resets]
    for _ in range(steps):
        observations, _, infos = traces[0]
        action = mixed_action(oracle, rng, observations[-1], infos[-1]["latent"])
        for env, (observations, rewards, infos) in zip(envs, traces):
            obs, reward, _, _, info = env.step(action)
            observations.append(obs)
            rewards.append(reward)
            infos.append(info)
    return [(np.stack(obs), np.array(rewards), infos) for obs, rewards, infos in traces]


# ---------------------------------------------------------------------------- contract
def test_passes_gymnasium_env_checker():
    # The 'human' render mode needs a display; rgb_array rendering is tested below.
    check_env(make_env().unwrapped, skip_render_check=True)


def test_spaces_and_defaults():
    env = make_env()
    unwrapped = env.unwrapped
    assert env.observation_space.shape == (OBS_SIZE,) and env.observation_space.dtype == np.float64
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32)
    assert unwrapped.latent_size == 9 and unwrapped.dt == pytest.approx(0.1)  # 10 Hz control
    assert unwrapped.horizon == 200
    assert 1 + (unwrapped.horizon - 1) * unwrapped.switch_prob >= 3


def test_same_seed_gives_identical_trajectories_switches_included():
    first, second = lockstep([make_env(switch_prob=0.1) for _ in range(2)], seed=21, steps=80)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    for a, b in zip(first[2], second[2]):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert first[2][-1]["session_id"] >= 3, "expected several switches"
    assert first[2][-1]["scratch_count"] > 0, "expected the oracle's share to scratch"
    _, other_info = make_env(switch_prob=0.1).reset(seed=22)
    assert not np.array_equal(first[2][0]["latent"], other_info["latent"])


def test_info_schema_is_identical_after_reset_and_every_step(rollouts):
    for trajectory in rollouts["oracle"][:3] + rollouts["random"][:3]:
        infos = trajectory.infos  # stacked: [T + 1, ...] per key, reset info first
        assert infos.keys() == SESSION_INFO.keys() | TASK_INFO.keys()
        for key, dtype in {**SESSION_INFO, **TASK_INFO}.items():
            assert infos[key].dtype == dtype, key
        assert infos["latent"].shape == (201, 9)
    # The stacking above would hide a step whose info had other keys or shapes: check each.
    ((_, _, infos),) = lockstep([make_env(switch_prob=0.3)], seed=4, steps=30)
    reference = infos[0]
    for info in infos:
        assert info.keys() == reference.keys()
        for key, value in info.items():
            assert np.asarray(value).dtype == np.asarray(reference[key]).dtype, key
            assert np.shape(value) == np.shape(reference[key]), key


def test_task_info_tracks_scratches_and_the_force_on_the_person(rollouts):
    env = make_env().unwrapped
    for trajectory in rollouts["oracle"]:
        obs, infos = trajectory.observations, trajectory.infos
        scratches = env.reward_terms(
            obs[:-1], trajectory.actions, obs[1:], infos["latent"][:-1]
        )["scratch"]
        np.testing.assert_array_equal(infos["scratch_count"], np.cumsum([0, *scratches]))
        np.testing.assert_array_equal(infos["total_force_on_person"], obs[:, OBS_PERSON_FORCE])


# ---------------------------------------------------------------------------- reward
@pytest.mark.parametrize("policy", ["oracle", "random"])
def test_vectorised_reward_equals_step_reward(rollouts, policy):
    env = make_env().unwrapped
    trajectories = rollouts[policy]
    observations = np.stack([t.observations for t in trajectories])  # [E, T + 1, 40]
    actions = np.stack([t.actions for t in trajectories])
    latents = np.stack([t.infos["latent"] for t in trajectories])
    step_rewards = np.stack([t.rewards for t in trajectories])
    rewards = env.reward(observations[:, :-1], actions, observations[:, 1:], latents[:, :-1])
    assert rewards.shape == step_rewards.shape == (EPISODES, 200)
    np.testing.assert_allclose(rewards, step_rewards, rtol=0, atol=1e-12)
    if policy == "oracle":
        # Relabelled under itches elsewhere, the scratches stop paying: rewards must change.
        moved = latents[:, :-1].copy()
        moved[..., LATENT_POS] += 0.05 * moved[..., LATENT_NORMAL]
        relabelled = env.reward(observations[:, :-1], actions, observations[:, 1:], moved)
        assert relabelled.sum() < rewards.sum() - 1000


def test_latent_is_not_in_the_observation():
    envs = [make_env(switch_prob=0.0) for _ in range(2)]
    obs, _ = envs[0].reset(seed=11)
    envs[1].reset(seed=11)
    first, second = (env.unwrapped for env in envs)
    first.set_latent(first.itch_latent(FOREARM, 0.15, 2.0))
    second.set_latent(second.itch_latent(UPPER_ARM, 0.1, 0.3))
    # The first env's oracle scratches its itch; the second env gets the same actions. Nothing
    # in the simulation depends on the itch (its marker is a site, which never collides), so the
    # observations stay identical even while the tool is on the arm, and only rewards differ.
    oracle = first.make_oracle()
    oracle.reset([0])
    rewards, touching = [[], []], 0
    for _ in range(60):
        action = oracle.act(obs[None], first.latent[None])[0]
        steps = [env.step(action) for env in envs]
        np.testing.assert_array_equal(steps[0][0], steps[1][0])
        for trace, step in zip(rewards, steps):
            trace.append(step[1])
        obs = steps[0][0]
        touching += obs[OBS_ARM_FORCE] > 0
    assert touching > 10, "the tool should have been on the arm"
    assert sum(rewards[0]) > sum(rewards[1]) + 50


# ---------------------------------------------------------------------------- latent and kernel
def test_itches_lie_on_the_upper_half_of_the_arm_skin():
    env = make_env().unwrapped
    rng = np.random.default_rng(0)
    latents = [env.initial_latent(rng) for _ in range(300)]
    for _ in range(300):
        latents.append(env.next_latent(latents[-1], rng))
    latents = np.stack(latents)
    assert latents.dtype == np.float32 and latents.shape == (600, 9)
    for latent in latents:
        limb = env.arm.limbs[int(latent[LATENT_LIMB])]
        low, high = limb.itch_span
        assert low - 1e-6 <= latent[LATENT_AXIAL] <= high + 1e-6
        assert 0.0 <= latent[LATENT_ANGLE] <= np.pi
        # On the skin: one radius from the limb's axis, the normal pointing out and not down.
        from_axis = latent[LATENT_POS] - limb.proximal
        from_axis -= (from_axis @ limb.axis) * limb.axis
        assert np.linalg.norm(from_axis) == pytest.approx(limb.radius, abs=1e-6)
        np.testing.assert_allclose(from_axis / limb.radius, latent[LATENT_NORMAL], atol=1e-5)
        assert latent[LATENT_NORMAL] @ limb.up >= -1e-6
    assert set(np.unique(latents[:, LATENT_LIMB])) == {0.0, 1.0}


def test_kernel_moves_the_itch_a_short_way_along_the_arm_crossing_the_elbow():
    env = make_env().unwrapped
    rng = np.random.default_rng(1)
    latent, crossings = env.initial_latent(rng), 0
    for _ in range(400):
        new = env.next_latent(latent, rng)
        moved_along = abs(
            env.arm.along_arm(int(new[LATENT_LIMB]), float(new[LATENT_AXIAL]))
            - env.arm.along_arm(int(latent[LATENT_LIMB]), float(latent[LATENT_AXIAL]))
        )
        assert env.itch_step_min - 1e-6 <= moved_along <= env.itch_step_max + 1e-6
        assert abs(new[LATENT_ANGLE] - latent[LATENT_ANGLE]) <= env.itch_angle_step + 1e-6
        assert np.linalg.norm(new[LATENT_POS] - latent[LATENT_POS]) > ITCH_RADIUS
        crossings += new[LATENT_LIMB] != latent[LATENT_LIMB]
        latent = new
    assert crossings > 20


# ---------------------------------------------------------------------------- oracle
def test_oracle_reaches_every_part_of_the_upper_surface():
    """A grid over both limbs (five places along each, seven angles from the lateral side over
    the top to the medial side, ends included) and 30 itches drawn from the initial distribution:
    from the resting pose, the tool tip gets within 0.025 m of the itch while touching the arm
    with less than 10 N, within 3 s."""
    env = make_env(switch_prob=0.0)
    unwrapped = env.unwrapped
    oracle = unwrapped.make_oracle()
    itches = []
    for limb, fraction, angle in itertools.product(
        (UPPER_ARM, FOREARM), np.linspace(0, 1, 5), np.linspace(0, np.pi, 7)
    ):
        low, high = unwrapped.arm.limbs[limb].itch_span
        itches.append(unwrapped.itch_latent(limb, low + fraction * (high - low), angle))
    rng = np.random.default_rng(0)
    itches += [unwrapped.initial_latent(rng) for _ in range(30)]
    failures = []
    for index, latent in enumerate(itches):
        obs, _ = env.reset(seed=index)
        unwrapped.set_latent(latent)
        oracle.reset([index])
        for _ in range(30):
            obs, *_ = env.step(oracle.act(obs[None], latent[None])[0])
            distance = np.linalg.norm(obs[OBS_TOOL_POS] - latent[LATENT_POS])
            if distance < 0.025 and 0 < obs[OBS_ARM_FORCE] < 10:
                break
        else:
            failures.append(latent[LATENT_LIMB:])
    assert not failures, f"{len(failures)}/{len(itches)} itches not reached: {failures}"


def test_oracle_scratches_in_every_session_and_beats_random_by_far(rollouts):
    oracle, random = rollouts["oracle"], rollouts["random"]
    # Same env seeds: both face the same sessions and itches.
    for a, b in zip(oracle, random):
        np.testing.assert_array_equal(a.infos["session_id"], b.infos["session_id"])
        np.testing.assert_array_equal(a.infos["latent"], b.infos["latent"])
    env = make_env().unwrapped
    scratchable, scratched = 0, 0
    for trajectory in oracle:
        obs, infos = trajectory.observations, trajectory.infos
        scratch = env.reward_terms(obs[:-1], trajectory.actions, obs[1:], infos["latent"][:-1])[
            "scratch"
        ]
        step_sessions = infos["session_id"][:-1]
        for session in np.unique(step_sessions):
            in_session = step_sessions == session
            if in_session.sum() >= MIN_SCRATCHABLE_SESSION:
                scratchable += 1
                scratched += scratch[in_session].any()
    assert scratchable >= 40
    assert scratched == scratchable, f"only {scratched}/{scratchable} sessions scratched"

    oracle_returns = np.array([t.rewards.sum() for t in oracle])
    random_returns = np.array([t.rewards.sum() for t in random])
    assert oracle_returns.mean() > random_returns.mean() + 500
    assert oracle_returns.min() > random_returns.max() + 200


def test_oracle_is_a_batch_policy_that_wants_a_reset():
    oracle = make_env().unwrapped.make_oracle()
    assert isinstance(oracle, BatchPolicy) and isinstance(oracle, ScratchItchOracle)
    obs, info = make_env().reset(seed=0)
    oracle.reset([0, 1])
    actions = oracle.act(np.stack([obs, obs]), np.stack([info["latent"]] * 2))
    assert actions.shape == (2, 6) and actions.dtype == np.float32
    assert np.abs(actions).max() <= 1.0
    with pytest.raises(ValueError, match="call reset"):
        oracle.act(obs[None], info["latent"][None])


# ---------------------------------------------------------------------------- physics
def test_long_rollouts_stay_physical(rollouts):
    """No interpenetration blow-up: finite observations, bounded forces and shallow contacts,
    under random actions and under a mix that presses the tool on the arm at random.

    Bounds: the servos push with tens of newtons (kp x 0.05 rad over lever arms of decimetres;
    the worst seen is ~150 N), and the soft default contacts let a hard push sink a few
    millimetres; a blow-up shows as thousands of newtons, centimetres or NaN."""
    for trajectory in rollouts["random"]:
        assert np.isfinite(trajectory.observations).all()
    env = make_env(switch_prob=0.05)
    data = env.unwrapped.data
    rng = np.random.default_rng(0)
    oracle = env.unwrapped.make_oracle()
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        oracle.reset([seed])
        deepest = 0.0
        for _ in range(200):
            obs, _, _, _, info = env.step(mixed_action(oracle, rng, obs, info["latent"]))
            assert np.isfinite(obs).all()
            assert obs[OBS_PERSON_FORCE] < 500 and obs[OBS_TOOL_FORCE] < 500
            if data.ncon:
                deepest = min(deepest, data.contact.dist[: data.ncon].min())
        assert deepest > -0.01, f"contacts penetrate {-deepest:.3f} m"
    forces = np.concatenate([t.observations[:, OBS_PERSON_FORCE] for t in rollouts["random"]])
    assert forces.max() < 500


# ---------------------------------------------------------------------------- rendering
def test_rgb_array_rendering_shows_the_itch_marker():
    env = make_env(render_mode="rgb_array")
    env.reset(seed=0)
    unwrapped = env.unwrapped
    unwrapped.set_latent(unwrapped.itch_latent(FOREARM, 0.1, np.pi / 2))
    frame = env.render()
    assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8 and frame.std() > 0
    unwrapped.set_latent(unwrapped.itch_latent(UPPER_ARM, 0.15, np.pi / 2))
    moved = env.render()
    # Only the marker moved: a few pixels change, most of the frame does not.
    changed = (np.abs(frame.astype(int) - moved.astype(int)).sum(axis=2) > 30).mean()
    assert 0 < changed < 0.01
    env.close()


# ---------------------------------------------------------------------------- bad input
def test_actions_of_wrong_shape_or_range_are_rejected_with_one_line():
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action has shape \(7,\), expected \(6,\)") as error:
        env.step(np.zeros(7, dtype=np.float32))
    assert "\n" not in str(error.value)
    for bad in (2.0, -1.5, np.nan):
        action = np.zeros(6, dtype=np.float32)
        action[2] = bad
        with pytest.raises(ValueError, match="outside the action space") as error:
            env.step(action)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"switch_prob": -0.1}, r"switch_prob must be in \[0, 1\], got -0.1"),
        ({"switch_prob": 1.5}, r"switch_prob must be in \[0, 1\], got 1.5"),
        ({"horizon": 0}, "horizon must be a positive integer"),
        ({"itch_step_min": 0.2, "itch_step_max": 0.1}, "itch_step_min <= itch_step_max"),
        ({"itch_step_max": 0.3}, r"itch_step_max must be at most 0\.19\d m"),
        ({"itch_angle_step": -1.0}, r"itch_angle_step must be in \[0, pi\]"),
        ({"reset_noise_scale": -0.1}, "reset_noise_scale must be non-negative"),
    ],
)
def test_bad_constructor_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_env(**kwargs)


def test_the_env_class_is_the_registered_entry_point():
    assert isinstance(make_env().unwrapped, ScratchItchEnv)
