"""What is in a dataset: statistics (polars), validation, and the dataset card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import polars as pl
from minari.serialization import deserialize_space

from offline_dynamite.data import SESSION_KEYS, FlatDataset

LATENT_BINS = 4  # continuous latents are summarised in quantile bins of their first coordinate


@dataclass(frozen=True)
class Summary:
    overview: dict[str, str]
    session_lengths: dict[str, float]
    per_behaviour: pl.DataFrame
    per_latent: pl.DataFrame


def sessions_frame(flat: FlatDataset) -> pl.DataFrame:
    """One row per (episode, session): length, return, latent (first coordinate), behaviour."""
    rows = flat.observation_rows()  # the info row of each transition's starting observation
    frame = pl.DataFrame(
        {
            "episode": flat.episode_index(),
            "session": flat.infos["session_id"][rows],
            "reward": flat.rewards.astype(np.float64),
            "latent": flat.infos["latent"][rows, 0].astype(np.float64),
            "behaviour": flat.infos["behaviour_id"][rows] if "behaviour_id" in flat.infos else np.zeros(len(rows), np.int64),
        }
    )
    return frame.group_by("episode", "session", maintain_order=True).agg(
        pl.len().alias("length"),
        pl.col("reward").sum().alias("return"),
        pl.col("latent").first(),
        pl.col("behaviour").first(),
    )


def summarise(flat: FlatDataset) -> Summary:
    if not flat.has_session_labels:
        raise ValueError("the dataset has no session labels (infos latent, session_id, session_start)")
    sessions = sessions_frame(flat)
    episodes = sessions.group_by("episode", maintain_order=True).agg(
        pl.col("return").sum(), pl.len().alias("sessions"), pl.col("behaviour").first()
    )
    names = flat.metadata.get("dynamite", {}).get("behaviour_ids", {})
    per_behaviour = (
        episodes.group_by("behaviour")
        .agg(
            pl.len().alias("episodes"),
            pl.col("return").mean().alias("return_mean"),
            pl.col("return").std().alias("return_std"),
        )
        .sort("behaviour")
        .with_columns(pl.col("behaviour").cast(pl.String).replace(names).alias("policy"))
        .select("policy", "episodes", "return_mean", "return_std")
    )
    latents = sessions["latent"]
    discrete = latents.n_unique() <= 8
    if discrete:
        binned = sessions.with_columns(pl.col("latent").cast(pl.String).alias("latent_bin"))
    else:
        edges = np.quantile(latents.to_numpy(), np.linspace(0, 1, LATENT_BINS + 1))
        labels = [f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(edges[:-1], edges[1:])]
        bins = np.clip(np.searchsorted(edges, latents.to_numpy(), side="right") - 1, 0, LATENT_BINS - 1)
        binned = sessions.with_columns(pl.Series("latent_bin", [labels[b] for b in bins]))
    per_latent = (
        binned.group_by("latent_bin")
        .agg(
            pl.len().alias("sessions"),
            pl.col("length").mean().alias("length_mean"),
            (pl.col("return") / pl.col("length")).mean().alias("reward_per_step"),
        )
        .sort("latent_bin")
        .rename({"latent_bin": "latent (first coordinate)"})
    )
    lengths = sessions["length"].to_numpy()
    per_episode = episodes["sessions"].to_numpy()
    overview = {
        "dataset": str(flat.dataset_id),
        "env": str(flat.metadata.get("env_spec", "")) and _env_id(flat),
        "episodes": str(flat.num_episodes),
        "steps": str(flat.num_transitions),
        "sessions / episode": f"{per_episode.mean():.2f} (min {per_episode.min()}, max {per_episode.max()})",
        "return / episode": f"{episodes['return'].mean():.2f} ± {episodes['return'].std():.2f}",
        "ref scores (random, oracle)": f"{flat.metadata.get('ref_min_score', float('nan')):.2f}, "
        f"{flat.metadata.get('ref_max_score', float('nan')):.2f}",
    }
    session_lengths = {
        "mean": float(lengths.mean()),
        **{f"p{q}": float(np.percentile(lengths, q)) for q in (10, 50, 90)},
        "min": float(lengths.min()),
        "max": float(lengths.max()),
    }
    return Summary(overview, session_lengths, per_behaviour, per_latent)


def _env_id(flat: FlatDataset) -> str:
    import json

    return json.loads(flat.metadata["env_spec"])["id"]


# ---------------------------------------------------------------------------- validation
def validate(flat: FlatDataset) -> list[str]:
    """Everything wrong with the dataset, one line each; empty when it is sound."""
    problems: list[str] = []
    metadata = flat.metadata
    for key in ("dataset_id", "total_episodes", "total_steps", "observation_space", "action_space", "env_spec"):
        if key not in metadata:
            problems.append(f"metadata.json lacks {key!r}")
    if metadata.get("total_episodes") not in (None, flat.num_episodes):
        problems.append(f"metadata says {metadata['total_episodes']} episodes, the file holds {flat.num_episodes}")
    if metadata.get("total_steps") not in (None, flat.num_transitions):
        problems.append(f"metadata says {metadata['total_steps']} steps, the file holds {flat.num_transitions}")

    for field, values in flat.fields().items():
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            problems.append(f"{field} has {int((~np.isfinite(values)).sum())} non-finite values")
    if "action_space" in metadata:
        space = deserialize_space(metadata["action_space"])
        if isinstance(space, gym.spaces.Box) and np.isfinite(flat.actions).all():
            outside = ~((flat.actions >= space.low) & (flat.actions <= space.high)).all(axis=-1)
            if outside.any():
                problems.append(f"{int(outside.sum())} actions lie outside the action space")
        if isinstance(space, gym.spaces.Discrete) and not np.isin(flat.actions, np.arange(space.start, space.start + space.n)).all():
            problems.append("actions outside the discrete action space")

    ends = flat.episode_starts[1:] - 1
    done = flat.terminations | flat.truncations
    if not done[ends].all():
        problems.append(f"{int((~done[ends]).sum())} episodes end without termination or truncation")
    if done.sum() != flat.num_episodes:
        problems.append("terminations/truncations occur before the end of an episode")
    problems += _validate_sessions(flat)

    recorded = metadata.get("dynamite", {}).get("content_sha256")
    if recorded is not None and recorded != flat.content_hasher().hexdigest():
        problems.append("content hash differs from metadata's content_sha256: the arrays were changed")
    return problems


def _validate_sessions(flat: FlatDataset) -> list[str]:
    missing = [key for key in SESSION_KEYS if key not in flat.infos]
    if missing:
        return [f"no session labels: infos lack {', '.join(missing)}"]
    problems = []
    expected = {"latent": np.float32, "session_id": np.int64, "session_start": np.bool_}
    for key, dtype in expected.items():
        if flat.infos[key].dtype != dtype:
            problems.append(f"infos/{key} is {flat.infos[key].dtype}, expected {np.dtype(dtype)}")
    session_id = flat.infos["session_id"].astype(np.int64)
    start = flat.infos["session_start"].astype(bool)
    latent = flat.infos["latent"]
    first_rows = flat.episode_starts[:-1] + np.arange(flat.num_episodes)
    step = np.diff(session_id)
    within = np.ones(len(session_id), dtype=bool)
    within[first_rows] = False  # row r continues the episode of row r - 1
    if (session_id[first_rows] != 0).any() or not start[first_rows].all():
        problems.append("an episode does not begin with session 0 and session_start")
    if ((step[within[1:]] != 0) & (step[within[1:]] != 1)).any():
        problems.append("session_id must rise by 0 or 1 from one step to the next")
    if (start[1:][within[1:]] != (step[within[1:]] == 1)).any():
        problems.append("session_start does not mark exactly the steps where session_id rises")
    same_session = within[1:] & (step == 0)
    if (latent[1:][same_session] != latent[:-1][same_session]).any():
        problems.append("the latent changes inside a session")
    return problems


# ---------------------------------------------------------------------------- card
def card_markdown(flat: FlatDataset, summary: Summary, recipe_file: Path | None) -> str:
    metadata = flat.metadata
    dynamite = metadata.get("dynamite", {})
    recipe = dynamite.get("recipe", {})
    lines = [f"# {flat.dataset_id}", "", metadata.get("description", "").strip(), ""]
    lines += ["## Reproduce", "", "```bash"]
    lines += [f"dynamite-collect --recipe {recipe_file}" if recipe_file else f"dynamite-collect --recipe {flat.dataset_id}"]
    lines += ["```", "", "## Contents", "", "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in summary.overview.items()]
    lines += [f"| env kwargs | `{recipe.get('env_kwargs', {})}` |", f"| seed | {recipe.get('seed')} |"]
    lines += [f"| content sha256 | `{dynamite.get('content_sha256', '')}` |", ""]
    lines += ["Session lengths (steps): " + ", ".join(f"{k} {v:.1f}" for k, v in summary.session_lengths.items()), ""]
    lines += ["## Behaviour mix", "", "| policy | weight | episodes | return (mean ± std) |", "| --- | ---: | ---: | ---: |"]
    weights = {i: b.get("weight", 1.0) for i, b in enumerate(recipe.get("behaviour", []))}
    for index, row in enumerate(summary.per_behaviour.iter_rows(named=True)):
        lines.append(f"| {row['policy']} | {weights.get(index, '')} | {row['episodes']} | "
                     f"{row['return_mean']:.2f} ± {(row['return_std'] or 0.0):.2f} |")
    lines += ["", "## Per latent", "", "| latent (first coordinate) | sessions | mean length | reward per step |",
              "| --- | ---: | ---: | ---: |"]
    for row in summary.per_latent.iter_rows():
        lines.append(f"| {row[0]} | {row[1]} | {row[2]:.1f} | {row[3]:.3f} |")
    versions = dynamite.get("versions", {})
    lines += ["", "## Format", "",
              "Minari HDF5. Per step, `infos` holds `latent`, `session_id`, `session_start` and `behaviour_id` "
              "(T + 1 rows per episode, like observations). Load it with `minari.load_dataset` "
              "(`import offline_dynamite` first, or let `recover_environment()` import it).", "",
              "Made with " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    return "\n".join(lines) + "\n"
