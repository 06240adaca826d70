"""``dynamite-eval``: replay trained runs online and compare them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from offline_dynamite.cli import RayAddress, fail, ray_cluster
from offline_dynamite.distributed import DistributedError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
console = Console()


@app.command()
def main(
    runs: Annotated[list[Path], typer.Argument(help="Train run folders (dynamite-offline train).")],
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes per run.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation episodes (the same for every run).")] = 1000,
    num_envs: Annotated[int, typer.Option(min=1, help="Envs stepped in lockstep.")] = 16,
    env: Annotated[str | None, typer.Option(help="Evaluate in this env instead of the dataset's.")] = None,
    switch_prob: Annotated[float | None, typer.Option(help="Override the env's session switch probability.")] = None,
    compare: Annotated[Path | None, typer.Option(
        help="Write comparison.md, comparison.csv and plots of all runs into this folder.")] = None,
    ray: RayAddress = None,
) -> None:
    """Online roll-outs of each run, the belief updated from the policy's own experience."""
    import torch

    from evaluation.compare import plot_episode_beliefs, write_comparison
    from evaluation.evaluate import evaluate_run
    from offline_dynamite.envs import resolve_env_id

    torch.set_num_threads(1)
    cluster = ray_cluster(ray)
    try:
        env_id = resolve_env_id(env) if env is not None else None
    except ValueError as error:
        fail(str(error))
    table = Table(title=f"{episodes} episodes per run, seed {seed}")
    for column in ("run", "variant", "return", "normalised", "sessions 0 / 1 / 2", "belief acc. / R²", "boundary P / R (±3)"):
        table.add_column(column, justify="left" if column in ("run", "variant") else "right")
    evaluations, traced = [], None
    for run_dir in runs:
        try:
            evaluation, result = evaluate_run(run_dir, episodes=episodes, seed=seed, num_envs=num_envs, env_id=env_id,
                                              switch_prob=switch_prob, ray=cluster)
        except ValueError as error:  # EvaluationError, DatasetError, CheckpointError
            fail(f"{run_dir}: {error}")
        except DistributedError as error:
            fail(f"{run_dir}: {error}", code=1)
        except KeyboardInterrupt:
            fail("interrupted: the runs evaluated so far have their results in <run>/evaluations/", code=130)
        evaluations.append(evaluation)
        if traced is None and result.belief is not None:
            traced = (evaluation, result)
        metrics = evaluation["metrics"]
        sessions = metrics["return_per_session"]
        table.add_row(run_dir.name, evaluation["variant"],
                      f"{metrics['return_mean']:.1f} ± {metrics['return_std']:.1f}",
                      _value(metrics.get("normalised_score_mean")),
                      " / ".join(_value(sessions.get(str(k))) for k in range(3)),
                      _value(metrics.get("belief_latent_accuracy", metrics.get("belief_latent_r2"))),
                      f"{_value(metrics.get('boundary_precision_within_3'))} / {_value(metrics.get('boundary_recall_within_3'))}")
    console.print(table)
    if compare is not None:
        write_comparison(evaluations, compare)
        if traced is not None:
            plot_episode_beliefs(*traced, compare / "belief_trace.png")
        console.print(f"comparison: {compare / 'comparison.md'}", soft_wrap=True)


def _value(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.2f}"


if __name__ == "__main__":
    app()
