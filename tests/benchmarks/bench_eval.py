"""Evaluation speed: steps/s of ``dynamite-eval``'s roll-outs with N envs stepped in lockstep
(one batched belief update and policy call per step) against a plain loop over one env with the
same policy, in one run.

    python tests/benchmarks/bench_eval.py [--episodes 64] [--num-envs 1 8 16 32]

For Gridworld and Reacher: a small mixed dataset is collected into a temporary Minari root and a
dynamite run is trained on it at a tiny budget (the speed of acting does not depend on how well
the policy was trained), then the same evaluation episodes are rolled out at each batch size.
One torch thread.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from collect.recipe import load_recipe
from collect.writer import collect
from evaluation.evaluate import roll_out
from offline_dynamite.belief.trainer import BeliefTrainConfig
from offline_dynamite.online import OnlinePolicy
from offline_dynamite.train import runs
from offline_dynamite.train.config import PolicyTrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 16, 32])
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        for dataset_id, env_id in (("dynamite/gridworld/mixed-v0", "dynamite/Gridworld-v0"),
                                   ("dynamite/reacher/mixed-v0", "dynamite/Reacher-v0")):
            recipe = load_recipe(dataset_id).replace(episodes=64, reference_episodes=2)
            data_file = collect(recipe, Path(root) / "minari").data_file
            run = runs.new_train_run(str(data_file), Path(root) / "runs", variant="dynamite", belief_fields={}, belief=None,
                                     ablations=dict.fromkeys(runs.ABLATIONS, True),
                                     belief_train_config=BeliefTrainConfig(steps=20),
                                     policy_config=PolicyTrainConfig(steps=50))
            runs.execute(run, Console(quiet=True))
            policy = OnlinePolicy.load(run.run_dir)
            print(f"{env_id}: {args.episodes} episodes")
            rates = {}
            for num_envs in args.num_envs:
                started = time.perf_counter()
                episodes = roll_out(policy, env_id, {}, args.episodes, seed=0, num_envs=num_envs)
                rates[num_envs] = episodes.rollouts.rewards.size / (time.perf_counter() - started)
                reference = rates[args.num_envs[0]]
                print(f"  {num_envs:3d} envs: {rates[num_envs]:9,.0f} steps/s  ({rates[num_envs] / reference:.2f}× "
                      f"{args.num_envs[0]} env)")


if __name__ == "__main__":
    main()
