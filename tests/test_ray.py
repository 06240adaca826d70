"""Collection and evaluation as Ray tasks on a real local Ray instance (2 CPUs on this machine).

The same seeds must give the same dataset and the same metrics as on one machine, also when a
worker dies mid-shard; the command lines refuse what they cannot do in one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from collect import writer
from collect.writer import CHUNK_EPISODES, collect
from evaluation.evaluate import evaluate_run
from offline_dynamite.data import load_flat
from offline_dynamite.distributed import SHARD_RETRIES, DistributedError, RayCluster
from tests.helpers import console_script, interrupt_collection, visible_entries
from tests.test_collect import GRID_ID, small_recipe
from tests.test_train import train_in_process

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

IN_PROCESS = RayCluster("auto")  # collect() and evaluate_run() reuse the fixture's connection


@pytest.fixture(scope="module")
def ray_address() -> str:
    """A local Ray instance with 2 CPUs for the whole module; its GCS address for subprocesses."""
    # "local": a new instance even if this machine already runs one (ray.init would join it).
    ray.init(address="local", num_cpus=2, logging_level=logging.ERROR, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    return collect(small_recipe(), tmp_path_factory.mktemp("local"), workers=2)


def assert_same_dataset(data_file: Path, reference: Path) -> None:
    ours, theirs = load_flat(data_file), load_flat(reference)
    assert ours.content_hasher().hexdigest() == theirs.content_hasher().hexdigest()
    for name in ("observations", "actions", "rewards", "terminations", "truncations", "episode_starts"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
    for key in theirs.infos:
        np.testing.assert_array_equal(ours.infos[key], theirs.infos[key])


def run_cli(script: str, *arguments: str, root: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root), "COLUMNS": "200"}
    return subprocess.run([console_script(script), *arguments], capture_output=True, text=True, env=env, **kwargs)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ---------------------------------------------------------------------------- collection
def test_ray_collection_gives_the_local_dataset(ray_address, local_dataset, tmp_path):
    result = collect(small_recipe(), tmp_path, ray=IN_PROCESS)
    assert result.content_sha256 == local_dataset.content_sha256
    assert (result.ref_min_score, result.ref_max_score) == (local_dataset.ref_min_score, local_dataset.ref_max_score)
    assert_same_dataset(result.data_file, local_dataset.data_file)


def test_a_shard_whose_worker_dies_mid_way_is_retried_and_the_dataset_is_whole(
        ray_address, local_dataset, tmp_path, monkeypatch):
    killed = tmp_path / "killed"

    def dies_once_after_rolling_out_the_third_shard(task):
        from collect import writer as worker_writer  # in the Ray worker: the real roll-out

        trajectories = worker_writer._roll_out(task)
        if task.episodes[0] == 2 * CHUNK_EPISODES and not killed.exists():
            killed.write_text(str(os.getpid()))
            os._exit(1)  # the worker is lost with its shard's episodes
        return trajectories

    monkeypatch.setattr(writer, "_roll_out", dies_once_after_rolling_out_the_third_shard)
    result = collect(small_recipe(), tmp_path / "root", ray=IN_PROCESS)
    assert killed.exists(), "the shard's worker never died"
    assert result.content_sha256 == local_dataset.content_sha256
    assert_same_dataset(result.data_file, local_dataset.data_file)


def test_a_shard_lost_more_often_than_retried_fails_and_leaves_nothing(ray_address, tmp_path, monkeypatch):
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def always_dies_in_the_second_shard(task):
        from collect import writer as worker_writer

        if task.episodes[0] == CHUNK_EPISODES:
            (attempts / str(os.getpid())).touch()
            os._exit(1)
        return worker_writer._roll_out(task)

    monkeypatch.setattr(writer, "_roll_out", always_dies_in_the_second_shard)
    root = tmp_path / "root"
    with pytest.raises(DistributedError, match="shard 1 was lost"):
        collect(small_recipe(), root, ray=IN_PROCESS)
    assert len(list(attempts.iterdir())) == SHARD_RETRIES + 1
    assert visible_entries(root) == []  # no dataset, no partial folder


def test_the_cli_collects_on_a_cluster_given_its_address(ray_address, local_dataset, tmp_path):
    result = run_cli("dynamite-collect", "--recipe", GRID_ID, "--episodes", "40", "--ray", ray_address, root=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_dataset(tmp_path / GRID_ID / "data" / "main_data.hdf5", local_dataset.data_file)


def test_ctrl_c_during_a_ray_collection_leaves_nothing(ray_address, tmp_path):
    root = tmp_path / "root"
    returncode, stderr = interrupt_collection(
        ["--recipe", "dynamite/reacher/mixed-v0", "--episodes", "4000", "--ray", ray_address], root,
        running_s=4.0,  # connected, shards running
    )
    assert returncode == 130, stderr
    assert "interrupted: no dataset was written" in stderr
    assert visible_entries(root) == []


# ---------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def trained_run(local_dataset, tmp_path_factory) -> Path:
    return train_in_process(local_dataset.data_file, tmp_path_factory.mktemp("runs"), steps=20, belief_steps=10)


def test_ray_evaluation_gives_the_local_metrics(ray_address, trained_run):
    # 20 episodes, 8 envs at a time: three shards, the last one short.
    local, local_episodes = evaluate_run(trained_run, episodes=20, seed=5, num_envs=8)
    on_ray, ray_episodes = evaluate_run(trained_run, episodes=20, seed=5, num_envs=8, ray=IN_PROCESS)
    assert json.dumps(on_ray) == json.dumps(local)  # exactly, NaN metrics included
    assert local["metrics"]["belief_latent_accuracy"] is not None
    np.testing.assert_array_equal(ray_episodes.belief, local_episodes.belief)
    np.testing.assert_array_equal(ray_episodes.observations, local_episodes.observations)


def test_the_eval_cli_on_a_cluster_writes_the_local_evaluation(ray_address, trained_run, tmp_path):
    local, _ = evaluate_run(trained_run, episodes=12, seed=9, num_envs=4)
    written = trained_run / "evaluations" / "Gridworld-v0__switch0.05__seed9__episodes12.json"
    written.unlink()
    result = run_cli("dynamite-eval", str(trained_run), "--episodes", "12", "--seed", "9", "--num-envs", "4",
                     "--ray", ray_address, root=tmp_path)
    assert result.returncode == 0, result.stderr
    assert written.read_text() == json.dumps(local, indent=2) + "\n"


# ---------------------------------------------------------------------------- bad input
WITHOUT_RAY = "import sys; sys.modules['ray'] = None; from {module} import app; sys.argv[0] = '{script}'; app()"


@pytest.mark.parametrize("script, module", [("dynamite-collect", "collect.cli"), ("dynamite-eval", "evaluation.cli")])
def test_without_the_extra_ray_flags_fail_in_one_line_naming_it(script, module, tmp_path):
    arguments = ["--env", "gridworld", "--episodes", "4"] if script == "dynamite-collect" else [str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY.format(module=module, script=script), *arguments, "--ray", "local"],
        capture_output=True, text=True, env={**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "root")},
    )
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["error: Ray is not installed: --ray needs the ray extra "
                                          "(pip install 'dynamite-rl[ray]')"]
    assert visible_entries(tmp_path / "root") == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nobody listens once the probe is closed


@pytest.mark.parametrize("arguments, code, message", [
    (["--ray", "nowhere"], 2, "invalid Ray address 'nowhere': use local, auto, host:port or ray://host:port"),
    (["--ray", "local", "--workers", "2"], 2, "--workers starts processes on this machine"),
    (["--ray", "127.0.0.1:{port}"], 1, "no Ray cluster answers at 127.0.0.1:{port}"),
])
def test_bad_ray_input_is_one_line_and_leaves_nothing(arguments, code, message, tmp_path):
    port = str(closed_port())
    arguments = [argument.replace("{port}", port) for argument in arguments]
    result = run_cli("dynamite-collect", "--env", "gridworld", "--episodes", "4", *arguments, root=tmp_path / "root",
                     timeout=60)
    assert result.returncode == code
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message.replace("{port}", port) in lines[0], result.stderr
    assert visible_entries(tmp_path / "root") == []


def test_a_cluster_that_refuses_the_connection_is_one_line(tmp_path):
    # A head with token authentication, joined without RAY_AUTH_MODE=token: Ray retries for ~20 s,
    # its C++ client warning every second; the command prints one line saying what to set.
    port = closed_port()
    without_auth = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_MODE"}
    # Its own temporary folder, so that it does not become this machine's "current" Ray cluster.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit
    head = subprocess.Popen([console_script("ray"), "start", "--head", "--block", "--port", str(port), "--num-cpus", "1",
                             f"--temp-dir={temp_dir}"],
                            env={**without_auth, "RAY_AUTH_MODE": "token"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline and head.poll() is None, "the Ray head never started"
            time.sleep(0.2)
        result = subprocess.run(
            [console_script("dynamite-collect"), "--env", "gridworld", "--episodes", "4", "--ray", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120,
            env={**without_auth, "MINARI_DATASETS_PATH": str(tmp_path / "root"), "COLUMNS": "200"},
        )
    finally:
        head.terminate()
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN" in lines[0], result.stderr
    assert visible_entries(tmp_path / "root") == []
