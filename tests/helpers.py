"""Shared test helpers: seeded roll-outs that record everything a test may compare."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass
class Trace:
    observations: list[np.ndarray] = field(default_factory=list)  # T + 1
    actions: list[Any] = field(default_factory=list)  # T
    rewards: list[float] = field(default_factory=list)  # T
    infos: list[dict[str, Any]] = field(default_factory=list)  # T + 1
    truncations: list[bool] = field(default_factory=list)  # T


def random_trace(
    env: gym.Env, seed: int, action_seed: int = 0, oracle_share: float = 0.0
) -> Trace:
    """One episode with seeded uniform actions, everything recorded.

    With ``oracle_share > 0`` that share of the steps follows the env's oracle instead, so that
    the trace also visits the states that pay (goals, the itch).
    """
    env.action_space.seed(action_seed)
    rng = np.random.default_rng(action_seed)
    oracle = env.unwrapped.make_oracle() if oracle_share > 0 else None
    if oracle is not None:
        oracle.reset([action_seed])
    obs, info = env.reset(seed=seed)
    trace = Trace(observations=[obs], infos=[info])
    while True:
        action = env.action_space.sample()
        if oracle is not None and rng.random() < oracle_share:
            action = oracle.act(obs[None], info["latent"][None])[0]
        obs, reward, terminated, truncated, info = env.step(action)
        trace.actions.append(action)
        trace.rewards.append(reward)
        trace.observations.append(obs)
        trace.infos.append(info)
        trace.truncations.append(truncated)
        if terminated or truncated:
            break
    return trace


def stacked_info(trace: Trace, key: str) -> np.ndarray:
    return np.stack([info[key] for info in trace.infos])


def console_script(name: str) -> str:
    """Path of an installed console script of this environment (the venv may not be on PATH)."""
    import shutil
    import sys
    from pathlib import Path

    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else shutil.which(name) or name


def bad_datasets(labelled: Path, folder: Path) -> dict[str, Path]:
    """Inputs every dataset-reading command must refuse or handle: a file that is not HDF5, an
    HDF5 file that is not Minari, and a copy of ``labelled`` without its session labels."""
    import shutil

    import h5py

    not_hdf5 = folder / "notes.hdf5"
    not_hdf5.write_text("hello")
    not_minari = folder / "plain.hdf5"
    with h5py.File(not_minari, "w") as file:
        file["x"] = np.zeros(3)
    unlabelled = folder / "unlabelled"
    shutil.copytree(labelled.parent, unlabelled)
    with h5py.File(unlabelled / "main_data.hdf5", "a") as file:
        for name in file:
            for key in ("latent", "session_id", "session_start"):
                del file[name]["infos"][key]
    return {"not_hdf5": not_hdf5, "not_minari": not_minari, "unlabelled": unlabelled / "main_data.hdf5"}


def visible_entries(root: Path) -> list[str]:
    """Everything in a datasets root, hidden partial folders included."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def interrupt_collection(arguments: list[str], root: Path, running_s: float) -> tuple[int, str]:
    """Start ``dynamite-collect ARGUMENTS --root ROOT``, wait until its partial dataset folder
    exists, let it run ``running_s`` more seconds, press Ctrl-C; its exit code and stderr."""
    import signal
    import subprocess
    import time

    from collect.writer import PARTIAL_PREFIX

    process = subprocess.Popen([console_script("dynamite-collect"), *arguments, "--root", str(root)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(name.startswith(PARTIAL_PREFIX) for name in visible_entries(root)):
        assert time.monotonic() < deadline and process.poll() is None, "collection never started"
        time.sleep(0.05)
    time.sleep(running_s)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr
