"""Roll a recipe out in worker processes and write it as a Minari HDF5 dataset, atomically.

The layout is Minari's own (``<root>/<dataset_id>/data/{main_data.hdf5, metadata.json}``, one
``episode_<i>`` group per episode with T + 1 observations and infos), so ``minari.load_dataset``
and ``minari show`` read it without this project's code. Writing is ours rather than Minari's
``DataCollector``: that one needs JAX, buffers step by step and writes chunked, resizable
datasets; here workers roll whole episodes out with batched policy calls and the main process
writes each episode's arrays once, contiguously.

Nothing is visible until the dataset is complete: everything is written into a hidden folder
``<root>/.dynamite-partial-<random>`` (Minari skips hidden folders) that is renamed into place at
the end, on the same file system. Ctrl-C, an exception or a full disk remove the hidden folder; a
replaced dataset (``overwrite``) is removed only after the new one is in place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import minari
import numpy as np
from minari.namespace import create_namespace, list_local_namespaces
from minari.serialization import serialize_space

from collect.policies import Behaviour, choose_behaviours
from collect.recipe import Recipe, RecipeError
from offline_dynamite.data import TRANSITION_FIELDS, ContentHasher
from offline_dynamite.distributed import RayCluster, ray_map
from offline_dynamite.policies import OracleUnavailableError
from offline_dynamite.rollout import Trajectory, episode_seed, process_envs, run_seeded_batch

#: Episodes per task sent to a worker; envs of a task that share a behaviour run in lockstep.
CHUNK_EPISODES = 16
PARTIAL_PREFIX = ".dynamite-partial-"
#: Seed offset of the reference-score roll-outs, so they never replay a dataset episode.
REFERENCE_SEED_SALT = 7_919


class DatasetExistsError(FileExistsError):
    pass


@dataclass(frozen=True)
class CollectResult:
    dataset_id: str
    data_file: Path  # .../data/main_data.hdf5
    episodes: int
    steps: int
    seconds: float
    content_sha256: str
    ref_min_score: float
    ref_max_score: float


def dataset_dir(root: Path, dataset_id: str) -> Path:
    return root / dataset_id


def datasets_root(root: str | Path | None) -> Path:
    """``root``, else ``$MINARI_DATASETS_PATH``, else Minari's default ``~/.minari/datasets``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


# ---------------------------------------------------------------------------- roll-outs
@dataclass(frozen=True)
class _Task:
    env_id: str
    env_kwargs: dict[str, Any]
    mix: tuple[Behaviour, ...]
    seed: int
    episodes: tuple[int, ...]
    behaviours: tuple[int, ...]  # index into mix, per episode


_worker_policies: dict[tuple[str, Behaviour], Any] = {}


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group: the main process alone handles it and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _roll_out(task: _Task) -> list[tuple[int, int, int, Trajectory]]:
    """Roll a task's episodes out; returns ``(episode, behaviour, env seed, trajectory)``."""
    results = []
    for behaviour_index in sorted(set(task.behaviours)):
        episodes = [e for e, b in zip(task.episodes, task.behaviours) if b == behaviour_index]
        envs = process_envs(task.env_id, task.env_kwargs, len(episodes))
        behaviour = task.mix[behaviour_index]
        policy_key = (json.dumps([task.env_id, task.env_kwargs], sort_keys=True), behaviour)
        if policy_key not in _worker_policies:
            _worker_policies[policy_key] = behaviour.build(envs[0])
        trajectories = run_seeded_batch(envs, _worker_policies[policy_key], task.seed, episodes)
        results += [
            (episode, behaviour_index, episode_seed(task.seed, episode), trajectory)
            for episode, trajectory in zip(episodes, trajectories)
        ]
    return sorted(results, key=lambda item: item[0])


def _tasks(env_id: str, env_kwargs: dict[str, Any], mix: Sequence[Behaviour], seed: int,
           episodes: int, behaviours: np.ndarray) -> list[_Task]:
    return [
        _Task(env_id, env_kwargs, tuple(mix), seed, tuple(range(first, min(first + CHUNK_EPISODES, episodes))),
              tuple(int(b) for b in behaviours[first : first + CHUNK_EPISODES]))
        for first in range(0, episodes, CHUNK_EPISODES)
    ]


# ---------------------------------------------------------------------------- writing
def _write_episode(file: h5py.File, hasher: ContentHasher, index: int, env_seed: int,
                   behaviour: Behaviour, behaviour_index: int, trajectory: Trajectory) -> None:
    group = file.create_group(f"episode_{index}")
    group.attrs["id"] = index
    group.attrs["seed"] = env_seed
    group.attrs["total_steps"] = len(trajectory.rewards)
    group.attrs["behaviour"] = behaviour.name
    fields = {"observations": trajectory.observations}
    fields |= {name: getattr(trajectory, name) for name in TRANSITION_FIELDS}
    behaviour_ids = np.full(len(trajectory.observations), behaviour_index, dtype=np.int64)
    infos = trajectory.infos | {"behaviour_id": behaviour_ids}
    for name, values in fields.items():
        group.create_dataset(name, data=values)
        hasher.update(name, values)
    info_group = group.create_group("infos")
    for key, values in infos.items():
        info_group.create_dataset(key, data=values)
        hasher.update(f"infos/{key}", values)


def _bytes_on_disk(trajectory: Trajectory) -> int:
    """A generous estimate of an episode's size in the file: its arrays plus HDF5 object headers."""
    arrays = (trajectory.observations, trajectory.actions, trajectory.rewards, trajectory.terminations,
              trajectory.truncations, *trajectory.infos.values())
    return sum(a.nbytes for a in arrays) + 8 * len(trajectory.observations) + 1024 * (len(arrays) + 3)


def _ensure_space(folder: Path, needed: int) -> None:
    """Stop cleanly before a write could fill the disk.

    HDF5 does not report a full disk as an exception: the failed writes surface while objects
    are closed, are printed and ignored, and closing the file may then crash the process. So the
    writer checks the free space before every chunk, keeping a margin for the metadata.
    """
    free = shutil.disk_usage(folder).free
    if free < 2 * needed + 1_000_000:
        raise OSError(errno.ENOSPC, f"not enough free space in {folder.parent} "
                                    f"({free / 1e6:.1f} MB free, the next episodes need about {needed / 1e6:.1f} MB)")


def _metadata(recipe: Recipe, env: gym.Env, episodes: int, steps: int, content_sha256: str,
              ref_min: float, ref_max: float, reference_episodes: int) -> dict[str, Any]:
    """Minari's metadata keys (as ``create_dataset_from_buffers`` writes them) plus ours."""
    spec_json = env.spec.to_json()
    optional = {
        "code_permalink": recipe.code_permalink,
        "author_email": [recipe.author_email] if recipe.author_email else None,
    }
    return {
        "dataset_id": recipe.dataset_id,
        **{key: value for key, value in optional.items() if value is not None},
        "author": [recipe.author],
        "algorithm_name": " | ".join(f"{b.name} ({b.weight:g})" for b in recipe.behaviour),
        "description": recipe.description,
        "minari_version": minari.__version__,
        "eval_env_spec": spec_json,
        "ref_max_score": ref_max,
        "ref_min_score": ref_min,
        "num_episodes_average_score": reference_episodes,
        "requirements": [f"dynamite-rl>={version('dynamite-rl')}"],
        "total_episodes": episodes,
        "total_steps": steps,
        "data_format": "hdf5",
        "jpeg_encoding": False,
        "observation_space": serialize_space(env.observation_space),
        "action_space": serialize_space(env.action_space),
        "env_spec": spec_json,
        "dynamite": {
            "recipe": recipe.to_dict(),
            "behaviour_ids": {str(i): b.name for i, b in enumerate(recipe.behaviour)},
            "session_labels": True,
            "latent_size": int(env.unwrapped.latent_size),
            "content_sha256": content_sha256,
            "seed_scheme": "env reset seed of episode i = SeedSequence([seed, i]); "
                           "policy seed = SeedSequence([seed, i, 1]); behaviour draw from [seed, i, 2]",
            "versions": {name: version(name) for name in ("dynamite-rl", "gymnasium", "mujoco", "minari", "numpy")},
        },
    }


def _check_buildable(recipe: Recipe) -> gym.Env:
    """Build the env and every behaviour once, so bad kwargs or a missing oracle fail up front."""
    try:
        env = gym.make(recipe.env, **recipe.env_kwargs)
    except (TypeError, ValueError, gym.error.Error) as error:
        raise RecipeError(f"cannot build {recipe.env} with {recipe.env_kwargs}: {error}") from None
    for behaviour in (*recipe.behaviour, Behaviour("oracle")):  # the oracle sets ref_max_score
        try:
            behaviour.build(env)
        except (OracleUnavailableError, FileNotFoundError, ValueError) as error:
            raise RecipeError(f"behaviour {behaviour.name}: {error}") from None
    return env


def collect(
    recipe: Recipe,
    root: Path,
    workers: int = 1,
    overwrite: bool = False,
    on_progress: Callable[[int], None] | None = None,
    ray: RayCluster | None = None,
) -> CollectResult:
    """Collect ``recipe`` into ``root``; ``on_progress(steps)`` is called as episodes arrive.

    The episodes are rolled out in this process (``workers=1``), in a pool of ``workers``
    processes, or as Ray tasks on ``ray``'s cluster; the dataset is the same in each case.
    """
    final_dir = dataset_dir(root, recipe.dataset_id)
    if final_dir.exists() and not overwrite:
        raise DatasetExistsError(
            f"dataset {recipe.dataset_id} already exists at {final_dir}: pass --overwrite to replace it"
        )
    env = _check_buildable(recipe)

    behaviours = choose_behaviours(recipe.behaviour, recipe.seed, range(recipe.episodes))
    data_tasks = _tasks(recipe.env, recipe.env_kwargs, recipe.behaviour, recipe.seed, recipe.episodes, behaviours)
    reference_seed = recipe.seed + REFERENCE_SEED_SALT
    zeros = np.zeros(recipe.reference_episodes, dtype=np.int64)
    reference_tasks = [
        *_tasks(recipe.env, recipe.env_kwargs, (Behaviour("random"),), reference_seed, recipe.reference_episodes, zeros),
        *_tasks(recipe.env, recipe.env_kwargs, (Behaviour("oracle"),), reference_seed, recipe.reference_episodes, zeros),
    ]

    root.mkdir(parents=True, exist_ok=True)
    partial = root / f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}"
    (partial / "data").mkdir(parents=True)
    start = time.perf_counter()
    try:
        hasher = ContentHasher()
        steps = 0
        reference_returns: list[float] = []
        with _task_results(data_tasks + reference_tasks, workers, ray) as results, \
                h5py.File(partial / "data" / "main_data.hdf5", "w", track_order=True) as file:
            for index, chunk in enumerate(results):
                if index >= len(data_tasks):
                    reference_returns += [float(t.rewards.sum()) for *_, t in chunk]
                    continue
                _ensure_space(partial, sum(_bytes_on_disk(t) for *_, t in chunk))
                for episode, behaviour_index, env_seed, trajectory in chunk:
                    _write_episode(file, hasher, episode, env_seed, recipe.behaviour[behaviour_index],
                                   behaviour_index, trajectory)
                    steps += len(trajectory.rewards)
                    if on_progress is not None:
                        on_progress(len(trajectory.rewards))
        ref_min = float(np.mean(reference_returns[: recipe.reference_episodes]))
        ref_max = float(np.mean(reference_returns[recipe.reference_episodes :]))
        metadata = _metadata(recipe, env, recipe.episodes, steps, hasher.hexdigest(), ref_min, ref_max,
                             recipe.reference_episodes)
        metadata["dataset_size"] = round(os.path.getsize(partial / "data" / "main_data.hdf5") / 1e6, 1)
        with open(partial / "data" / "metadata.json", "w") as handle:
            json.dump(metadata, handle)
        _move_into_place(partial, final_dir, root, recipe.dataset_id)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return CollectResult(recipe.dataset_id, final_dir / "data" / "main_data.hdf5", recipe.episodes, steps,
                         time.perf_counter() - start, metadata["dynamite"]["content_sha256"], ref_min, ref_max)


@contextlib.contextmanager
def _task_results(tasks: list[_Task], workers: int,
                  ray: RayCluster | None) -> Iterator[Iterator[list[tuple[int, int, int, Trajectory]]]]:
    """Task results in task order: from Ray, in this process for one worker, else from a process pool."""
    if ray is not None:
        with contextlib.closing(ray_map(_roll_out, tasks, ray)) as results:
            yield results
        return
    if workers <= 1:
        yield map(_roll_out, tasks)
        return
    # forkserver, not fork: workers start clean even if the parent has imported torch (whose
    # thread pools do not survive a fork), and, with the writer preloaded in the server,
    # faster than spawn, which imports gymnasium and MuJoCo again in every worker.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["collect.writer"])
    # A Ctrl-C while the forkserver and the workers start would hit them before they ignore it
    # (tracebacks from half-imported children) and could be lost for the main process: hold it
    # back until the pool is up, then let it through.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool = context.Pool(workers, initializer=_ignore_sigint)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    try:
        yield pool.imap(_roll_out, tasks)
    finally:
        pool.terminate()
        pool.join()


def _move_into_place(partial: Path, final_dir: Path, root: Path, dataset_id: str) -> None:
    namespace = dataset_id.rsplit("/", 1)[0] if "/" in dataset_id else None
    if namespace is not None:
        previous = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = str(root)
        try:
            if namespace not in list_local_namespaces():
                create_namespace(namespace, description="DLCMDP datasets made by dynamite-rl")
        finally:
            if previous is None:
                del os.environ["MINARI_DATASETS_PATH"]
            else:
                os.environ["MINARI_DATASETS_PATH"] = previous
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if final_dir.exists():
        replaced = root / f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}"
        os.rename(final_dir, replaced)
        os.rename(partial, final_dir)
        shutil.rmtree(replaced)
    else:
        os.rename(partial, final_dir)
