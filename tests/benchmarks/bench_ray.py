"""Ray's overhead on one machine: collection and evaluation steps/s on a local Ray instance against
the local collector (a pool of worker processes) and the local evaluator, in one run.

    pip install -c constraints.txt -e ".[ray]"
    python tests/benchmarks/bench_ray.py [--cpus 2] [--episodes 2000]

Each env's mixed recipe is collected with ``--workers 1``, ``--workers CPUS``, ``--ray local``
(starting and stopping Ray on this machine's CPUs on the clock, as the pool starts its processes)
and on a warm Ray instance with CPUS CPUs whose workers have already imported the project. The three datasets must be
identical. Evaluation rolls the same episodes of a run trained at a tiny budget out in this
process and on Ray, 16 envs per shard, and checks the metrics agree. On one small machine Ray
can only match the process pool: its value is the machines beyond this one.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import ray
import torch
from rich.console import Console

from collect.recipe import load_recipe
from collect.writer import collect
from evaluation.evaluate import roll_out
from offline_dynamite.belief.trainer import BeliefTrainConfig
from offline_dynamite.distributed import RayCluster
from offline_dynamite.online import OnlinePolicy
from offline_dynamite.train import runs
from offline_dynamite.train.config import PolicyTrainConfig

ENVS = {"gridworld": "dynamite/Gridworld-v0", "reacher": "dynamite/Reacher-v0", "halfcheetahvel": "dynamite/HalfCheetahVel-v0"}
ON_RAY = RayCluster("auto")  # the instance the benchmark started


def collection(name: str, episodes: int, cpus: int, root: Path) -> None:
    recipe = load_recipe(f"dynamite/{name}/mixed-v0").replace(episodes=episodes, reference_episodes=2)
    rates, hashes = {}, set()

    def timed(label: str, **options) -> None:
        started = time.perf_counter()
        result = collect(recipe, root / f"{name}-{len(rates)}", **options)
        rates[label] = result.steps / (time.perf_counter() - started)
        hashes.add(result.content_sha256)

    timed("local, 1 process", workers=1)
    timed(f"local, {cpus} processes", workers=cpus)
    timed("--ray local", ray=RayCluster("local"))  # starts Ray on this machine's CPUs and stops it
    ray.init(address="local", num_cpus=cpus, logging_level=logging.ERROR, log_to_driver=False)
    collect(recipe, root / f"{name}-warm-up", ray=ON_RAY)  # the workers import the project
    timed("Ray, warm instance", ray=ON_RAY)
    assert len(hashes) == 1, "the datasets differ"
    reference = f"local, {cpus} processes"
    print(f"collect {name}: {episodes} episodes (+ reference roll-outs), identical datasets")
    for label, rate in rates.items():
        print(f"  {label:22s} {rate:9,.0f} steps/s  {rate / rates[reference]:5.2f}× {reference}")


def evaluation(name: str, episodes: int, root: Path) -> None:
    recipe = load_recipe(f"dynamite/{name}/mixed-v0").replace(episodes=64, reference_episodes=2)
    data_file = collect(recipe, root / f"eval-{name}").data_file
    run = runs.new_train_run(str(data_file), root / "runs", variant="dynamite", belief_fields={}, belief=None,
                             ablations=dict.fromkeys(runs.ABLATIONS, True),
                             belief_train_config=BeliefTrainConfig(steps=20), policy_config=PolicyTrainConfig(steps=50))
    runs.execute(run, Console(quiet=True))
    policy = OnlinePolicy.load(run.run_dir)
    rates, returns = {}, []
    for label, cluster in (("local, 1 process", None), ("Ray, first run", ON_RAY), ("Ray, warm workers", ON_RAY)):
        # The first run on Ray ships the policy and imports torch and d3rlpy in the workers.
        started = time.perf_counter()
        rolled = roll_out(policy, ENVS[name], {}, episodes, seed=0, num_envs=16, ray=cluster)
        rates[label] = rolled.rollouts.rewards.size / (time.perf_counter() - started)
        returns.append(rolled.rollouts.returns.tolist())
    assert all(r == returns[0] for r in returns), "the evaluations differ"
    print(f"evaluate {name}: {episodes} episodes, 16 envs per shard, identical returns")
    for label, rate in rates.items():
        print(f"  {label:22s} {rate:9,.0f} steps/s  {rate / rates['local, 1 process']:5.2f}× local, 1 process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=2000, help="Collected episodes per env.")
    parser.add_argument("--eval-episodes", type=int, default=128)
    parser.add_argument("--envs", nargs="+", default=["gridworld", "reacher"], choices=list(ENVS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.envs:
            try:  # a fresh Ray instance per env
                collection(name, args.episodes, args.cpus, Path(scratch))
                evaluation(name, args.eval_episodes, Path(scratch))
            finally:
                ray.shutdown()


if __name__ == "__main__":
    main()
