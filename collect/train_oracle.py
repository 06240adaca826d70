"""Train a HalfCheetah oracle with d3rlpy's online SAC, export its actor, and measure it.

The cheetah envs have no scripted solution, so their oracle is a policy *trained* with the true
latent in view: SAC runs on the env with ``info["latent"]`` appended to the observation. Its
deterministic actor (tanh of the Gaussian mean) is written as plain float32 matrices to
``offline_dynamite/envs/assets/oracles/<env>.npz``, which ``make_oracle()`` loads into a numpy
:class:`~offline_dynamite.envs.mlp_policy.MLPPolicy`. The file records the exact command line.

Usage (the shipped files came from these, plus a ``--checkpoint`` path; see
docs/environments.md)::

    python -m collect.train_oracle --env halfcheetahvel --relabel-share 0.5
    python -m collect.train_oracle --env halfcheetahwind

At the end the script evaluates the *exported file* (not the torch actor) against a uniform random
policy on the env with its default settings, over seeded episodes both policies share, and prints
the returns and how closely the forward velocity tracks its target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import d3rlpy
import gymnasium as gym
import numpy as np
import torch
from torch import nn

import offline_dynamite.envs
from offline_dynamite.envs import resolve_env_id
from offline_dynamite.envs.mlp_policy import MLPPolicy
from offline_dynamite.policies import BatchPolicy, DeterministicPolicy, RandomPolicy
from offline_dynamite.rollout import run_seeded_batch

#: Where the cheetah envs' ``make_oracle`` looks for ``<oracle_file>``.
ORACLE_DIR = Path(offline_dynamite.envs.__file__).parent / "assets" / "oracles"

#: After a switch the cheetah needs a moment to reach the new speed (or to lean into the new
#: wind); steps at least this far into their session measure how well it *holds* the target.
SETTLE_STEPS = 25


@dataclass(frozen=True)
class OracleTrainingOptions:
    """Everything that determines a trained oracle; each field is a ``--flag`` of the script."""

    env: str = field(
        default="halfcheetahvel",
        metadata={"help": "env short name (halfcheetahvel, halfcheetahwind) or dynamite/... id"},
    )
    steps: int = field(
        default=250_000,
        metadata={"help": "env steps of online training (one SAC update per step after warm-up)"},
    )
    seed: int = field(
        default=0, metadata={"help": "seeds d3rlpy/torch/numpy, the training env and its actions"}
    )
    switch_prob: float = field(
        default=0.03,
        metadata={
            "help": "switch probability of the training env; above the env default (0.015) so "
            "that the actor sees more latents and more switches per episode"
        },
    )
    relabel_share: float = field(
        default=0.0,
        metadata={
            "help": "share of sampled transitions given a fresh latent from the initial "
            "distribution, reward recomputed with env.reward (hindsight relabelling); only for "
            "envs whose latent enters the reward alone (HalfCheetahVel)"
        },
    )
    random_steps: int = field(
        default=5_000, metadata={"help": "warm-up steps with uniform actions before SAC acts"}
    )
    batch_size: int = field(
        default=128,
        metadata={
            "help": "SAC mini-batch size; 128 rather than 256 nearly doubles updates per second "
            "on one CPU thread (d3rlpy also assembles each batch in Python)"
        },
    )
    learning_rate: float = field(
        default=3e-4, metadata={"help": "Adam learning rate of actor, critics and temperature"}
    )
    gamma: float = field(
        default=0.95,
        metadata={
            "help": "discount factor; tracking a speed needs about a second of foresight (20 "
            "steps), and the shorter horizon keeps the critic's targets small and less noisy"
        },
    )
    reward_scale: float = field(
        default=5.0,
        metadata={
            "help": "multiplies rewards inside SAC's updates: the cheetah rewards are about -2 to "
            "0 per step, small next to the initial entropy bonus (temperature 1)"
        },
    )
    hidden_units: tuple[int, ...] = field(
        default=(128, 128),
        metadata={
            "help": "hidden layer sizes of actor and critics; 128 rather than 256 nearly doubles "
            "updates per second on one CPU thread"
        },
    )
    steps_per_epoch: int = field(
        default=10_000, metadata={"help": "steps between progress reports"}
    )
    eval_episodes: int = field(
        default=20, metadata={"help": "episodes of the final evaluation (each policy)"}
    )
    eval_seed: int = field(
        default=1_000,
        metadata={"help": "evaluation episode i resets with rollout.episode_seed(eval_seed, i)"},
    )
    output: Path | None = field(
        default=None,
        metadata={"help": "where to write the actor (default: the env's shipped oracle file)"},
    )
    checkpoint: Path | None = field(
        default=None,
        metadata={"help": "also save the whole d3rlpy model here (algo.save, a .d3 file)"},
    )
    log_dir: Path | None = field(
        default=None,
        metadata={"help": "d3rlpy's metric logs go under this folder (default: no logs)"},
    )
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})


# --------------------------------------------------------------------------- env with the latent
class LatentInObservation(gym.Wrapper):
    """Appends the current latent to the observation, so that SAC learns a latent-aware policy.

    The latent that governs the next transition is the ``info["latent"]`` returned *with* an
    observation (after ``reset`` and after each ``step``), so each observation is paired with the
    info of the same call. The result is float32, as d3rlpy stores it.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        size = env.observation_space.shape[0] + env.unwrapped.latent_size
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        return with_latent(observation, info["latent"]), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        return with_latent(observation, info["latent"]), reward, terminated, truncated, info


def with_latent(observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
    """``[..., obs] + [..., k] -> [..., obs + k]`` float32: the input of the latent-aware actor."""
    return np.concatenate([observations, latents], axis=-1).astype(np.float32)


#: Envs whose latent only enters the reward, never the dynamics: a transition stays valid under
#: any latent, so it may be relabelled. (The wind pushes the cheetah, so Wind is not one of them.)
RELABELLABLE_ENVS = frozenset({"dynamite/HalfCheetahVel-v0"})


class LatentRelabellingPicker:
    """d3rlpy transition picker that replays a share of transitions under a fresh latent.

    HalfCheetahVel's target speed never touches the physics, so a stored transition is just as
    real under another target: only its reward changes, and ``env.reward`` recomputes it. Every
    sampled batch then shows each visited state under targets spread over the whole range (what
    hindsight relabelling does for goal-reaching), instead of only the target it was collected
    under. The relabelled latent is given to both ends of the transition: a relabelled transition
    never switches, while the untouched share keeps the env's real switches.
    """

    def __init__(self, env: gym.Env, share: float, seed: int) -> None:
        self.reward = env.unwrapped.reward
        self.initial_latent = env.unwrapped.initial_latent
        self.latent_size = env.unwrapped.latent_size
        self.share = share
        self.rng = np.random.default_rng(seed)
        self.basic = d3rlpy.dataset.BasicTransitionPicker()

    def __call__(self, episode: Any, index: int) -> d3rlpy.dataset.Transition:
        transition = self.basic(episode, index)
        if self.rng.random() >= self.share:
            return transition
        latent = self.initial_latent(self.rng)
        size = len(transition.observation) - self.latent_size
        observation = with_latent(transition.observation[:size], latent)
        next_observation = with_latent(transition.next_observation[:size], latent)
        reward = self.reward(observation[:size], transition.action, next_observation[:size], latent)
        return dataclasses.replace(
            transition,
            observation=observation,
            next_observation=next_observation,
            reward=np.array([reward], dtype=np.float32),
        )


def latent_normalisation(env: gym.Env, draws: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the env's initial-latent distribution, from a fixed-seed sample.

    Both cheetahs draw their first latent uniformly over the whole latent range, so these put the
    latent on a unit scale (the wind is ±30 N, the velocity 0.5–3 m/s) without per-env code.
    """
    rng = np.random.default_rng(0)
    sample = np.stack([env.unwrapped.initial_latent(rng) for _ in range(draws)])
    return sample.mean(axis=0), sample.std(axis=0)


# --------------------------------------------------------------------------- training
def build_sac(options: OracleTrainingOptions, env: gym.Env) -> d3rlpy.algos.SAC:
    """SAC whose observation scaler leaves the raw observation alone and normalises the latent.

    SAC on HalfCheetah works on raw observations; the latent gets a fixed scaling so that the
    ±30 N wind does not swamp the first layer. A fixed scaler (rather than normalising in the
    wrapper) means ``algo.predict`` takes the same raw ``[observation, latent]`` input as the
    exported :class:`MLPPolicy`, which makes the two directly comparable.
    """
    latent_mean, latent_std = latent_normalisation(env)
    observation_size = env.observation_space.shape[0] - len(latent_mean)  # env is wrapped
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(options.hidden_units))
    config = d3rlpy.algos.SACConfig(
        batch_size=options.batch_size,
        gamma=options.gamma,
        actor_learning_rate=options.learning_rate,
        critic_learning_rate=options.learning_rate,
        temp_learning_rate=options.learning_rate,
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(
            mean=np.concatenate([np.zeros(observation_size), latent_mean]).astype(np.float32),
            std=np.concatenate([np.ones(observation_size), latent_std]).astype(np.float32),
        ),
        reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(options.reward_scale),
    )
    return config.create(device=False)


def train(
    options: OracleTrainingOptions, report: bool = True
) -> tuple[d3rlpy.algos.SAC, gym.Env, float]:
    """Run online SAC; returns the algorithm, its (wrapped) training env and the wall time in s."""
    torch.set_num_threads(options.threads)
    d3rlpy.seed(options.seed)
    env_id = resolve_env_id(options.env)
    env = LatentInObservation(gym.make(env_id, switch_prob=options.switch_prob))
    # fit_online resets without a seed; seeding once here fixes every later episode.
    env.reset(seed=options.seed)
    env.action_space.seed(options.seed)
    algo = build_sac(options, env)
    picker = None
    if options.relabel_share > 0:
        if env_id not in RELABELLABLE_ENVS:
            raise ValueError(
                f"{env_id}'s latent changes its dynamics: its transitions cannot be relabelled "
                "(use --relabel-share 0)"
            )
        picker = LatentRelabellingPicker(env, options.relabel_share, seed=options.seed)
    buffer = d3rlpy.dataset.create_fifo_replay_buffer(
        limit=max(options.steps, 1), env=env, transition_picker=picker
    )
    started = time.perf_counter()

    def progress(algo: d3rlpy.algos.SAC, epoch: int, step: int) -> None:
        if not report or step % options.steps_per_epoch:
            return
        elapsed = time.perf_counter() - started
        quick = evaluate(env_id, TorchActor(algo), episodes=3, seed=options.seed + 1)
        print(
            f"step {step:>8d}  {elapsed:7.0f} s  {step / elapsed:6.1f} steps/s  "
            f"return {quick.returns.mean():8.1f}  tracking {quick.tracking_error:.3f}",
            flush=True,
        )

    logger = (
        d3rlpy.logging.FileAdapterFactory(root_dir=str(options.log_dir))
        if options.log_dir is not None
        else d3rlpy.logging.NoopAdapterFactory()
    )
    algo.fit_online(
        env,
        buffer,
        n_steps=options.steps,
        n_steps_per_epoch=options.steps_per_epoch,
        random_steps=options.random_steps,
        update_start_step=min(options.random_steps, options.steps),
        logger_adapter=logger,
        experiment_name=f"sac_oracle_{Path(env_id).name}_seed{options.seed}",
        show_progress=False,
        callback=progress,
    )
    return algo, env, time.perf_counter() - started


class TorchActor(DeterministicPolicy):
    """The d3rlpy actor as a :class:`BatchPolicy`: ``algo.predict([observation, latent])``."""

    def __init__(self, algo: d3rlpy.algos.SAC) -> None:
        self.algo = algo

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        return self.algo.predict(with_latent(observations, latents))


# --------------------------------------------------------------------------- export
def export_actor(
    algo: d3rlpy.algos.SAC,
    path: Path,
    observation_size: int,
    latent_size: int,
    metadata: dict[str, Any],
) -> None:
    """Write SAC's deterministic actor in the ``.npz`` layout :class:`MLPPolicy` reads.

    d3rlpy's ``NormalPolicy`` is an encoder (``Linear``/``ReLU`` pairs) and a ``Linear`` head for
    the Gaussian mean (the log-std head is dropped: the oracle acts deterministically). Anything
    else in the encoder (batch or layer norm, dropout, another activation) would change the
    forward pass, so it is refused rather than silently exported wrong.
    """
    policy = algo.impl.policy
    encoder_layers = list(policy._encoder._layers)
    linears = encoder_layers[0::2] + [policy._mu]
    activations = encoder_layers[1::2]
    is_linear_relu_stack = (
        len(activations) == len(linears) - 1
        and all(isinstance(layer, nn.Linear) for layer in linears)
        and all(isinstance(layer, nn.ReLU) for layer in activations)
    )
    if not is_linear_relu_stack:
        raise ValueError(f"only Linear/ReLU actor encoders can be exported, got {encoder_layers}")
    scaler = algo.observation_scaler
    arrays: dict[str, np.ndarray] = {}
    for i, linear in enumerate(linears):
        arrays[f"weight_{i}"] = linear.weight.detach().cpu().numpy().T.astype(np.float32)
        arrays[f"bias_{i}"] = linear.bias.detach().cpu().numpy().astype(np.float32)
    arrays["layer_sizes"] = np.array(
        [linears[0].in_features] + [linear.out_features for linear in linears], dtype=np.int64
    )
    arrays["observation_size"] = np.int64(observation_size)
    arrays["latent_size"] = np.int64(latent_size)
    arrays["input_shift"] = np.asarray(scaler.mean, dtype=np.float32)
    # d3rlpy's StandardObservationScaler divides by (std + eps).
    arrays["input_scale"] = np.asarray(scaler.std, dtype=np.float32) + np.float32(scaler.eps)
    for key, value in metadata.items():
        arrays[key] = np.asarray(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


# --------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Evaluation:
    """How a policy did over seeded episodes of the env with its default settings."""

    returns: np.ndarray  # [episodes]
    tracking_error: float  # mean |v - target| over every step
    settled_tracking_error: float  # the same over steps >= SETTLE_STEPS into their session


def evaluate(env_id: str, policy: BatchPolicy, episodes: int, seed: int) -> Evaluation:
    """Roll ``policy`` out in episodes seeded as ``rollout.run_episodes(..., seed)`` seeds them.

    The tracking error ``|v - target|`` is minus the env's own reward with a zero action (the
    control cost vanishes), so it uses the same velocity and target as the reward does.
    """
    envs = [gym.make(env_id) for _ in range(episodes)]
    try:
        trajectories = run_seeded_batch(envs, policy, seed, range(episodes))
        reward_of = envs[0].unwrapped.reward
    finally:
        for env in envs:
            env.close()
    errors, settled = [], []
    for trajectory in trajectories:
        observations, latents = trajectory.observations, trajectory.infos["latent"][:-1]
        no_action = np.zeros_like(trajectory.actions)
        error = -reward_of(observations[:-1], no_action, observations[1:], latents)
        errors.append(error)
        session_starts = trajectory.infos["session_start"][:-1]
        settled.append(error[steps_into_session(session_starts) >= SETTLE_STEPS])
    settled_errors = np.concatenate(settled)
    return Evaluation(
        returns=np.array([trajectory.rewards.sum() for trajectory in trajectories]),
        tracking_error=float(np.concatenate(errors).mean()),
        settled_tracking_error=float(settled_errors.mean()) if settled_errors.size else np.nan,
    )


def steps_into_session(session_starts: np.ndarray) -> np.ndarray:
    """For each transition, how many transitions of its session came before it."""
    steps = np.arange(len(session_starts))
    latest_start = np.maximum.accumulate(np.where(session_starts, steps, 0))
    return steps - latest_start


# --------------------------------------------------------------------------- command line
def parse_options(argv: Sequence[str]) -> OracleTrainingOptions:
    """Build the parser from :class:`OracleTrainingOptions`, so the two never disagree."""
    parser = argparse.ArgumentParser(
        prog="python -m collect.train_oracle", description=__doc__.splitlines()[0]
    )
    for option in dataclasses.fields(OracleTrainingOptions):
        flag = "--" + option.name.replace("_", "-")
        help_text = f"{option.metadata['help']} (default: {option.default})"
        if isinstance(option.default, tuple):
            parser.add_argument(flag, type=int, nargs="+", default=option.default, help=help_text)
        elif option.default is None:  # the optional options are paths
            parser.add_argument(flag, type=Path, default=None, help=help_text)
        else:
            kind = type(option.default)
            parser.add_argument(flag, type=kind, default=option.default, help=help_text)
    arguments = vars(parser.parse_args(argv))
    arguments["hidden_units"] = tuple(arguments["hidden_units"])
    try:
        resolve_env_id(arguments["env"])
    except ValueError as error:
        parser.error(str(error))
    return OracleTrainingOptions(**arguments)


def default_output(env_id: str) -> Path:
    """The file the env's ``make_oracle`` loads."""
    env = gym.make(env_id)
    try:
        return ORACLE_DIR / env.unwrapped.oracle_file
    finally:
        env.close()


def main(argv: Sequence[str] | None = None) -> dict[str, Evaluation]:
    """Train, export, evaluate the exported file against a random policy, print a summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse_options(argv)
    env_id = resolve_env_id(options.env)
    output = options.output or default_output(env_id)
    command = "python -m collect.train_oracle " + shlex.join(argv)
    print(f"{command}\n{json.dumps(_jsonable(options))}", flush=True)

    algo, env, wall_time = train(options)
    export_actor(
        algo,
        output,
        observation_size=env.unwrapped.observation_space.shape[0],
        latent_size=env.unwrapped.latent_size,
        metadata={
            "env_id": env_id,
            "command": command,
            "steps": options.steps,
            "seed": options.seed,
            "options": json.dumps(_jsonable(options)),
            "train_wall_time_s": round(wall_time, 1),
            "d3rlpy_version": d3rlpy.__version__,
        },
    )
    env.close()
    if options.checkpoint is not None:
        options.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        algo.save(str(options.checkpoint))
    print(
        f"trained {options.steps} steps in {wall_time:.0f} s "
        f"({options.steps / wall_time:.1f} steps/s); wrote {output} "
        f"({output.stat().st_size / 1e6:.2f} MB)",
        flush=True,
    )

    oracle = MLPPolicy.load(output)
    random_policy = RandomPolicy(gym.make(env_id).action_space)
    results = {
        name: evaluate(env_id, policy, options.eval_episodes, options.eval_seed)
        for name, policy in (("oracle", oracle), ("random", random_policy))
    }
    print(
        f"evaluation on {env_id} (default settings), {options.eval_episodes} episodes, "
        f"env seeds episode_seed({options.eval_seed}, i):"
    )
    print(f"{'policy':8s} {'return':>18s} {'|v - target|':>14s} {'settled':>9s}")
    for name, result in results.items():
        print(
            f"{name:8s} {result.returns.mean():9.1f} ± {result.returns.std():6.1f} "
            f"{result.tracking_error:14.3f} {result.settled_tracking_error:9.3f}"
        )
    print(f"settled: steps at least {SETTLE_STEPS} into their session")
    return results


def _jsonable(options: OracleTrainingOptions) -> dict[str, Any]:
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in dataclasses.asdict(options).items()
    }


if __name__ == "__main__":
    main()
