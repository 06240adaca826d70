"""The conservative offline RL algorithms of d3rlpy that train policies on hyper-states."""

from __future__ import annotations

import contextlib
import io
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

#: Algorithm name → whether it is for discrete actions.
ALGOS = {"iql": False, "cql": False, "discrete-cql": True}


def import_d3rlpy() -> ModuleType:
    """d3rlpy, imported without the notice that its (unused) ``gym`` dependency prints to stderr
    on import: our command lines promise one line on stderr when something is wrong."""
    with contextlib.redirect_stderr(io.StringIO()):
        import d3rlpy
    return d3rlpy


def choose_algo(name: str | None, action_space: gym.spaces.Space) -> str:
    """The algorithm to train: ``name``, checked against the action space, or the default for it."""
    discrete = isinstance(action_space, gym.spaces.Discrete)
    if not discrete and not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
        raise ValueError(f"policies need Discrete or flat Box actions, the dataset has {action_space}")
    if name is None:
        return "discrete-cql" if discrete else "iql"
    if name not in ALGOS:
        raise ValueError(f"unknown algorithm {name!r}: choose one of {', '.join(ALGOS)}")
    if ALGOS[name] != discrete:
        fits = [algo for algo, for_discrete in ALGOS.items() if for_discrete == discrete]
        raise ValueError(f"{name} is for {'discrete' if ALGOS[name] else 'continuous'} actions and the dataset has "
                         f"{action_space}: use {' or '.join(fits)}")
    return name


def action_size(action_space: gym.spaces.Space) -> int:
    return int(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else int(action_space.shape[0])


def build_algo(name: str, action_space: gym.spaces.Space, observation_mean: np.ndarray, observation_std: np.ndarray,
               batch_size: int) -> Any:
    """A d3rlpy algorithm with its networks built, standardising the hyper-states it sees with
    the given statistics and (continuous actions) mapping the action bounds to [-1, 1].

    Hyperparameters are d3rlpy's defaults except where those are tuned for Atari frames
    (discrete CQL's learning rate and its target network synced every 8000 updates, far more than
    these small datasets need).
    """
    d3rlpy = import_d3rlpy()
    scaler = d3rlpy.preprocessing.StandardObservationScaler(mean=observation_mean.astype(np.float32),
                                                           std=observation_std.astype(np.float32))
    if name == "discrete-cql":
        config = d3rlpy.algos.DiscreteCQLConfig(batch_size=batch_size, observation_scaler=scaler, learning_rate=3e-4,
                                                target_update_interval=200)
    else:
        actions = d3rlpy.preprocessing.MinMaxActionScaler(minimum=action_space.low.astype(np.float32),
                                                          maximum=action_space.high.astype(np.float32))
        config_class = {"iql": d3rlpy.algos.IQLConfig, "cql": d3rlpy.algos.CQLConfig}[name]
        config = config_class(batch_size=batch_size, observation_scaler=scaler, action_scaler=actions)
    algo = config.create(device="cpu:0")
    algo.create_impl((len(observation_mean),), action_size(action_space))
    return algo
