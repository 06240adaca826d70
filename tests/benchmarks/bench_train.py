"""``dynamite-offline train`` speed: the wall time of each stage, and policy updates/s of our
training loop against d3rlpy's plain ``fit`` on the same hyper-state arrays, in one run.

    python tests/benchmarks/bench_train.py [--episodes 400] [--belief-steps 300] [--steps 2000]

For Gridworld (discrete CQL) and Reacher (IQL): a mixed dataset is collected into a temporary
Minari root, the full pipeline runs (belief fit, relabelling, policy), then the same algorithm
with the same configuration and initialisation is trained twice more on the run's hyper-states:
with our loop (seeded vectorised sampler, metrics, checkpoints) and with ``algo.fit`` on a
d3rlpy ``MDPDataset`` of the same arrays (its own sampler and logger, logging switched off).
One torch thread, as training runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from minari.serialization import deserialize_space
from rich.console import Console

from collect.recipe import load_recipe
from collect.writer import collect
from offline_dynamite.belief.trainer import (
    BeliefTrainConfig,
    load_checkpoint,
    model_from_checkpoint,
)
from offline_dynamite.data import load_flat
from offline_dynamite.train import hyperstates, runs
from offline_dynamite.train.algos import build_algo, import_d3rlpy
from offline_dynamite.train.config import PolicyTrainConfig
from offline_dynamite.train.trainer import PolicyTrainer, fit_policy


def pipeline(data_file: Path, out: Path, belief_steps: int, steps: int) -> Path:
    run = runs.new_train_run(str(data_file), out, variant="dynamite", belief_fields={}, belief=None,
                             ablations=dict.fromkeys(runs.ABLATIONS, True),
                             belief_train_config=BeliefTrainConfig(steps=belief_steps),
                             policy_config=PolicyTrainConfig(steps=steps))
    record = runs.execute(run, Console(quiet=True))
    print("  stages (s):", ", ".join(f"{stage.removesuffix('_s')} {seconds:.1f}" for stage, seconds in record["timings"].items()))
    return run.run_dir


def compare_loops(data_file: Path, run_dir: Path, steps: int) -> None:
    d3rlpy = import_d3rlpy()
    record = runs.read_record(run_dir)
    flat = load_flat(data_file)
    model = model_from_checkpoint(load_checkpoint(run_dir / runs.BELIEF_DIR / runs.BELIEF_CHECKPOINT))
    states = hyperstates.hyper_states(flat, "dynamite", model)
    space = deserialize_space(record["action_space"])
    config = PolicyTrainConfig(algo=record["algo"], steps=steps)
    start = int(space.start) if hasattr(space, "n") else None

    with tempfile.TemporaryDirectory() as folder:
        trainer = PolicyTrainer(hyperstates.TransitionSampler(flat, states, start), space, config)
        began = time.perf_counter()
        fit_policy(trainer, Path(folder))
        ours = steps / (time.perf_counter() - began)

    torch.manual_seed(config.seed)
    algo = build_algo(config.algo, space, states.mean(0), states.std(0), config.batch_size)
    dataset = flat.to_mdp_dataset(states)
    began = time.perf_counter()
    algo.fit(dataset, n_steps=steps, n_steps_per_epoch=steps, show_progress=False,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory(), save_interval=10**9)
    plain = steps / (time.perf_counter() - began)
    print(f"  policy updates/s: ours {ours:,.0f}, d3rlpy fit {plain:,.0f} → ours/plain {ours / plain:.2f}×"
          f" (wrapper overhead {max(0.0, 1 - ours / plain):.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--belief-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # d3rlpy's info logs
    with tempfile.TemporaryDirectory() as root:
        for dataset_id in ("dynamite/gridworld/mixed-v0", "dynamite/reacher/mixed-v0"):
            recipe = load_recipe(dataset_id).replace(episodes=args.episodes, reference_episodes=2)
            data_file = collect(recipe, Path(root) / "minari", workers=1).data_file
            flat = load_flat(data_file)
            print(f"{dataset_id}: {flat.num_episodes} episodes, {flat.num_transitions:,} steps")
            run_dir = pipeline(data_file, Path(root) / "runs", args.belief_steps, args.steps)
            compare_loops(data_file, run_dir, args.steps)


if __name__ == "__main__":
    main()
