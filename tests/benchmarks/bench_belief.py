"""Belief-model speed: the session-masked ELBO and the counterfactual reconstruction (Gaussian
and categorical) against whole-trajectory reconstruction, training throughput, and encoding a
dataset into beliefs, in one run.

    python tests/benchmarks/bench_belief.py [--batch 32] [--horizon 200] [--sessions 4]

The ELBO comparison uses one batch of HalfCheetah-sized sequences (17-dim observations, 6-dim
actions) with equal sessions; every row is the DynaMITE model with only the reconstruction (and,
last, the kind of latent) changed. One torch thread, as training runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from offline_dynamite.belief.config import BeliefConfig
from offline_dynamite.belief.model import Batch, BeliefModel, DataSpec


def synthetic_batch(batch: int, horizon: int, sessions: int, spec: DataSpec) -> Batch:
    rng = np.random.default_rng(0)
    session_ids = np.minimum(np.arange(horizon + 1) * sessions // horizon, sessions - 1)
    session_ids = np.tile(session_ids, (batch, 1))
    starts = np.zeros_like(session_ids, dtype=bool)
    starts[:, 0] = True
    starts[:, 1:] = session_ids[:, 1:] != session_ids[:, :-1]
    return Batch(
        torch.from_numpy(rng.normal(size=(batch, horizon + 1, spec.observation_size)).astype(np.float32)),
        torch.from_numpy(rng.uniform(-1, 1, size=(batch, horizon, spec.action_size)).astype(np.float32)),
        torch.from_numpy(rng.normal(size=(batch, horizon))),
        torch.full((batch,), horizon),
        torch.from_numpy(session_ids),
        torch.from_numpy(starts),
        torch.from_numpy(rng.normal(size=(batch, sessions, horizon))),  # the counterfactual targets
    )


def time_updates(model: BeliefModel, batch: Batch, repeats: int) -> tuple[float, int]:
    optimizer = torch.optim.Adam(model.parameters())
    times, pairs = [], 0
    for _ in range(repeats + 1):
        start = time.perf_counter()
        terms = model.loss(batch)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        pairs = int(terms["decoded_pairs"])
    return statistics.median(times[1:]), pairs


def encoding_rate(episodes: int) -> tuple[float, int]:
    from collect.recipe import load_recipe
    from collect.writer import collect
    from offline_dynamite.belief.diagnostics import encode_episodes
    from offline_dynamite.belief.trainer import data_spec
    from offline_dynamite.data import load_flat

    with tempfile.TemporaryDirectory() as root:
        recipe = load_recipe("dynamite/reacher/mixed-v0").replace(episodes=episodes, reference_episodes=1)
        flat = load_flat(collect(recipe, Path(root)).data_file)
    model = BeliefModel(BeliefConfig(), data_spec(flat))
    start = time.perf_counter()
    encode_episodes(model, flat, np.arange(flat.num_episodes))
    return flat.num_transitions / (time.perf_counter() - start), flat.num_transitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = DataSpec(observation_size=17, action_size=6, discrete_actions=False)
    batch = synthetic_batch(args.batch, args.horizon, args.sessions, spec)
    print(f"B = {args.batch}, T = {args.horizon}, {args.sessions} sessions of {args.horizon // args.sessions} steps")
    print(f"{'reconstruction':36s} {'decodes':>9s} {'s/update':>9s} {'transitions/s':>14s} {'× whole':>8s}")
    configs = {
        "whole trajectory (VariBAD)": BeliefConfig(session_masking=False),
        "session-masked (DynaMITE)": BeliefConfig(),
        "counterfactual, Gaussian": BeliefConfig(counterfactual_reconstruction=True),
        "counterfactual, categorical (2)": BeliefConfig(latent="categorical", latent_dim=2,
                                                        counterfactual_reconstruction=True),
    }
    whole = None
    for name, config in configs.items():
        torch.manual_seed(0)
        seconds, pairs = time_updates(BeliefModel(config, spec), batch, args.repeats)
        whole = whole or seconds
        print(f"{name:36s} {pairs:9,d} {seconds:9.3f} {args.batch * args.horizon / seconds:14,.0f} {seconds / whole:7.2f}×")
    rate, steps = encoding_rate(300)
    print(f"encoding a dataset into beliefs (Reacher, {steps:,} steps, inference boundaries): {rate:,.0f} steps/s")


if __name__ == "__main__":
    main()
