"""Collection speed and size: dynamite-collect's writer against Minari's DataCollector, one run.

    pip install -c constraints.txt -e ".[bench]"     # Minari's DataCollector needs JAX
    python tests/benchmarks/bench_collect.py [--env reacher] [--episodes 200]

Both sides roll the same noisy oracle out in the same env (with the session infos recorded) and
write a Minari HDF5 dataset; the time covers roll-out and writing. DataCollector steps one env
and calls the policy once per step, as it is meant to be used; ours batches envs in lockstep and,
with 2 workers, rolls out in two processes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import gymnasium as gym

from collect.policies import Behaviour
from collect.recipe import load_recipe
from collect.writer import collect
from offline_dynamite.rollout import episode_seed, policy_seed


def ours(recipe, root: Path, workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    result = collect(recipe, root, workers=workers)
    seconds = time.perf_counter() - start
    return result.steps / seconds, result.data_file.stat().st_size


def minari_data_collector(recipe, root: Path) -> tuple[float, int]:
    from minari import DataCollector

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    env = DataCollector(gym.make(recipe.env, **recipe.env_kwargs), record_infos=True)
    policy = recipe.behaviour[0].build(env)
    steps = 0
    start = time.perf_counter()
    for episode in range(recipe.episodes):
        obs, info = env.reset(seed=episode_seed(recipe.seed, episode))
        policy.reset([policy_seed(recipe.seed, episode)])
        done = False
        while not done:
            action = policy.act(obs[None], info["latent"][None])[0]
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            steps += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = env.create_dataset(dataset_id="bench/minari-v0", algorithm_name="noisy oracle")
    seconds = time.perf_counter() - start
    return steps / seconds, (Path(dataset.storage.data_path) / "main_data.hdf5").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="reacher")
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    recipe = load_recipe(f"dynamite/{args.env}/expert-v0").replace(
        episodes=args.episodes, reference_episodes=1, behaviour=(Behaviour("oracle", noise=0.1),)
    )
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        rate_1, size_ours = ours(recipe, scratch / "ours-1", workers=1)
        rate_2, _ = ours(recipe, scratch / "ours-2", workers=2)
        try:
            rate_minari, size_minari = minari_data_collector(recipe, scratch / "minari")
        except ImportError as error:
            raise SystemExit(f"Minari's DataCollector needs JAX: pip install -e '.[bench]' ({error})")
    steps = recipe.episodes * gym.make(recipe.env).unwrapped.horizon
    print(f"{recipe.env}, {recipe.episodes} episodes, {steps:,} steps, noisy oracle, infos recorded")
    print(f"{'writer':28s} {'steps/s':>9s} {'vs Minari':>10s}")
    print(f"{'Minari DataCollector':28s} {rate_minari:9.0f} {1.0:10.2f}")
    print(f"{'dynamite-collect, 1 worker':28s} {rate_1:9.0f} {rate_1 / rate_minari:10.2f}")
    print(f"{'dynamite-collect, 2 workers':28s} {rate_2:9.0f} {rate_2 / rate_minari:10.2f}")
    print(f"bytes on disk: ours {size_ours:,}, Minari {size_minari:,} (ratio {size_ours / size_minari:.2f})")


if __name__ == "__main__":
    main()
