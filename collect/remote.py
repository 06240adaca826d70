"""A Minari remote that is a plain directory: ``MINARI_REMOTE=dir:///path/to/remote``.

Minari publishes through its ``CloudStorage`` interface (Hugging Face ``hf://`` and Google Cloud
``gcp://`` ship with it). This one lays datasets out exactly as a local Minari root does, which
makes it useful for a lab's shared file system, and lets the publishing round trip be tested
without a network. Importing this module registers the ``dir`` scheme with Minari.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from minari.namespace import NAMESPACE_METADATA_FILENAME
from minari.storage import get_dataset_path
from minari.storage.remotes import _registry
from minari.storage.remotes.cloud_storage import CloudStorage

SCHEME = "dir"


class DirectoryRemote(CloudStorage):
    def __init__(self, name: str, token: str | None = None) -> None:
        # `dir:///srv/minari` gives name "/srv/minari"; the token is not needed.
        self.root = Path(name)

    def _local(self, dataset_id: str) -> Path:
        return Path(get_dataset_path(dataset_id))

    def upload_dataset(self, dataset_id: str) -> None:
        target = self.root / dataset_id
        staging = target.with_name(f".{target.name}.uploading")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self._local(dataset_id), staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)  # readers never see half a dataset

    def list_datasets(self, prefix: str | None = None) -> Iterable[str]:
        if not self.root.is_dir():
            return []
        found = (
            path.parent.parent.relative_to(self.root).as_posix()
            for path in self.root.glob("**/data/metadata.json")
            if not any(part.startswith(".") for part in path.relative_to(self.root).parts)
        )
        return sorted(d for d in found if prefix is None or d.startswith(prefix))

    def get_dataset_metadata(self, dataset_id: str) -> dict:
        return json.loads((self.root / dataset_id / "data" / "metadata.json").read_text())

    def download_dataset(self, dataset_id: str, path: Path) -> None:
        shutil.copytree(self.root / dataset_id, Path(path) / dataset_id, dirs_exist_ok=True)

    def list_namespaces(self) -> Iterable[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            path.parent.relative_to(self.root).as_posix()
            for path in self.root.glob(f"**/{NAMESPACE_METADATA_FILENAME}")
        )

    def download_namespace_metadata(self, namespace: str, path: Path) -> None:
        target = Path(path) / namespace
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.root / namespace / NAMESPACE_METADATA_FILENAME, target)

    def upload_namespace(self, namespace: str) -> None:
        target = self.root / namespace
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(get_dataset_path()) / namespace / NAMESPACE_METADATA_FILENAME, target)


_registry[SCHEME] = lambda: DirectoryRemote
