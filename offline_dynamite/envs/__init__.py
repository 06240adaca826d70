"""DLCMDP simulators, registered under the ``dynamite/`` namespace.

Entry points are strings so that ``gymnasium.make`` (and Minari's ``recover_environment``) can
rebuild an env from its spec in a fresh process. Each env owns its horizon (``truncated`` at the
last step), so no ``TimeLimit`` is registered.
"""

from __future__ import annotations

import gymnasium as gym

#: Short names used by the CLIs, mapped to the registered ids.
ENV_IDS = {
    "gridworld": "dynamite/Gridworld-v0",
    "reacher": "dynamite/Reacher-v0",
    "halfcheetahvel": "dynamite/HalfCheetahVel-v0",
    "halfcheetahwind": "dynamite/HalfCheetahWind-v0",
    "scratchitch": "dynamite/ScratchItch-v0",
}

_ENTRY_POINTS = {
    "dynamite/Gridworld-v0": "offline_dynamite.envs.gridworld:GridworldEnv",
    "dynamite/Reacher-v0": "offline_dynamite.envs.reacher:ReacherEnv",
    "dynamite/HalfCheetahVel-v0": "offline_dynamite.envs.half_cheetah:HalfCheetahVelEnv",
    "dynamite/HalfCheetahWind-v0": "offline_dynamite.envs.half_cheetah:HalfCheetahWindEnv",
    "dynamite/ScratchItch-v0": "offline_dynamite.envs.scratch_itch:ScratchItchEnv",
}


def register_envs() -> None:
    """Register every DLCMDP env with gymnasium (idempotent)."""
    for env_id, entry_point in _ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=False)


def resolve_env_id(name: str) -> str:
    """Map a short name (``gridworld``) or a full id (``dynamite/Gridworld-v0``) to the id."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in ENV_IDS:
        return ENV_IDS[key]
    if name in _ENTRY_POINTS:
        return name
    known = ", ".join(ENV_IDS)
    raise ValueError(f"unknown env {name!r}: choose one of {known} (or a dynamite/...-v0 id)")


register_envs()
