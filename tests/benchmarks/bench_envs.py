"""Steps/s of each DLCMDP env against the stock gymnasium env it builds on, in one run.

    python tests/benchmarks/bench_envs.py [--steps 20000] [--repeats 5]

Both sides go through ``gymnasium.make`` (same wrappers), take the same pre-drawn uniform actions
and reset at the same horizon; the ratio ``dlcmdp / stock`` is the cost of the session mechanics,
action checks and info schema (target: above 0.9). Reference pairs are interleaved and the median
of the repeats is reported, to damp the noise of a shared machine. The gridworld has no stock
counterpart: its rate is printed alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import offline_dynamite  # noqa: F401  (registers the envs)

PAIRS = [
    ("dynamite/Reacher-v0", "Reacher-v5"),
    ("dynamite/HalfCheetahVel-v0", "HalfCheetah-v5"),
    ("dynamite/HalfCheetahWind-v0", "HalfCheetah-v5"),
    ("dynamite/Gridworld-v0", None),
]


def steps_per_second(env_id: str, horizon: int, steps: int, seed: int = 0) -> float:
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        actions = rng.integers(space.n, size=steps)
    else:
        actions = rng.uniform(space.low, space.high, size=(steps, *space.shape)).astype(space.dtype)
    env.reset(seed=seed)
    start = time.perf_counter()
    for t in range(steps):
        env.step(actions[t])
        if (t + 1) % horizon == 0:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    print(f"{'env':30s} {'steps/s':>9s} {'stock env':18s} {'steps/s':>9s} {'ratio':>6s}")
    for env_id, stock_id in PAIRS:
        horizon = gym.make(env_id).unwrapped.horizon
        ours, stock = [], []
        for _ in range(args.repeats):
            ours.append(steps_per_second(env_id, horizon, args.steps))
            if stock_id is not None:
                stock.append(steps_per_second(stock_id, horizon, args.steps))
        ours_rate = statistics.median(ours)
        if stock_id is None:
            print(f"{env_id:30s} {ours_rate:9.0f} {'-':18s} {'-':>9s} {'-':>6s}")
            continue
        stock_rate = statistics.median(stock)
        ratio = ours_rate / stock_rate
        print(f"{env_id:30s} {ours_rate:9.0f} {stock_id:18s} {stock_rate:9.0f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
