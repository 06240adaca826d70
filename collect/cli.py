"""``dynamite-collect``: session-labelled Minari datasets from DLCMDP simulators.

    dynamite-collect --env scratchitch              # the env's default recipe (mixed quality)
    dynamite-collect --recipe dynamite/reacher/expert-v0 --episodes 100 --workers 2
    dynamite-collect --env halfcheetahvel --episodes 100000 --ray auto   # on a Ray cluster
    dynamite-collect list | inspect ID | validate ID | card ID | publish ID
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from collect.recipe import RecipeError, default_recipe_path, load_recipe, recipe_path
from collect.writer import DatasetExistsError, collect, datasets_root
from offline_dynamite.cli import RayAddress, fail, ray_cluster
from offline_dynamite.data import DatasetError, FlatDataset, load_flat
from offline_dynamite.distributed import DistributedError

app = typer.Typer(
    help=__doc__.split("\n\n")[0],
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()

RootOption = Annotated[
    Path | None,
    typer.Option(help="Minari datasets root [default: $MINARI_DATASETS_PATH or ~/.minari/datasets]."),
]


def _use_root(root: Path | None) -> Path:
    resolved = datasets_root(root)
    os.environ["MINARI_DATASETS_PATH"] = str(resolved)  # Minari reads it at call time
    return resolved


def _load(spec: str, root: Path | None) -> FlatDataset:
    try:
        return load_flat(spec, _use_root(root))
    except DatasetError as error:
        fail(str(error))


@app.callback(invoke_without_command=True)
def main(
    context: typer.Context,
    env: Annotated[str | None, typer.Option(help="Collect this env's default (mixed) recipe, e.g. scratchitch.")] = None,
    recipe: Annotated[str | None, typer.Option(help="A recipe file or a catalogue dataset id.")] = None,
    episodes: Annotated[int | None, typer.Option(min=1, help="Override the recipe's episode count.")] = None,
    switch_prob: Annotated[float | None, typer.Option(help="Override the env's session switch probability.")] = None,
    dataset_id: Annotated[str | None, typer.Option(help="Override the dataset id ([namespace/]name-vN).")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the recipe's seed.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes rolling episodes out.")] = 1,
    ray: RayAddress = None,
    root: RootOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset of the same id.")] = False,
) -> None:
    """Collect a dataset from a recipe (or run a dataset subcommand)."""
    if context.invoked_subcommand is not None:
        return
    if (env is None) == (recipe is None):
        fail("give either --env (its default recipe) or --recipe (a file or dataset id)")
    if ray is not None and workers > 1:
        fail("--workers starts processes on this machine; with --ray the cluster's CPUs roll out: drop --workers")
    cluster = ray_cluster(ray)
    try:
        chosen = load_recipe(recipe) if recipe else load_recipe(str(default_recipe_path(env)))
        overrides = {"episodes": episodes, "seed": seed, "dataset_id": dataset_id}
        chosen = chosen.replace(**{key: value for key, value in overrides.items() if value is not None})
        if switch_prob is not None:
            chosen = chosen.replace(env_kwargs={**chosen.env_kwargs, "switch_prob": switch_prob})
    except ValueError as error:  # RecipeError, or an unknown env name
        fail(str(error))
    resolved_root = _use_root(root)

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    horizon = _horizon(chosen)
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(chosen.dataset_id, total=chosen.episodes * horizon, rate="")

        def advance(steps: int) -> None:
            progress.advance(task, steps)
            speed = progress.tasks[task].speed
            progress.update(task, rate=f"{speed:,.0f} steps/s" if speed else "")

        try:
            result = collect(chosen, resolved_root, workers, overwrite, on_progress=advance, ray=cluster)
        except KeyboardInterrupt:
            progress.stop()
            fail("interrupted: no dataset was written", code=130)
        except (RecipeError, DatasetExistsError) as error:
            progress.stop()
            fail(str(error))
        except OSError as error:
            progress.stop()
            fail(f"writing the dataset failed, nothing was kept: {error}", code=1)
        except DistributedError as error:
            progress.stop()
            fail(f"{error}; nothing was kept", code=1)
    console.print(
        f"[green]✓[/] {result.dataset_id}: {result.episodes} episodes, {result.steps:,} steps in "
        f"{result.seconds:.1f} s ({result.steps / result.seconds:,.0f} steps/s); "
        f"ref scores random {result.ref_min_score:.2f}, oracle {result.ref_max_score:.2f}"
    )
    console.print(f"dataset id: {result.dataset_id}")
    console.print(f"data file:  {result.data_file}", soft_wrap=True)


def _horizon(recipe) -> int:
    import gymnasium as gym

    try:
        return int(gym.make(recipe.env, **recipe.env_kwargs).unwrapped.horizon)
    except (TypeError, ValueError) as error:
        fail(f"cannot build {recipe.env} with {recipe.env_kwargs}: {error}")


@app.command("list")
def list_datasets(root: RootOption = None) -> None:
    """List the datasets under the Minari root."""
    import warnings

    import minari

    resolved = _use_root(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = minari.list_local_datasets()
    table = Table(title=f"Datasets in {resolved}")
    for column in ("dataset id", "episodes", "steps", "size", "session labels", "ref scores (random, oracle)"):
        table.add_column(column, justify="left" if column == "dataset id" else "right")
    for dataset_id, metadata in datasets.items():
        refs = (metadata.get("ref_min_score"), metadata.get("ref_max_score"))
        table.add_row(
            dataset_id,
            str(metadata.get("total_episodes")),
            f"{metadata.get('total_steps'):,}",
            f"{metadata.get('dataset_size', 0)} MB",
            "yes" if metadata.get("dynamite", {}).get("session_labels") else "no",
            "" if None in refs else f"{refs[0]:.2f}, {refs[1]:.2f}",
        )
    console.print(table)


@app.command()
def inspect(spec: Annotated[str, typer.Argument(help="Dataset id, folder or main_data.hdf5.")], root: RootOption = None) -> None:
    """Episodes, steps, sessions, session lengths, returns per behaviour and per latent."""
    from collect.inspection import summarise

    flat = _load(spec, root)
    try:
        summary = summarise(flat)
    except ValueError as error:
        fail(f"{spec}: {error}")
    overview = Table(title=str(flat.dataset_id), show_header=False)
    for key, value in summary.overview.items():
        overview.add_row(key, value)
    overview.add_row("session length", ", ".join(f"{k} {v:.1f}" for k, v in summary.session_lengths.items()))
    console.print(overview)
    for title, frame in (("Returns per behaviour policy", summary.per_behaviour), ("Sessions per latent", summary.per_latent)):
        table = Table(title=title)
        for column in frame.columns:
            table.add_column(column, justify="right")
        for row in frame.iter_rows():
            table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
        console.print(table)


@app.command()
def validate(spec: Annotated[str, typer.Argument(help="Dataset id, folder or main_data.hdf5.")], root: RootOption = None) -> None:
    """Check schema, session labels, lengths, finite values and the content hash."""
    from collect.inspection import validate as find_problems

    flat = _load(spec, root)
    problems = find_problems(flat)
    for problem in problems:
        Console(stderr=True, soft_wrap=True).print(f"[red]✗[/] {problem}", highlight=False)
    if problems:
        raise typer.Exit(code=1)
    console.print(f"[green]✓[/] {flat.dataset_id}: {flat.num_episodes} episodes, {flat.num_transitions:,} steps, valid")


@app.command()
def card(
    spec: Annotated[str, typer.Argument(help="Dataset id, folder or main_data.hdf5.")],
    root: RootOption = None,
    output: Annotated[Path | None, typer.Option(help="Where to write [default: next to the recipe].")] = None,
) -> None:
    """Write the dataset card (Markdown) from its metadata and statistics."""
    from collect.inspection import card_markdown, summarise

    flat = _load(spec, root)
    try:
        summary = summarise(flat)
        recipe_file = recipe_path(str(flat.dataset_id))
    except ValueError as error:
        fail(f"{spec}: {error}")
    target = output or recipe_file.with_suffix(".md")
    shown = recipe_file.relative_to(Path.cwd()) if recipe_file.is_relative_to(Path.cwd()) else recipe_file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(card_markdown(flat, summary, shown if recipe_file.exists() else None))
    console.print(f"card: {target}", soft_wrap=True)


@app.command()
def publish(
    dataset_id: Annotated[str, typer.Argument(help="Local dataset id.")],
    root: RootOption = None,
    token: Annotated[str | None, typer.Option(envvar="MINARI_TOKEN", help="Token of the remote (HF token, GCP key file).")] = None,
) -> None:
    """Upload a validated local dataset to the Minari remote ($MINARI_REMOTE; dir:///path works offline)."""
    import warnings

    import minari

    import collect.remote  # noqa: F401  (registers the dir:// remote)
    from collect.inspection import validate as find_problems

    flat = _load(dataset_id, root)
    problems = find_problems(flat)
    if problems:
        fail(f"{dataset_id} is not valid ({problems[0]}); run `dynamite-collect validate {dataset_id}`")
    remote = os.environ.get("MINARI_REMOTE", "hf://farama-minari")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dataset_id in minari.list_remote_datasets():
                fail(f"{dataset_id} is already on {remote}: bump its version (-vN) to publish again")
            minari.upload_dataset(dataset_id, token)
    except (KeyError, ValueError, OSError, ImportError) as error:
        fail(f"publishing to {remote} failed: {error}")
    console.print(f"[green]✓[/] published {dataset_id} to {remote}")


if __name__ == "__main__":
    app()
