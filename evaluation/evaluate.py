"""Replaying a train run online: seeded roll-outs with the belief updated step by step from the
policy's own experience, and everything needed to score the policy and its beliefs recorded.

Metrics (:func:`score`):

- **return**: mean and std over episodes; **normalised score**: 0 = the dataset's random
  reference, 100 = its oracle reference (``ref_min_score`` / ``ref_max_score`` of the dataset,
  measured on the same env by ``dynamite-collect``);
- **return per session index**: the reward collected in session k, averaged over the episodes
  that reach it (VariBAD-style beliefs fall behind after the first switch);
- **belief accuracy**: a probe from belief to true latent, fitted on the run's dataset beliefs
  (as relabelled for training) and scored on the online beliefs: accuracy for discrete latents,
  R² for continuous ones, overall and after the first switch
  (:func:`offline_dynamite.belief.diagnostics.latent_probe`);
- **session boundaries**: precision and recall of the termination head online, exactly and
  within 3 steps (:func:`offline_dynamite.belief.diagnostics.boundary_scores`).
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from offline_dynamite.belief.diagnostics import boundary_scores, encode_episodes, latent_probe
from offline_dynamite.data import load_flat
from offline_dynamite.distributed import RayCluster, ray_map
from offline_dynamite.online import ClosedLoopPolicy, OnlinePolicy
from offline_dynamite.rollout import Rollouts, episode_batches, process_envs, run_seeded_batch

#: Dataset episodes whose beliefs fit the latent probe.
PROBE_EPISODES = 500


class EvaluationError(ValueError):
    """A run that cannot be evaluated as asked."""


@dataclass(frozen=True)
class Episodes:
    """What ``E`` evaluation episodes of ``T`` steps did, with the policy's beliefs."""

    rollouts: Rollouts
    observations: np.ndarray  # [E, T + 1, obs]
    session_starts: np.ndarray  # [E, T + 1] bool
    belief: np.ndarray | None  # [E, T, k]: the belief the policy acted on at each step (OnlinePolicy.belief)
    boundary_probability: np.ndarray | None  # [E, T]

    @classmethod
    def concatenate(cls, parts: list[Episodes]) -> Episodes:
        """The episodes of ``parts``, one after the other."""
        def joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
            return None if arrays[0] is None else np.concatenate(arrays)

        return cls(
            rollouts=Rollouts(
                rewards=np.concatenate([part.rollouts.rewards for part in parts]),
                session_ids=np.concatenate([part.rollouts.session_ids for part in parts]),
                latents=np.concatenate([part.rollouts.latents for part in parts]),
            ),
            observations=np.concatenate([part.observations for part in parts]),
            session_starts=np.concatenate([part.session_starts for part in parts]),
            belief=joined([part.belief for part in parts]),
            boundary_probability=joined([part.boundary_probability for part in parts]),
        )


class RecordingPolicy(ClosedLoopPolicy):
    """A closed-loop policy that keeps the belief it acted on at every step of its batch."""

    def __init__(self, policy: OnlinePolicy) -> None:
        super().__init__(policy)
        self._steps: dict[str, list[np.ndarray]] = {"belief": [], "boundary_probability": []}

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        actions = super().act(observations, latents)
        for key, steps in self._steps.items():
            value = getattr(self.policy, key)
            if value is not None:
                steps.append(value)
        return actions

    def recorded(self, key: str) -> np.ndarray | None:
        """``key`` (``belief`` or ``boundary_probability``) of the batch's episodes, ``[B, T, ...]``."""
        return np.stack(self._steps[key], axis=1) if self._steps[key] else None


def env_of_run(record: dict[str, Any], env_id: str | None, switch_prob: float | None) -> tuple[str, dict[str, Any]]:
    """The env id and kwargs to evaluate in: the dataset's env and its kwargs, with overrides."""
    if not record.get("env_spec"):
        if env_id is None:
            raise EvaluationError("the run's dataset records no env: pass --env")
        spec_id, kwargs = env_id, {}
    else:
        spec = json.loads(record["env_spec"])
        spec_id, kwargs = spec["id"], dict(spec.get("kwargs") or {})
    if env_id is not None and env_id != spec_id:
        kwargs = {}  # another env: its own defaults
        spec_id = env_id
    if switch_prob is not None:
        kwargs["switch_prob"] = switch_prob
    return spec_id, kwargs


def roll_out(policy: OnlinePolicy, env_id: str, env_kwargs: dict[str, Any], episodes: int, seed: int,
             num_envs: int, ray: RayCluster | None = None) -> Episodes:
    """``episodes`` seeded episodes, ``num_envs`` envs stepped in lockstep, here or, one batch of
    envs per task, on ``ray``'s cluster (the same episodes either way)."""
    try:
        probe = gym.make(env_id, **env_kwargs)
    except (gym.error.Error, TypeError, ValueError, ImportError) as error:
        raise EvaluationError(f"cannot build env {env_id} with {env_kwargs}: {error}") from None
    _check_spaces(policy, probe, env_id)
    probe.close()
    batches = episode_batches(episodes, num_envs)
    roll_out_batch = functools.partial(_roll_out_batch, policy, env_id, env_kwargs, seed)
    if ray is None:
        return Episodes.concatenate(list(map(roll_out_batch, batches)))
    with contextlib.closing(ray_map(roll_out_batch, batches, ray)) as results:
        return Episodes.concatenate(list(results))


def _roll_out_batch(policy: OnlinePolicy, env_id: str, env_kwargs: dict[str, Any], seed: int,
                    episodes: range) -> Episodes:
    """Episodes ``episodes`` of a run seeded with ``seed``, in lockstep (one shard of :func:`roll_out`)."""
    recorder = RecordingPolicy(policy)
    trajectories = run_seeded_batch(process_envs(env_id, env_kwargs, len(episodes)), recorder, seed, episodes)
    return Episodes(Rollouts.of(trajectories), np.stack([t.observations for t in trajectories]),
                    np.stack([t.infos["session_start"] for t in trajectories]),
                    recorder.recorded("belief"), recorder.recorded("boundary_probability"))


def _check_spaces(policy: OnlinePolicy, env: gym.Env, env_id: str) -> None:
    if env.action_space != policy.action_space:
        raise EvaluationError(f"env {env_id} acts in {env.action_space}, the run's policy in {policy.action_space}: "
                              "evaluate the run in the env its dataset was collected in")
    expected = policy.observation_size
    if expected is not None and int(np.prod(env.observation_space.shape)) != expected:
        raise EvaluationError(f"env {env_id} observes {env.observation_space.shape}, the run's policy was trained on "
                              f"{expected} values: evaluate the run in the env its dataset was collected in")


def score(episodes: Episodes, policy: OnlinePolicy, record: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one run's evaluation episodes (see the module docstring)."""
    returns = episodes.rollouts.returns
    metrics: dict[str, Any] = {
        "episodes": len(returns),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "sessions_per_episode": float(episodes.rollouts.sessions_per_episode.mean()),
        "return_per_session": {str(k): v for k, v in episodes.rollouts.return_per_session_index().items()},
    }
    low, high = record.get("ref_min_score"), record.get("ref_max_score")
    if low is not None and high is not None and high > low:
        normalised = 100.0 * (returns - low) / (high - low)
        metrics |= {"normalised_score_mean": float(normalised.mean()), "normalised_score_std": float(normalised.std())}
    if episodes.belief is not None:
        metrics |= latent_metrics(episodes, policy.belief_model, record)
    if episodes.boundary_probability is not None:
        metrics |= boundary_metrics(episodes)
    return metrics


def latent_metrics(episodes: Episodes, model, record: dict[str, Any]) -> dict[str, float]:
    """Belief accuracy against the true latent: a probe fitted on the dataset's beliefs."""
    steps = episodes.belief.shape[1]
    mean, std = model.observation_mean.numpy(), model.observation_std.numpy()
    online = {
        "belief": episodes.belief.reshape(-1, episodes.belief.shape[-1]),
        "observation": ((episodes.observations[:, :steps] - mean) / std).reshape(-1, len(mean)),
        "latent": episodes.rollouts.latents[:, :steps].reshape(-1, episodes.rollouts.latents.shape[-1]),
        "session": episodes.rollouts.session_ids[:, :steps].reshape(-1),
    }
    flat = load_flat(record["dataset"]["file"])
    dataset_beliefs = encode_episodes(model, flat, np.arange(min(flat.num_episodes, PROBE_EPISODES)))
    return {f"belief_{key}": value for key, value in latent_probe(dataset_beliefs, online).items()}


def boundary_metrics(episodes: Episodes) -> dict[str, float]:
    """Precision and recall of the termination head online, against the env's switches."""
    # b_t (t ≥ 2) should flag the switch that opened the session of step t - 1 (session_start[t - 1]).
    steps = episodes.boundary_probability.shape[1]
    labels = np.zeros(episodes.boundary_probability.shape)
    labels[:, 1:] = episodes.session_starts[:, : steps - 1]
    has_label = np.zeros(labels.shape, dtype=bool)
    has_label[:, 2:] = True
    return boundary_scores({"boundary_probability": episodes.boundary_probability[:, 1:].reshape(-1),
                            "boundary_label": labels[:, 1:].reshape(-1), "has_label": has_label[:, 1:].reshape(-1)})


def evaluate_run(run_dir: Path, *, episodes: int, seed: int, num_envs: int, env_id: str | None = None,
                 switch_prob: float | None = None, ray: RayCluster | None = None) -> tuple[dict[str, Any], Episodes]:
    """Evaluate one run: its record of the evaluation (also written to
    ``<run_dir>/evaluations/<tag>.json``) and the episodes themselves."""
    try:
        policy = OnlinePolicy.load(run_dir)
    except (ValueError, OSError) as error:
        raise EvaluationError(str(error)) from None
    record = policy.record
    env, env_kwargs = env_of_run(record, env_id, switch_prob)
    result = roll_out(policy, env, env_kwargs, episodes, seed, num_envs, ray)
    evaluation = {
        "run": str(run_dir),
        "variant": record["variant"],
        "algo": record["algo"],
        "train_seed": record["policy_config"]["seed"],
        "env": env,
        "env_kwargs": env_kwargs,
        "seed": seed,
        "metrics": score(result, policy, record),
        "returns": result.rollouts.returns.tolist(),  # per episode, for box plots and re-analysis
    }
    tag = f"{env.split('/')[-1]}__switch{env_kwargs.get('switch_prob', 'default')}__seed{seed}__episodes{episodes}"
    folder = run_dir / "evaluations"
    folder.mkdir(exist_ok=True)
    partial = folder / f".{tag}.json.partial"
    partial.write_text(json.dumps(evaluation, indent=2) + "\n")
    partial.replace(folder / f"{tag}.json")
    return evaluation, result
