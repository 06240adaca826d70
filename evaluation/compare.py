"""Side-by-side tables and plots of evaluated runs (variants × training seeds)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

#: Columns of the comparison: mean ± std over training seeds of each run's mean over episodes.
METRICS = {
    "normalised_score_mean": "normalised score",
    "return_mean": "return",
    "return_session_0": "return in session 0",
    "return_session_1": "return in session 1",
    "return_session_2": "return in session 2",
    "belief_latent_accuracy": "belief accuracy",
    "belief_latent_r2": "belief R²",
    "boundary_precision_within_3": "boundary precision (±3)",
    "boundary_recall_within_3": "boundary recall (±3)",
}


def evaluation_rows(evaluations: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per evaluated run: its identity and its flat metrics."""
    rows = []
    for evaluation in evaluations:
        metrics = evaluation["metrics"]
        row = {"env": evaluation["env"].split("/")[-1], "variant": evaluation["variant"], "algo": evaluation["algo"],
               "train_seed": evaluation["train_seed"], "switch_prob": evaluation["env_kwargs"].get("switch_prob")}
        for key in METRICS:
            if key.startswith("return_session_"):
                value = metrics["return_per_session"].get(key.removeprefix("return_session_"))
            else:
                value = metrics.get(key)
            row[key] = None if value is None or not np.isfinite(value) else float(value)
        rows.append(row)
    return pl.DataFrame(rows, schema_overrides={key: pl.Float64 for key in METRICS} | {"switch_prob": pl.Float64})


def comparison_table(evaluations: list[dict[str, Any]]) -> pl.DataFrame:
    """Per (env, switch probability, variant, algo): seeds, then mean and std of every metric."""
    rows = evaluation_rows(evaluations)
    keys = ["env", "switch_prob", "variant", "algo"]
    present = [key for key in METRICS if rows[key].is_not_null().any()]
    aggregations = [pl.len().alias("seeds")]
    for key in present:
        aggregations += [pl.col(key).mean().alias(f"{key}"), pl.col(key).std(ddof=0).alias(f"{key}_std")]
    return rows.group_by(keys, maintain_order=True).agg(aggregations).sort(["env", "switch_prob", "variant"])


def markdown(table: pl.DataFrame) -> str:
    """The table as Markdown, each metric as ``mean ± std`` over training seeds (with several)."""
    metrics = [key for key in METRICS if key in table.columns]
    header = ["env", "switch prob.", "variant", "algo", "seeds", *[METRICS[key] for key in metrics]]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in table.iter_rows(named=True):
        cells = [row["env"], _number(row["switch_prob"]), row["variant"], row["algo"], str(row["seeds"])]
        cells += [_spread(row[key], row[f"{key}_std"], row["seeds"]) for key in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _spread(mean: float | None, std: float | None, seeds: int) -> str:
    """``mean ± std`` over seeds; the mean alone for one seed, where a spread means nothing."""
    if mean is None:
        return "–"
    return _number(mean) if seeds == 1 else f"{_number(mean)} ± {_number(std)}"


def _number(value: float | None) -> str:
    if value is None:
        return "default"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def write_comparison(evaluations: list[dict[str, Any]], out: Path) -> pl.DataFrame:
    """``comparison.md``, ``comparison.csv`` and ``return_per_session.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table = comparison_table(evaluations)
    _atomic_write(out / "comparison.md", markdown(table))
    partial = out / ".comparison.csv.partial"
    table.write_csv(partial)
    os.replace(partial, out / "comparison.csv")
    plot_return_per_session(evaluations, out / "return_per_session.png")
    return table


def plot_return_per_session(evaluations: list[dict[str, Any]], path: Path) -> None:
    """Return in session k per variant (mean ± std over training seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_variant: dict[str, list[dict[str, float]]] = {}
    for evaluation in evaluations:
        by_variant.setdefault(evaluation["variant"], []).append(evaluation["metrics"]["return_per_session"])
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for variant, per_seed in sorted(by_variant.items()):
        sessions = sorted({int(k) for seed in per_seed for k in seed})[:6]
        values = np.array([[seed.get(str(k), np.nan) for k in sessions] for seed in per_seed])
        axes.errorbar(sessions, np.nanmean(values, 0), yerr=np.nanstd(values, 0), marker="o", capsize=3, label=variant)
    axes.set_xlabel("session index")
    axes.set_ylabel("return in the session")
    axes.legend(fontsize="small")
    figure.tight_layout()
    _save(figure, path)


def plot_belief_trace(time_steps: np.ndarray, latents: np.ndarray, belief: np.ndarray, session_starts: np.ndarray,
                      boundary_probability: np.ndarray | None, path: Path, title: str) -> None:
    """One episode: the true latent (top), the belief (bottom: its mean, or its class
    probabilities), true switches as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True)
    top.plot(time_steps, latents, drawstyle="steps-post")
    top.set_ylabel("true latent")
    bottom.plot(time_steps, belief)
    bottom.set_ylabel("belief (μ or P(class))")
    if boundary_probability is not None:
        twin = bottom.twinx()
        twin.fill_between(time_steps, boundary_probability, step="post", alpha=0.2, color="grey")
        twin.set_ylim(0, 1)
        twin.set_ylabel("P(new session)")
    for axes in (top, bottom):
        for step in time_steps[session_starts]:
            axes.axvline(step, color="black", linestyle=":", linewidth=1)
    bottom.set_xlabel("step (dotted: true session switches)")
    top.set_title(title, fontsize="small")
    figure.tight_layout()
    _save(figure, path)


def plot_episode_beliefs(evaluation: dict[str, Any], episodes: Any, path: Path) -> None:
    """The belief trace of the evaluation episode with the most session switches."""
    episode = int(np.argmax(episodes.rollouts.sessions_per_episode))
    switches = episodes.session_starts[episode, :-1].copy()
    switches[0] = False  # the reset opens session 0; only switches are marked
    probability = None if episodes.boundary_probability is None else episodes.boundary_probability[episode]
    plot_belief_trace(np.arange(episodes.belief.shape[1]), episodes.rollouts.latents[episode, :-1], episodes.belief[episode],
                      switches, probability, path,
                      f"{evaluation['variant']}: episode {episode} of {Path(evaluation['run']).name}")


def plot_switch_sweep(returns: dict[tuple[str, float], list[float]], path: Path) -> None:
    """Box plots of episode returns per switch probability, one box per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({variant for variant, _ in returns})
    probabilities = sorted({p for _, p in returns})
    figure, axes = plt.subplots(figsize=(2.0 + 1.8 * len(probabilities), 3.8))
    width = 0.8 / len(variants)
    for index, variant in enumerate(variants):
        positions = [p_index + (index - (len(variants) - 1) / 2) * width for p_index in range(len(probabilities))]
        boxes = axes.boxplot([returns.get((variant, p), []) for p in probabilities], positions=positions,
                             widths=width * 0.9, patch_artist=True)
        for box in boxes["boxes"]:
            box.set_facecolor(f"C{index}")
        axes.plot([], [], color=f"C{index}", linewidth=8, label=variant)
    axes.set_xticks(range(len(probabilities)), [f"{p:g}" for p in probabilities])
    axes.set_xlabel("session switch probability per step")
    axes.set_ylabel("episode return")
    axes.legend(fontsize="small")
    figure.tight_layout()
    _save(figure, path)


def _save(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    partial = path.with_name(f".{path.name}.partial.png")
    figure.savefig(partial, dpi=120)
    plt.close(figure)
    os.replace(partial, path)


def _atomic_write(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)
