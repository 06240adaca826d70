"""Steps/s of dynamite/ScratchItch-v0 under random actions, and its real-time factor.

    python tests/benchmarks/bench_scratch_itch.py [--steps 20000] [--repeats 5]

Goes through ``gymnasium.make`` (the env checker's wrappers included, as users get it), takes
pre-drawn uniform actions and resets at the horizon. One step is 0.1 s of simulated time (10 Hz
control, 5 substeps of 0.02 s), so the real-time factor is ``steps/s × 0.1``. Also times the
oracle's batched ``act`` (one env), the cost that expert data collection adds on top.

Reference: Assistive Gym's PyBullet ScratchItch (10 Hz control, 5 substeps) cannot be installed
here (unmaintained, old gym API), so only our numbers are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym

import offline_dynamite  # noqa: F401  (registers the envs)
from bench_envs import steps_per_second  # the same random-action loop as the other envs

ENV_ID = "dynamite/ScratchItch-v0"


def oracle_steps_per_second(steps: int, seed: int = 0) -> float:
    """Env steps plus the oracle's action for each (batch of one)."""
    env = gym.make(ENV_ID)
    horizon = env.unwrapped.horizon
    oracle = env.unwrapped.make_oracle()
    obs, info = env.reset(seed=seed)
    oracle.reset([seed])
    start = time.perf_counter()
    for t in range(steps):
        obs, _, _, _, info = env.step(oracle.act(obs[None], info["latent"][None])[0])
        if (t + 1) % horizon == 0:
            obs, info = env.reset()
            oracle.reset([seed + t])
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    control_period = gym.make(ENV_ID).unwrapped.dt
    random_rate = statistics.median(
        steps_per_second(ENV_ID, gym.make(ENV_ID).unwrapped.horizon, args.steps, seed) for seed in range(args.repeats)
    )
    oracle_rate = statistics.median(
        oracle_steps_per_second(args.steps // 4, seed) for seed in range(args.repeats)
    )
    print(f"{ENV_ID}: {control_period * 1000:.0f} ms of simulated time per step")
    print(f"{'policy':8s} {'steps/s':>9s} {'real-time factor':>17s}")
    for name, rate in (("random", random_rate), ("oracle", oracle_rate)):
        print(f"{name:8s} {rate:9.0f} {rate * control_period:16.0f}x")


if __name__ == "__main__":
    main()
