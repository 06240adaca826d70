"""Dataset recipes: one TOML file per dataset id in ``datasets/``, everything needed to rebuild it.

``datasets/<env>/<quality>-v0.toml`` describes ``dynamite/<env>/<quality>-v0``::

    dataset_id = "dynamite/gridworld/mixed-v0"
    env = "dynamite/Gridworld-v0"
    episodes = 2000
    seed = 0
    description = "..."

    [env_kwargs]            # gymnasium.make kwargs of the env (horizon, switch_prob, ...)
    switch_prob = 0.05

    [[behaviour]]           # the per-episode behaviour mix (see collect.policies)
    policy = "oracle"       # random, oracle, explorer (latent-blind, adapts from rewards) or checkpoint
    noise = 0.3
    weight = 0.5

Optional keys: ``author``, ``author_email``, ``code_permalink``, ``reference_episodes`` (episodes
of the random and oracle policies that measure ``ref_min_score`` / ``ref_max_score``; 50).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collect.policies import Behaviour
from offline_dynamite.envs import ENV_IDS, resolve_env_id

RECIPES_DIR = Path(__file__).resolve().parents[1] / "datasets"
DEFAULT_QUALITY = "mixed"
QUALITIES = ("random", "medium", "expert", "mixed")

# Minari's id grammar with the version made mandatory: Minari parses "-vN" with int() and, given an
# id without it, fails only after creating the dataset folder, which then breaks `minari list`.
_DATASET_ID = re.compile(r"^(?P<namespace>[-_\w][-_\w/]*[-_\w]+/)?(?P<name>[-_.\w]+)-v(?P<version>\d+)$")


class RecipeError(ValueError):
    """A recipe file or a dataset id that cannot be used."""


def check_dataset_id(dataset_id: str) -> str:
    if not _DATASET_ID.match(dataset_id):
        raise RecipeError(
            f"invalid dataset id {dataset_id!r}: use [namespace/]name-vN, "
            "e.g. dynamite/gridworld/mixed-v0"
        )
    return dataset_id


@dataclass(frozen=True)
class Recipe:
    dataset_id: str
    env: str
    episodes: int
    seed: int
    behaviour: tuple[Behaviour, ...]
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    author: str = "dynamite-rl"
    author_email: str | None = None
    code_permalink: str | None = None
    reference_episodes: int = 50

    def __post_init__(self) -> None:
        check_dataset_id(self.dataset_id)
        if self.episodes < 1:
            raise RecipeError(f"episodes must be at least 1, got {self.episodes}")
        if self.reference_episodes < 1:
            raise RecipeError(f"reference_episodes must be at least 1, got {self.reference_episodes}")
        if not self.behaviour:
            raise RecipeError("a recipe needs at least one [[behaviour]]")
        object.__setattr__(self, "env", resolve_env_id(self.env))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Recipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RecipeError(f"unknown recipe key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in raw
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise RecipeError(f"missing recipe key(s) {', '.join(missing)}")
        behaviours = raw["behaviour"]
        if not isinstance(behaviours, list) or not all(isinstance(b, dict) for b in behaviours):
            raise RecipeError("'behaviour' must be a list of [[behaviour]] tables")
        try:
            return cls(**{**raw, "behaviour": tuple(Behaviour(**b) for b in behaviours)})
        except TypeError as error:  # a bad key inside a [[behaviour]] table
            raise RecipeError(str(error).replace("Behaviour.__init__()", "[[behaviour]]")) from None

    @classmethod
    def from_file(cls, path: Path) -> Recipe:
        try:
            with open(path, "rb") as file:
                raw = tomllib.load(file)
        except FileNotFoundError:
            raise RecipeError(f"recipe {path} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise RecipeError(f"recipe {path} is not valid TOML: {error}") from None
        try:
            return cls.from_dict(raw)
        except ValueError as error:
            raise RecipeError(f"recipe {path}: {error}") from None

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["behaviour"] = [behaviour.to_dict() for behaviour in self.behaviour]
        return raw


def recipe_path(dataset_id: str) -> Path:
    """Where the recipe of ``dynamite/<env>/<quality>-vN`` lives in the catalogue."""
    check_dataset_id(dataset_id)
    return RECIPES_DIR / f"{dataset_id.removeprefix('dynamite/')}.toml"


def default_recipe_path(env: str) -> Path:
    """The catalogue recipe ``dynamite-collect --env <env>`` uses: the env's mixed dataset."""
    env_id = resolve_env_id(env)
    short = next(name for name, known in ENV_IDS.items() if known == env_id)
    return recipe_path(f"dynamite/{short}/{DEFAULT_QUALITY}-v0")


def load_recipe(spec: str) -> Recipe:
    """A recipe from a file path or from a dataset id of the catalogue."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        return Recipe.from_file(path)
    return Recipe.from_file(recipe_path(spec))
