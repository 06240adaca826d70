"""``dynamite-offline``: the command line of the core library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import gymnasium as gym
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from offline_dynamite.belief.trainer import BeliefTrainConfig, TrainingDiverged
from offline_dynamite.distributed import DistributedError, RayCluster, import_ray
from offline_dynamite.envs import ENV_IDS, resolve_env_id
from offline_dynamite.policies import OracleUnavailableError, RandomPolicy
from offline_dynamite.rollout import run_episodes
from offline_dynamite.train.config import PolicyTrainConfig

app = typer.Typer(
    help="dynamite-rl's core: DLCMDP simulators and offline DynaMITE-RL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # usage errors in click's plain "Error: ..." form, not a boxed panel
)
console = Console()


# Options that `belief` and `train` share.
Consistency = Annotated[bool, typer.Option(help="DynaMITE's latent consistency term.")]
LatentConditioning = Annotated[bool, typer.Option(help="DynaMITE's latent dynamics prior and conditioning.")]
SessionMasking = Annotated[bool, typer.Option(help="DynaMITE's session-masked reconstruction.")]
LatentDim = Annotated[int, typer.Option(min=1, help="Size of the latent belief (classes of a categorical one).")]
LatentKind = Annotated[str, typer.Option(
    "--latent", help="gaussian (VariBAD, DynaMITE-RL) or categorical (for contexts with a few discrete values).")]
Counterfactual = Annotated[bool, typer.Option(
    help="Each belief also decodes its episode's other sessions, with the rewards the env's reward() gives them "
         "under the belief's own session latent.")]
Seed = Annotated[int, typer.Option(help="Seed of every random choice: data split, batches, initialisation.")]
Threads = Annotated[int, typer.Option(min=1, help="Torch CPU threads (1 is bit-for-bit reproducible).")]
Out = Annotated[Path, typer.Option(help="Folder of run folders.")]
Resume = Annotated[Path | None, typer.Option(help="Continue the run in this folder exactly.")]
# Options that `dynamite-collect` and `dynamite-eval` share.
RayAddress = Annotated[str | None, typer.Option(
    "--ray", metavar="ADDRESS",
    help="Roll out as Ray tasks on: local (Ray on this machine), auto (the cluster this machine joined), "
         "host:port or ray://host:port (the ray extra).")]


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit non-zero (shared by every dynamite-rl command line)."""
    # The message is text, not markup: "[[behaviour]]" or "dynamite-rl[ray]" must print as they are.
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code=code)


def ray_cluster(address: str | None) -> RayCluster | None:
    """The cluster ``--ray`` names, checked before any work is done (one line and exit 2 if unusable)."""
    if address is None:
        return None
    try:
        cluster = RayCluster(address)
        import_ray()
    except DistributedError as error:
        fail(str(error))
    return cluster


@app.callback()
def main() -> None:
    """Keep subcommands explicit (``dynamite-offline rollout``) as more are added."""


@app.command()
def rollout(
    env: Annotated[
        list[str],
        typer.Option(help=f"Env short name or id; repeat for several. Default: all ({', '.join(ENV_IDS)})."),
    ] = [],
    episodes: Annotated[int, typer.Option(min=1, help="Episodes per env and policy.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of env resets and the random policy.")] = 0,
    switch_prob: Annotated[
        float | None, typer.Option(help="Override each env's session switch probability.")
    ] = None,
    num_envs: Annotated[int, typer.Option(min=1, help="Envs stepped in lockstep.")] = 8,
) -> None:
    """Roll out the latent-aware oracle and a random policy; print returns and session counts."""
    try:
        env_ids = [resolve_env_id(name) for name in env] or list(ENV_IDS.values())
    except ValueError as error:
        fail(str(error))
    env_kwargs = {} if switch_prob is None else {"switch_prob": switch_prob}

    table = Table(
        title=f"Seeded roll-outs: {episodes} episodes per row, seed {seed}",
        caption="return: mean ± std over episodes; sessions: mean per episode",
    )
    table.add_column("env")
    table.add_column("policy")
    table.add_column("return", justify="right")
    table.add_column("sessions", justify="right")
    table.add_column("return in sessions 0, 1, 2", justify="right")
    short_names = {env_id: name for name, env_id in ENV_IDS.items()}
    for env_id in env_ids:
        try:
            probe = gym.make(env_id, **env_kwargs)
        except (TypeError, ValueError) as error:
            fail(f"cannot build {env_id}: {error}")
        policies = {"random": RandomPolicy(probe.action_space)}
        try:
            policies["oracle"] = probe.unwrapped.make_oracle()
        except OracleUnavailableError:
            table.add_row(short_names[env_id], "oracle", "not shipped yet", "", "")
        probe.close()
        for name, policy in sorted(policies.items()):
            result = run_episodes(env_id, policy, episodes, seed, num_envs, env_kwargs)
            per_session = result.return_per_session_index()
            table.add_row(
                short_names[env_id],
                name,
                f"{result.returns.mean():.2f} ± {result.returns.std():.2f}",
                f"{result.sessions_per_episode.mean():.2f}",
                ", ".join(f"{value:.1f}" for value in list(per_session.values())[:3]),
            )
    console.print(table)


@app.command()
def belief(
    dataset: Annotated[str | None, typer.Argument(help="main_data.hdf5, its dataset folder, or a dataset id.")] = None,
    variant: Annotated[str, typer.Option(help="dynamite or varibad (every DynaMITE change off).")] = "dynamite",
    consistency: Consistency = True,
    latent_conditioning: LatentConditioning = True,
    session_masking: SessionMasking = True,
    counterfactual_reconstruction: Counterfactual = False,
    latent: LatentKind = "gaussian",
    latent_dim: LatentDim = 5,
    steps: Annotated[int | None, typer.Option(min=1, help="Gradient steps [default: 2000; with --resume, the run's].")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Episodes per batch.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    seed: Seed = 0,
    validation_fraction: Annotated[float, typer.Option(help="Share of episodes held out.")] = 0.1,
    relabel_fraction: Annotated[float, typer.Option(help="Share of each batch relabelled under other latents (BOReL).")] = 0.5,
    threads: Threads = 1,
    out: Out = Path("runs"),
    resume: Resume = None,
) -> None:
    """Fit the belief model alone; write a run folder with metrics, checkpoint and diagnostics."""
    from offline_dynamite.belief import runs

    try:
        if resume is not None:
            run_dir, trainer = runs.resume_belief_run(resume, steps)
        else:
            if dataset is None:
                fail("give a dataset (main_data.hdf5, its folder or a dataset id), or --resume RUN_FOLDER")
            run_dir, trainer = runs.new_belief_run(
                dataset, out, variant, steps=steps, batch_size=batch_size, learning_rate=lr, seed=seed,
                validation_fraction=validation_fraction, relabel_fraction=relabel_fraction, threads=threads,
                ablations={"consistency": consistency, "latent_conditioning": latent_conditioning,
                           "session_masking": session_masking},
                belief_fields={"latent": latent, "latent_dim": latent_dim,
                               "counterfactual_reconstruction": counterfactual_reconstruction})
    except (ValueError, TypeError) as error:  # DatasetError, CheckpointError, bad configuration
        fail(str(error))
    console.print(f"run folder: {run_dir}", soft_wrap=True)
    try:
        diagnostics = runs.fit_with_progress(trainer, run_dir, console)
    except TrainingDiverged as error:
        fail(f"{run_dir}: {error}", code=1)
    table = Table(title="Held-out diagnostics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in diagnostics.items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)


@app.command()
def train(
    dataset: Annotated[str | None, typer.Argument(help="main_data.hdf5, its dataset folder, or a dataset id.")] = None,
    variant: Annotated[str | None, typer.Option(
        help="dynamite, varibad, no-belief (states only) or oracle (true latent) [default: dynamite, or --belief's]")] = None,
    consistency: Consistency = True,
    latent_conditioning: LatentConditioning = True,
    session_masking: SessionMasking = True,
    counterfactual_reconstruction: Counterfactual = False,
    latent: LatentKind = "gaussian",
    latent_dim: LatentDim = 5,
    belief: Annotated[Path | None, typer.Option(help="A trained belief (belief.pt or its run folder) instead of fitting one.")] = None,
    belief_steps: Annotated[int, typer.Option(min=1, help="Gradient steps of the belief fit.")] = BeliefTrainConfig.steps,
    relabel_fraction: Annotated[float, typer.Option(
        help="Share of each belief batch relabelled under other latents (BOReL).")] = BeliefTrainConfig.relabel_fraction,
    algo: Annotated[str | None, typer.Option(
        help="iql or cql (continuous actions), discrete-cql (discrete) [default: iql, or discrete-cql for discrete actions]")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Policy updates [default: 10000; with --resume, the run's].")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Transitions per policy update.")] = PolicyTrainConfig.batch_size,
    policy_relabel_fraction: Annotated[float, typer.Option(
        help="Add this share of episodes again under other episodes' latents, rewards from the env (BOReL).")] = 0.0,
    seed: Seed = 0,
    threads: Threads = 1,
    out: Out = Path("runs"),
    resume: Resume = None,
) -> None:
    """Fit the belief, relabel the dataset into hyper-states, train a conservative offline policy."""
    from offline_dynamite.train import runs

    try:
        if resume is not None:
            run = runs.resume_train_run(resume, steps)
        else:
            if dataset is None:
                fail("give a dataset (main_data.hdf5, its folder or a dataset id), or --resume RUN_FOLDER")
            run = runs.new_train_run(
                dataset, out, variant=variant, belief=belief,
                ablations={"consistency": consistency, "latent_conditioning": latent_conditioning,
                           "session_masking": session_masking},
                belief_fields={"latent": latent, "latent_dim": latent_dim,
                               "counterfactual_reconstruction": counterfactual_reconstruction},
                belief_train_config=BeliefTrainConfig(steps=belief_steps, relabel_fraction=relabel_fraction,
                                                      seed=seed, threads=threads),
                policy_config=PolicyTrainConfig(algo=algo, steps=steps or PolicyTrainConfig.steps, batch_size=batch_size,
                                                seed=seed, relabel_fraction=policy_relabel_fraction, threads=threads))
    except (ValueError, TypeError) as error:  # DatasetError, CheckpointError, bad configuration
        fail(str(error))
    console.print(f"run folder: {run.run_dir}", soft_wrap=True)
    try:
        record = runs.execute(run, console)
    except KeyboardInterrupt:
        fail(f"interrupted; continue with: dynamite-offline train --resume {run.run_dir}", code=130)
    except TrainingDiverged as error:
        fail(f"{run.run_dir}: {error}", code=1)
    table = Table(title=f"{record['variant']} · {record['algo']} · {record['step']} policy updates")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in record["timings"].items():
        table.add_row(stage.removesuffix("_s"), f"{seconds:.1f}")
    console.print(table)


if __name__ == "__main__":
    app()
