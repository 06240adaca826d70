"""Reading session-labelled Minari datasets fast: one pass with h5py into flat arrays.

A :class:`FlatDataset` holds every episode back to back. Transition arrays (``actions``,
``rewards``, ``terminations``, ``truncations``) have ``N = Σ T_e`` rows; per-observation arrays
(``observations`` and every ``infos`` key) have ``N + E`` rows, since an episode of ``T``
transitions has ``T + 1`` observations and infos (Minari's layout). ``episode_starts[e]`` is the
first transition row of episode ``e`` (``episode_starts[E] = N``); its first observation row is
``episode_starts[e] + e``.

The reader accepts the path of ``main_data.hdf5``, its ``data`` folder, the dataset folder, or a
dataset id under the Minari root, and fails with one clear :class:`DatasetError` line on anything
else.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

TRANSITION_FIELDS = ("actions", "rewards", "terminations", "truncations")
SESSION_KEYS = ("latent", "session_id", "session_start")


class DatasetError(ValueError):
    """A path or id that does not lead to a readable Minari dataset."""


class ContentHasher:
    """SHA-256 of a dataset's arrays, field by field, independent of how they are split.

    Each field (``observations``, ``actions``, ``rewards``, ``terminations``, ``truncations`` and
    ``infos/<key>``) has its own digest over its rows in episode order; the content hash combines
    the field digests in name order. Feeding a field one episode at a time (the writer) or as one
    flat array (the reader) gives the same digests.
    """

    def __init__(self) -> None:
        self._fields: dict[str, Any] = {}

    def update(self, field: str, values: np.ndarray) -> None:
        digest = self._fields.setdefault(field, hashlib.sha256())
        digest.update(np.ascontiguousarray(values).tobytes())

    def field_digests(self) -> dict[str, str]:
        return {field: digest.hexdigest() for field, digest in sorted(self._fields.items())}

    def hexdigest(self) -> str:
        combined = hashlib.sha256()
        for field, digest in self.field_digests().items():
            combined.update(f"{field}={digest};".encode())
        return combined.hexdigest()


@dataclass(frozen=True)
class FlatDataset:
    dataset_id: str | None
    metadata: dict[str, Any]
    observations: np.ndarray  # [N + E, ...]
    actions: np.ndarray  # [N, ...]
    rewards: np.ndarray  # [N]
    terminations: np.ndarray  # [N] bool
    truncations: np.ndarray  # [N] bool
    infos: dict[str, np.ndarray]  # each [N + E, ...]
    episode_starts: np.ndarray  # [E + 1] int64

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    @property
    def num_transitions(self) -> int:
        return int(self.episode_starts[-1])

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_starts)

    @property
    def has_session_labels(self) -> bool:
        return all(key in self.infos for key in SESSION_KEYS)

    def fields(self) -> dict[str, np.ndarray]:
        """Every array by its hashed field name (``infos/<key>`` for infos)."""
        arrays = {"observations": self.observations}
        arrays |= {name: getattr(self, name) for name in TRANSITION_FIELDS}
        return arrays | {f"infos/{key}": value for key, value in self.infos.items()}

    def content_hasher(self) -> ContentHasher:
        hasher = ContentHasher()
        for field, values in self.fields().items():
            hasher.update(field, values)
        return hasher

    def observation_rows(self) -> np.ndarray:
        """Row in ``observations`` of the observation each transition starts from."""
        episode_of_transition = np.repeat(np.arange(self.num_episodes), self.episode_lengths)
        return np.arange(self.num_transitions) + episode_of_transition

    def episode_index(self) -> np.ndarray:
        """Episode of each transition row."""
        return np.repeat(np.arange(self.num_episodes), self.episode_lengths)

    def to_mdp_dataset(self, observations: np.ndarray | None = None) -> Any:
        """A d3rlpy ``MDPDataset`` with rows aligned to transitions.

        ``observations`` ([N + E, ...], default: the dataset's) lets callers feed augmented
        states (e.g. beliefs). Only the first T observations of each episode become rows; d3rlpy
        takes the next row as the next observation, so the last transition of a truncated
        episode (whose next observation is not a row) is dropped, as d3rlpy does for timeouts.
        """
        import d3rlpy  # torch is slow to import: only when a d3rlpy dataset is wanted

        source = self.observations if observations is None else observations
        if len(source) != len(self.observations):
            raise ValueError(f"observations need {len(self.observations)} rows, got {len(source)}")
        return d3rlpy.dataset.MDPDataset(
            observations=source[self.observation_rows()],
            actions=self.actions,
            rewards=self.rewards.astype(np.float32),
            terminals=self.terminations.astype(np.float32),
            timeouts=self.truncations.astype(np.float32),
        )


def resolve_data_file(spec: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """The ``main_data.hdf5`` that a path or a dataset id points at."""
    path = Path(spec).expanduser()
    candidates = [path, path / "main_data.hdf5", path / "data" / "main_data.hdf5"]
    if not path.is_absolute():
        minari_root = Path(root or os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))
        candidates += [minari_root / str(spec) / "data" / "main_data.hdf5"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"no dataset at {spec!r}: give a main_data.hdf5 file, its dataset folder, or a dataset id "
        "under the Minari root ($MINARI_DATASETS_PATH or ~/.minari/datasets)"
    )


def load_flat(spec: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> FlatDataset:
    """Read a whole dataset in one pass over its episodes."""
    data_file = resolve_data_file(spec, root)
    if not h5py.is_hdf5(data_file):
        raise DatasetError(f"{data_file} is not an HDF5 file")
    metadata_file = data_file.parent / "metadata.json"
    metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
    with h5py.File(data_file, "r") as file:
        names = [f"episode_{i}" for i in range(len(file))]
        if not names or any(name not in file for name in names):
            raise DatasetError(
                f"{data_file} is not a Minari dataset: expected groups episode_0 … episode_N"
            )
        return _read_episodes(file, names, metadata, data_file)


def _read_episodes(file: h5py.File, names: list[str], metadata: dict[str, Any], data_file: Path) -> FlatDataset:
    first = file[names[0]]
    missing = [key for key in ("observations", *TRANSITION_FIELDS) if key not in first]
    if missing:
        raise DatasetError(f"{data_file} is not a Minari dataset: episode_0 lacks {', '.join(missing)}")
    lengths = np.array([file[name]["rewards"].shape[0] for name in names], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    n, e = int(starts[-1]), len(names)
    info_keys = list(first["infos"].keys()) if "infos" in first else []
    # Preallocate every flat array once, then let HDF5 read each episode straight into its slice.
    def empty(dataset: h5py.Dataset, rows: int) -> np.ndarray:
        return np.empty((rows, *dataset.shape[1:]), dtype=dataset.dtype)

    arrays = {key: empty(first[key], n) for key in TRANSITION_FIELDS}
    observations = empty(first["observations"], n + e)
    infos = {key: empty(first["infos"][key], n + e) for key in info_keys}
    for index, name in enumerate(names):
        group = file[name]
        t0, t1 = starts[index], starts[index + 1]
        o0, o1 = t0 + index, t1 + index + 1
        if group["observations"].shape[0] != o1 - o0:
            raise DatasetError(f"{data_file}: {name} has {group['observations'].shape[0]} observations for {t1 - t0} steps")
        group["observations"].read_direct(observations, dest_sel=np.s_[o0:o1])
        for key in TRANSITION_FIELDS:
            if t1 > t0:
                group[key].read_direct(arrays[key], dest_sel=np.s_[t0:t1])
        for key in info_keys:
            dataset = group["infos"][key]
            if dataset.shape[0] != o1 - o0:
                raise DatasetError(f"{data_file}: {name} infos/{key} has {dataset.shape[0]} rows, expected {o1 - o0} (T + 1)")
            dataset.read_direct(infos[key], dest_sel=np.s_[o0:o1])
    return FlatDataset(
        dataset_id=metadata.get("dataset_id"),
        metadata=metadata,
        observations=observations,
        infos=infos,
        episode_starts=starts,
        **arrays,
    )


@dataclass(frozen=True)
class SequenceBatch:
    """Episodes padded to the longest one: ``B`` sequences of ``T`` transitions.

    Rows past an episode's length are padding; their values are unspecified (models must mask
    them, and tests fill them with NaN to prove it). Session arrays are zero-filled when the
    dataset has no session labels (``has_sessions`` is false then).
    """

    observations: np.ndarray  # [B, T + 1, *obs]
    actions: np.ndarray  # [B, T, *act]
    rewards: np.ndarray  # [B, T]
    lengths: np.ndarray  # [B] int64: transitions per episode
    session_ids: np.ndarray  # [B, T + 1] int64, per observation
    session_starts: np.ndarray  # [B, T + 1] bool, per observation
    latents: np.ndarray  # [B, T + 1, k] float32 (k = 0 without labels)
    has_sessions: bool


def sequence_batch(flat: FlatDataset, episodes: np.ndarray) -> SequenceBatch:
    """Gather episodes into a padded batch with one fancy-indexing pass per array."""
    episodes = np.asarray(episodes, dtype=np.int64)
    lengths = flat.episode_lengths[episodes]
    horizon = int(lengths.max())
    steps = np.arange(horizon + 1)
    # Row of (episode, t) in the flat arrays, clamped into the episode so padding reads real rows.
    transition_rows = flat.episode_starts[episodes, None] + np.minimum(steps[None, :-1], lengths[:, None] - 1)
    observation_rows = flat.episode_starts[episodes, None] + episodes[:, None] + np.minimum(steps[None], lengths[:, None])
    has_sessions = flat.has_session_labels
    if has_sessions:
        session_ids = flat.infos["session_id"][observation_rows]
        session_starts = flat.infos["session_start"][observation_rows]
        latents = flat.infos["latent"][observation_rows]
    else:
        session_ids = np.zeros(observation_rows.shape, dtype=np.int64)
        session_starts = np.zeros(observation_rows.shape, dtype=bool)
        latents = np.zeros((*observation_rows.shape, 0), dtype=np.float32)
    return SequenceBatch(
        observations=flat.observations[observation_rows],
        actions=flat.actions[transition_rows],
        rewards=flat.rewards[transition_rows],
        lengths=lengths,
        session_ids=session_ids,
        session_starts=session_starts,
        latents=latents,
        has_sessions=has_sessions,
    )
