"""The belief model's configuration: one dataclass, every DynaMITE-RL change behind a switch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from offline_dynamite.belief.latents import LATENT_KINDS


@dataclass(frozen=True)
class BeliefConfig:
    """Architecture and objective of the belief model.

    With ``latent_conditioning``, ``session_masking``, ``consistency`` and ``termination`` all
    off the model is VariBAD's VAE: KL of each posterior to the previous one (N(0, I) at t = 0)
    and reconstruction of the whole trajectory from every belief.
    """

    #: "gaussian" (VariBAD, DynaMITE-RL): N(μ, σ²) over ``latent_dim`` dimensions. "categorical":
    #: a distribution over ``latent_dim`` classes, for contexts that take a few discrete values;
    #: its reconstruction is exact (no sampling) and the policy sees the class probabilities.
    latent: str = "gaussian"
    latent_dim: int = 5
    hidden_size: int = 128
    state_embed_size: int = 32
    action_embed_size: int = 16
    reward_embed_size: int = 16
    decoder_hidden: tuple[int, ...] = (32, 32)
    #: The reward decoder sees (s, a, s') instead of s' alone. Off by default, as in VariBAD: in
    #: offline data the action often gives the reward away (an oracle *stays* on the paying goal),
    #: and a decoder that can read it has no reason to use the latent.
    decoder_sees_action: bool = False
    kl_weight: float = 0.1

    #: A latent dynamics model p(m_i | m_{i-1}) gives the prior at a session's first step, from
    #: the previous session's last belief, and the belief head is conditioned on that prior.
    latent_conditioning: bool = True
    #: The belief at t reconstructs only the transitions of its own session (Σ l_i² decodes).
    session_masking: bool = True
    #: With session masking, the belief at t also decodes the transitions of the episode's other
    #: sessions, with the reward the env's reward function gives them under t's own session
    #: latent (as BOReL relabels rewards). The agent's whole episode then tests the belief:
    #: where a session's own transitions never reach the cell that tells the contexts apart,
    #: another session's may. Needs the dataset's latents and the env's reward().
    counterfactual_reconstruction: bool = False
    #: Categorical latents only: add this weight × KL(the batch's mean class probabilities ‖
    #: uniform). Without it one class can take every belief, and the other classes' decoders then
    #: get no gradient at all (a collapse seen on the gridworld in one seed of two).
    class_balance_weight: float = 1.0
    #: Penalise a rise of δ_t = KL(q_t ‖ q_end-of-session) within a session.
    consistency: bool = True
    consistency_weight: float = 0.5
    #: Train a session-termination head on the dataset's labels (BCE).
    termination: bool = True
    termination_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or self.hidden_size < 1:
            raise ValueError("latent_dim and hidden_size must be positive")
        if self.latent not in LATENT_KINDS:
            raise ValueError(f"unknown latent kind {self.latent!r}: choose one of {', '.join(LATENT_KINDS)}")
        if self.latent == "categorical" and self.latent_dim < 2:
            raise ValueError("a categorical latent needs at least 2 classes (latent_dim)")
        if self.counterfactual_reconstruction and not self.session_masking:
            raise ValueError("the counterfactual reconstruction extends session masking: it needs session_masking")
        if self.latent_conditioning and not self.termination:
            raise ValueError(
                "latent_conditioning needs the termination head: at evaluation time session "
                "boundaries come only from the model"
            )
        for name in ("kl_weight", "class_balance_weight", "consistency_weight", "termination_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative")

    @property
    def needs_session_labels(self) -> tuple[str, ...]:
        """The switches that are on and need the dataset's session labels to train."""
        return tuple(
            name
            for name in ("latent_conditioning", "session_masking", "counterfactual_reconstruction", "consistency",
                         "termination")
            if getattr(self, name)
        )

    @classmethod
    def varibad(cls, **changes: Any) -> BeliefConfig:
        """VariBAD's VAE: every DynaMITE-RL switch off."""
        off = dict(latent_conditioning=False, session_masking=False, consistency=False, termination=False)
        return cls(**{**off, **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BeliefConfig:
        raw = dict(raw)
        raw["decoder_hidden"] = tuple(raw.get("decoder_hidden", cls.decoder_hidden))
        return cls(**raw)


#: Belief variants: DynaMITE-RL and the VariBAD baseline; ablations switch single changes off.
BELIEF_VARIANTS = ("dynamite", "varibad")


def belief_config_for(variant: str, *, consistency: bool = True, latent_conditioning: bool = True,
                      session_masking: bool = True, **changes: Any) -> BeliefConfig:
    """The configuration of a named variant, with DynaMITE's changes optionally ablated."""
    if variant == "varibad":
        if not (consistency and latent_conditioning and session_masking):
            raise ValueError("the ablation flags apply to the dynamite variant; varibad has every change off already")
        return BeliefConfig.varibad(**changes)
    if variant != "dynamite":
        raise ValueError(f"unknown belief variant {variant!r}: choose one of {', '.join(BELIEF_VARIANTS)}")
    return BeliefConfig(consistency=consistency, latent_conditioning=latent_conditioning,
                        session_masking=session_masking, **changes)


def variant_name(variant: str, config: BeliefConfig) -> str:
    """``dynamite``, ``dynamite-no-consistency`` etc. for ablations, with ``-categorical`` and
    ``-counterfactual`` for the options beyond the paper (so comparisons keep them apart)."""
    parts = [variant]
    if variant == "dynamite":
        parts += [f"no-{name.replace('_', '-')}" for name in ("consistency", "latent_conditioning", "session_masking")
                  if not getattr(config, name)]
    if config.latent != "gaussian":
        parts.append(config.latent)
    if config.counterfactual_reconstruction:
        parts.append("counterfactual")
    return "-".join(parts)
