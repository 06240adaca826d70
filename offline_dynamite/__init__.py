"""dynamite-rl's core: DLCMDP simulators, datasets, the belief model and policy learning.

Importing the package registers the ``dynamite/`` envs with gymnasium.
"""

from offline_dynamite.envs import ENV_IDS, register_envs, resolve_env_id

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "register_envs", "resolve_env_id", "__version__"]
