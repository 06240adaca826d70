"""What a train run is: the variant (what the policy sees) and how the policy is trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from offline_dynamite.belief.config import BeliefConfig, belief_config_for

#: What the policy conditions on. ``dynamite`` and ``varibad`` see the belief of their posterior,
#: ``no-belief`` the state alone (a Markov policy blind to the latent), ``oracle`` the true latent
#: (an upper reference no deployed agent has).
VARIANTS = ("dynamite", "varibad", "no-belief", "oracle")


@dataclass(frozen=True)
class PolicyTrainConfig:
    """How the policy is trained on the hyper-states (the belief's training is separate)."""

    #: d3rlpy algorithm: ``iql``, ``cql`` (continuous actions) or ``discrete-cql``; ``None``
    #: chooses from the action space (see :func:`offline_dynamite.train.algos.choose_algo`).
    algo: str | None = None
    steps: int = 10_000
    batch_size: int = 256
    seed: int = 0
    #: Add this share of the dataset's episodes again, relabelled under another episode's latents
    #: with the env's reward() (BOReL). Useful when the behaviour gives the latent away: the
    #: policy then sees what the same behaviour earns when the context is different.
    relabel_fraction: float = 0.0
    log_every: int = 250
    checkpoint_every: int = 2000
    #: Torch CPU threads; one is reproducible bit for bit (see BeliefTrainConfig.threads).
    threads: int = 1

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.log_every, self.checkpoint_every, self.threads) < 1:
            raise ValueError("steps, batch_size, log_every, checkpoint_every and threads must be positive")
        if not 0.0 <= self.relabel_fraction <= 1.0:
            raise ValueError(f"the policy's relabel fraction must be in [0, 1], got {self.relabel_fraction}")


def belief_config_of_variant(variant: str, *, consistency: bool = True, latent_conditioning: bool = True,
                             session_masking: bool = True, **belief_fields: Any) -> BeliefConfig | None:
    """The belief model a variant trains, or ``None`` for the variants without one
    (``belief_fields``: other BeliefConfig fields, e.g. ``latent_dim``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    if variant in ("no-belief", "oracle"):
        if not (consistency and latent_conditioning and session_masking):
            raise ValueError(f"the ablation flags apply to the dynamite variant; {variant} has no belief model")
        return None
    return belief_config_for(variant, consistency=consistency, latent_conditioning=latent_conditioning,
                             session_masking=session_masking, **belief_fields)


def variant_of_belief(config: BeliefConfig) -> str:
    """The variant a trained belief model belongs to: ``varibad`` has every DynaMITE change off."""
    return "dynamite" if config.needs_session_labels else "varibad"
