"""``dynamite-experiment``: one env, end to end: collect (or reuse) its dataset, train every
variant over several seeds, evaluate them online, write the table and plots.

    dynamite-experiment --env gridworld                      # the README's main job
    dynamite-experiment --env halfcheetahvel --variants dynamite,varibad --switch-probs 0,0.015,0.05,0.1

Results go to ``<results>/<env>/`` (``comparison.md``/``.csv``, ``return_per_session.png``,
``belief_trace.png``, with ``--switch-probs`` also ``switch_sweep.png`` and ``switch_sweep.md``,
and ``experiment.json``: the exact command, budgets, seeds and versions); run folders go to
``<runs>/<env>/``. Budgets default to what fits a 2-core machine; the flags scale them up.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from offline_dynamite.cli import LatentDim, LatentKind, fail

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
console = Console()

ALL_VARIANTS = ("dynamite", "varibad", "no-belief", "oracle", "dynamite-no-consistency",
                "dynamite-no-latent-conditioning", "dynamite-no-session-masking")


@dataclass(frozen=True)
class ExperimentConfig:
    """The flags of ``dynamite-experiment`` (budgets sized for a 2-core machine by default)."""

    env: str
    variants: tuple[str, ...] = ALL_VARIANTS
    seeds: int = 2
    dataset_episodes: int = 400
    belief_steps: int = 500
    policy_steps: int = 3000
    policy_relabel_fraction: float = 0.0
    #: The belief variants' latent ("gaussian" or "categorical") and its size (classes).
    latent: str = "gaussian"
    latent_dim: int = 5
    #: The dynamite variants with session masking decode their episode's other sessions too
    #: (BeliefConfig.counterfactual_reconstruction).
    counterfactual_reconstruction: bool = False
    eval_episodes: int = 48
    eval_seed: int = 1000
    switch_probs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        unknown = [variant for variant in self.variants if variant not in ALL_VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant {unknown[0]!r}: choose from {', '.join(ALL_VARIANTS)}")
        if min(self.seeds, self.dataset_episodes, self.belief_steps, self.policy_steps, self.eval_episodes) < 1:
            raise ValueError("seeds, episodes, steps and evaluation episodes must be positive")
        if not 0.0 <= self.policy_relabel_fraction <= 1.0:
            raise ValueError(f"the policy relabel fraction must be in [0, 1], got {self.policy_relabel_fraction}")
        if any(not 0.0 <= p <= 1.0 for p in self.switch_probs):
            raise ValueError("switch probabilities must be in [0, 1]")
        from offline_dynamite.belief.config import BeliefConfig

        BeliefConfig(latent=self.latent, latent_dim=self.latent_dim)  # refuses an unknown or too small latent


def variant_arguments(name: str) -> tuple[str, dict[str, bool]]:
    """A variant name → (base variant, ablation switches)."""
    ablations = {"consistency": True, "latent_conditioning": True, "session_masking": True}
    if name.startswith("dynamite-no-"):
        ablations[name.removeprefix("dynamite-no-").replace("-", "_")] = False
        return "dynamite", ablations
    return name, ablations


def dataset_for(config: ExperimentConfig, root: Path) -> Path:
    """The env's default recipe with ``dataset_episodes`` episodes: reused if already collected."""
    from collect.recipe import default_recipe_path, load_recipe
    from collect.writer import collect, dataset_dir

    recipe = load_recipe(str(default_recipe_path(config.env)))
    if config.dataset_episodes != recipe.episodes:
        namespace, name = recipe.dataset_id.rsplit("/", 1)
        stem, version = name.rsplit("-v", 1)
        recipe = recipe.replace(episodes=config.dataset_episodes,
                                dataset_id=f"{namespace}/{stem}-{config.dataset_episodes}ep-v{version}")
    data_file = dataset_dir(root, recipe.dataset_id) / "data" / "main_data.hdf5"
    if data_file.is_file():
        console.print(f"dataset {recipe.dataset_id}: reusing {data_file}", soft_wrap=True)
        return data_file
    console.print(f"dataset {recipe.dataset_id}: collecting {recipe.episodes} episodes", soft_wrap=True)
    return collect(recipe, root, workers=min(2, os.cpu_count() or 1)).data_file


def train_all(config: ExperimentConfig, data_file: Path, runs_dir: Path) -> list[Path]:
    from offline_dynamite.belief.trainer import BeliefTrainConfig
    from offline_dynamite.train import runs
    from offline_dynamite.train.config import PolicyTrainConfig

    run_dirs = []
    for seed in range(config.seeds):
        for name in config.variants:
            variant, ablations = variant_arguments(name)
            belief_fields = {"latent": config.latent, "latent_dim": config.latent_dim}
            if config.counterfactual_reconstruction and variant == "dynamite" and ablations["session_masking"]:
                belief_fields["counterfactual_reconstruction"] = True
            run = runs.new_train_run(str(data_file), runs_dir, variant=variant, ablations=ablations,
                                     belief_fields=belief_fields, belief=None,
                                     belief_train_config=BeliefTrainConfig(steps=config.belief_steps, seed=seed),
                                     policy_config=PolicyTrainConfig(steps=config.policy_steps, seed=seed,
                                                                    relabel_fraction=config.policy_relabel_fraction))
            console.print(f"[bold]{name}[/], seed {seed}: {run.run_dir}", soft_wrap=True)
            runs.execute(run, console)
            run_dirs.append(run.run_dir)
    return run_dirs


def evaluate_all(config: ExperimentConfig, run_dirs: list[Path], results: Path) -> list[dict[str, Any]]:
    from evaluation.compare import plot_episode_beliefs, write_comparison
    from evaluation.evaluate import evaluate_run

    evaluations, traced = [], None
    for run_dir in run_dirs:
        evaluation, episodes = evaluate_run(run_dir, episodes=config.eval_episodes, seed=config.eval_seed, num_envs=16)
        evaluations.append(evaluation)
        if traced is None and evaluation["variant"] == "dynamite":
            traced = (evaluation, episodes)
    write_comparison(evaluations, results)
    if traced is not None:
        plot_episode_beliefs(*traced, results / "belief_trace.png")
    console.print((results / "comparison.md").read_text(), soft_wrap=True)
    return evaluations


def sweep(config: ExperimentConfig, run_dirs: list[Path], results: Path) -> None:
    """Evaluate every run at each switch probability; box plots of returns per variant."""
    from evaluation.compare import comparison_table, markdown, plot_switch_sweep
    from evaluation.evaluate import evaluate_run

    evaluations, returns = [], {}
    for switch_prob in config.switch_probs:
        for run_dir in run_dirs:
            evaluation, _ = evaluate_run(run_dir, episodes=config.eval_episodes, seed=config.eval_seed,
                                         num_envs=16, switch_prob=switch_prob)
            evaluations.append(evaluation)
            returns.setdefault((evaluation["variant"], switch_prob), []).extend(evaluation["returns"])
    (results / "switch_sweep.md").write_text(markdown(comparison_table(evaluations)))
    plot_switch_sweep(returns, results / "switch_sweep.png")


@app.command()
def main(
    env: Annotated[str, typer.Option(help="Env short name or id, e.g. gridworld.")],
    variants: Annotated[str, typer.Option(help="Comma-separated variants [default: all seven].")] = ",".join(ALL_VARIANTS),
    seeds: Annotated[int, typer.Option(min=1, help="Training seeds per variant (0 … seeds - 1).")] = ExperimentConfig.seeds,
    dataset_episodes: Annotated[int, typer.Option(min=1, help="Episodes of the env's mixed recipe.")] = ExperimentConfig.dataset_episodes,
    belief_steps: Annotated[int, typer.Option(min=1, help="Belief gradient steps per run.")] = ExperimentConfig.belief_steps,
    policy_steps: Annotated[int, typer.Option(min=1, help="Policy updates per run.")] = ExperimentConfig.policy_steps,
    policy_relabel_fraction: Annotated[float, typer.Option(
        help="Episodes added to the policy's data under other latents (BOReL; see dynamite-offline train).")] = 0.0,
    latent: LatentKind = ExperimentConfig.latent,
    latent_dim: LatentDim = ExperimentConfig.latent_dim,
    counterfactual_reconstruction: Annotated[bool, typer.Option(
        help="The dynamite variants with session masking also decode their episode's other sessions "
             "(see dynamite-offline train).")] = False,
    eval_episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes per run.")] = ExperimentConfig.eval_episodes,
    eval_seed: Annotated[int, typer.Option(help="Seed of the evaluation episodes.")] = ExperimentConfig.eval_seed,
    switch_probs: Annotated[str, typer.Option(help="Comma-separated switch probabilities to sweep (e.g. 0,0.02,0.05).")] = "",
    root: Annotated[Path | None, typer.Option(help="Minari root [default: $MINARI_DATASETS_PATH or ~/.minari/datasets].")] = None,
    runs: Annotated[Path, typer.Option(help="Folder of the run folders.")] = Path("runs/experiments"),
    results: Annotated[Path, typer.Option(help="Folder of the tables and plots.")] = Path("docs/results"),
) -> None:
    """Collect, train every variant over seeds, evaluate online, and write the comparison."""
    import torch

    from collect.writer import datasets_root
    from offline_dynamite.envs import ENV_IDS, resolve_env_id

    torch.set_num_threads(1)
    try:
        env_id = resolve_env_id(env)
        config = ExperimentConfig(
            env=env_id, variants=tuple(v.strip() for v in variants.split(",") if v.strip()), seeds=seeds,
            dataset_episodes=dataset_episodes, belief_steps=belief_steps, policy_steps=policy_steps,
            policy_relabel_fraction=policy_relabel_fraction, latent=latent, latent_dim=latent_dim,
            counterfactual_reconstruction=counterfactual_reconstruction,
            eval_episodes=eval_episodes, eval_seed=eval_seed,
            switch_probs=tuple(float(p) for p in switch_probs.split(",") if p.strip()))
    except ValueError as error:
        fail(str(error))
    short = next(name for name, known in ENV_IDS.items() if known == env_id)
    started = time.perf_counter()
    try:
        data_file = dataset_for(config, datasets_root(root))
        run_dirs = train_all(config, data_file, runs / short)
        out = results / short
        evaluate_all(config, run_dirs, out)
        if config.switch_probs:
            sweep(config, run_dirs, out)
    except KeyboardInterrupt:
        fail("interrupted: finished runs are kept; resume unfinished ones with dynamite-offline train --resume", code=130)
    except ValueError as error:
        fail(str(error))
    from offline_dynamite.run_folder import versions

    record = {"command": shlex.join(["dynamite-experiment", *sys.argv[1:]]), "config": asdict(config),
              "dataset": str(data_file), "runs": [str(run_dir) for run_dir in run_dirs],
              "minutes": round((time.perf_counter() - started) / 60, 1), "versions": versions("d3rlpy")}
    (out / "experiment.json").write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"results: {out} ({record['minutes']} min)", soft_wrap=True)


if __name__ == "__main__":
    app()
