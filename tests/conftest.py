import os

# Headless rendering; must be set before mujoco's GL bindings load.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import pytest


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    """Every test gets its own Minari root: nothing touches ~/.minari."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root
