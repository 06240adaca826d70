"""A latent-aware MLP actor evaluated with numpy alone, loaded from a small ``.npz`` file.

The HalfCheetah oracles are SAC actors trained by ``collect/train_oracle.py`` with the true latent
appended to the observation. Shipping them as plain float32 matrices, rather than as d3rlpy or
torch checkpoints, keeps the envs importable without torch and makes the file format obvious.

The forward pass is d3rlpy's SAC actor on its deterministic path (what ``algo.predict`` returns)::

    x = (concat(observation, latent) - input_shift) / input_scale   # d3rlpy's observation scaler
    x = relu(x @ weight_0 + bias_0) ... relu(x @ weight_{n-1} + bias_{n-1})  # the encoder
    action = tanh(x @ weight_n + bias_n)                           # tanh of the Gaussian mean

File layout (every array float32 unless noted; weights are ``[in, out]``, i.e. transposed from
torch's ``nn.Linear.weight``, so that the forward pass reads ``x @ W + b``):

``weight_<i>``, ``bias_<i>``
    The layers in order: the hidden ReLU layers, then the output layer (the Gaussian mean).
``layer_sizes`` (int64)
    Input size, every hidden size, then the action size.
``observation_size``, ``latent_size`` (int64 scalars)
    How the input splits: the observation comes first, the latent after it.
``input_shift``, ``input_scale``
    Per-input normalisation, applied before the first layer.
Anything else (``env_id``, ``command``, ``steps``, ``seed``, ...)
    Provenance metadata, kept in :attr:`MLPPolicy.metadata` and never used in the forward pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from offline_dynamite.policies import DeterministicPolicy

#: Keys that define the network; everything else in a file is provenance metadata.
NETWORK_KEYS = ("layer_sizes", "observation_size", "latent_size", "input_shift", "input_scale")


class MLPPolicy(DeterministicPolicy):
    """Batched deterministic policy ``tanh(MLP([observation, latent]))`` with ReLU hidden layers.

    Implements :class:`offline_dynamite.policies.BatchPolicy`; it has neither randomness nor
    memory (the latent arrives with every call), so ``reset`` has nothing to do.
    """

    def __init__(
        self,
        weights: list[np.ndarray],
        biases: list[np.ndarray],
        observation_size: int,
        latent_size: int,
        input_shift: np.ndarray,
        input_scale: np.ndarray,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not weights or len(weights) != len(biases):
            raise ValueError(
                f"need one bias per weight matrix and at least one layer, got {len(weights)} "
                f"weights and {len(biases)} biases"
            )
        self.weights = [np.asarray(weight, dtype=np.float32) for weight in weights]
        self.biases = [np.asarray(bias, dtype=np.float32) for bias in biases]
        self.observation_size = int(observation_size)
        self.latent_size = int(latent_size)
        self.input_shift = np.asarray(input_shift, dtype=np.float32)
        self.input_scale = np.asarray(input_scale, dtype=np.float32)
        self.metadata = dict(metadata or {})
        self._check_shapes()

    @classmethod
    def load(cls, path: str | Path) -> MLPPolicy:
        """Read a policy written by ``collect.train_oracle`` (see the module docstring)."""
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        num_layers = len(arrays["layer_sizes"]) - 1
        return cls(
            weights=[arrays.pop(f"weight_{i}") for i in range(num_layers)],
            biases=[arrays.pop(f"bias_{i}") for i in range(num_layers)],
            observation_size=int(arrays["observation_size"]),
            latent_size=int(arrays["latent_size"]),
            input_shift=arrays["input_shift"],
            input_scale=arrays["input_scale"],
            metadata={
                key: value.item() if value.ndim == 0 else value
                for key, value in arrays.items()
                if key not in NETWORK_KEYS
            },
        )

    @property
    def layer_sizes(self) -> list[int]:
        """Input size, hidden sizes, action size."""
        return [self.weights[0].shape[0]] + [weight.shape[1] for weight in self.weights]

    @property
    def action_size(self) -> int:
        return self.weights[-1].shape[1]

    def act(self, observations: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """Actions ``[B, action_size]`` in ``[-1, 1]`` (float32) for observations and latents."""
        observations = np.asarray(observations, dtype=np.float32)
        latents = np.asarray(latents, dtype=np.float32)
        if observations.ndim != 2 or observations.shape[1] != self.observation_size:
            raise ValueError(
                f"observations must have shape [B, {self.observation_size}], "
                f"got {observations.shape}"
            )
        if latents.shape != (len(observations), self.latent_size):
            raise ValueError(
                f"latents must have shape [{len(observations)}, {self.latent_size}], "
                f"got {latents.shape}"
            )
        inputs = np.concatenate([observations, latents], axis=1)
        hidden = (inputs - self.input_shift) / self.input_scale
        for weight, bias in zip(self.weights[:-1], self.biases[:-1]):
            hidden = np.maximum(hidden @ weight + bias, 0.0)
        return np.tanh(hidden @ self.weights[-1] + self.biases[-1])

    def _check_shapes(self) -> None:
        input_size = self.observation_size + self.latent_size
        if self.input_shift.shape != (input_size,) or self.input_scale.shape != (input_size,):
            raise ValueError(
                f"input_shift and input_scale must have shape ({input_size},), got "
                f"{self.input_shift.shape} and {self.input_scale.shape}"
            )
        expected_in = input_size
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if weight.ndim != 2 or weight.shape[0] != expected_in or bias.shape != weight.shape[1:]:
                raise ValueError(
                    f"layer {i}: weight {weight.shape} and bias {bias.shape} do not take "
                    f"{expected_in} inputs (weights are [in, out])"
                )
            expected_in = weight.shape[1]
