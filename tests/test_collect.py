"""dynamite-collect end to end: real roll-outs, real HDF5 files, real Minari loading."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest

from collect.policies import Behaviour, NoisyPolicy, choose_behaviours
from collect.recipe import RECIPES_DIR, Recipe, RecipeError, load_recipe
from collect.writer import PARTIAL_PREFIX, DatasetExistsError, collect
from offline_dynamite.data import load_flat
from tests.helpers import console_script, interrupt_collection, visible_entries

GRID_ID = "dynamite/gridworld/mixed-v0"


def small_recipe(**changes) -> Recipe:
    return load_recipe(GRID_ID).replace(**{"episodes": 40, "reference_episodes": 8, **changes})


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid-root")
    collect(small_recipe(), root, workers=1)
    return root


def run_cli(*arguments: str, root: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root), "COLUMNS": "200", **extra_env}
    return subprocess.run(
        [console_script("dynamite-collect"), *arguments], capture_output=True, text=True, env=env
    )


# ---------------------------------------------------------------------------- Minari compatibility
def test_minari_loads_the_dataset_in_a_fresh_process_without_collect(grid_root):
    code = (
        "import sys, minari\n"
        f"ds = minari.load_dataset({GRID_ID!r})\n"
        "env = ds.recover_environment()\n"
        "episode = ds[3]\n"
        "assert not any(name == 'collect' or name.startswith('collect.') for name in sys.modules)\n"
        "print(len(ds), ds.total_steps, env.spec.id, env.unwrapped.switch_prob,\n"
        "      episode.observations.shape[0] - episode.actions.shape[0],\n"
        "      sorted(episode.infos), episode.infos['latent'].shape[0])\n"
    )
    env = {**os.environ, "MINARI_DATASETS_PATH": str(grid_root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[:5] == ["40", "2400", "dynamite/Gridworld-v0", "0.05", "1"]
    assert "['behaviour_id', 'latent', 'session_id', 'session_start']" in out.stdout
    assert out.stdout.split()[-1] == "61"  # T + 1 infos


def test_minari_cli_lists_and_shows_the_dataset(grid_root):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(grid_root), "COLUMNS": "200"}
    minari_cli = console_script("minari")
    listed = subprocess.run([minari_cli, "list", "local"], capture_output=True, text=True, env=env, check=True)
    assert GRID_ID in listed.stdout
    shown = subprocess.run([minari_cli, "show", GRID_ID], capture_output=True, text=True, env=env, check=True)
    assert "Total Episodes" in shown.stdout and "dynamite/Gridworld-v0" in shown.stdout


def test_metadata_carries_recipe_reference_scores_and_normalises(grid_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(grid_root))
    dataset = minari.load_dataset(GRID_ID)
    metadata = dataset.storage.metadata
    assert metadata["ref_min_score"] < 0 < metadata["ref_max_score"]
    assert metadata["dynamite"]["recipe"]["env_kwargs"] == {"horizon": 60, "switch_prob": 0.05}
    assert metadata["dynamite"]["recipe"]["seed"] == 0
    scores = minari.get_normalized_score(dataset, np.array([metadata["ref_min_score"], metadata["ref_max_score"]]))
    np.testing.assert_allclose(scores, [0.0, 1.0])


# ---------------------------------------------------------------------------- reproducibility
def test_same_recipe_and_seed_give_identical_arrays_whatever_the_workers(grid_root, tmp_path):
    collect(small_recipe(), tmp_path / "two-workers", workers=2)
    first = load_flat(GRID_ID, grid_root).content_hasher().field_digests()
    second = load_flat(GRID_ID, tmp_path / "two-workers").content_hasher().field_digests()
    assert first.keys() >= {"observations", "actions", "rewards", "infos/latent", "infos/session_id"}
    assert first == second
    collect(small_recipe(seed=1), tmp_path / "seed-1", workers=1)
    third = load_flat(GRID_ID, tmp_path / "seed-1").content_hasher().field_digests()
    assert third["observations"] != first["observations"]


def test_behaviour_mix_is_drawn_per_episode_by_weight():
    mix = (Behaviour("oracle", weight=3.0), Behaviour("random", weight=1.0))
    choices = choose_behaviours(mix, seed=0, episodes=range(4000))
    assert abs((choices == 0).mean() - 0.75) < 0.03
    np.testing.assert_array_equal(choices[100:200], choose_behaviours(mix, 0, range(100, 200)))


def test_noisy_oracle_perturbs_continuous_and_discrete_actions():
    reacher = gym.make("dynamite/Reacher-v0")
    base = reacher.unwrapped.make_oracle()
    noisy = NoisyPolicy(base, reacher.action_space, noise=0.3)
    obs, info = reacher.reset(seed=0)
    observations, latents = np.repeat(obs[None], 500, 0), np.repeat(info["latent"][None], 500, 0)
    noisy.reset(list(range(500)))
    difference = noisy.act(observations, latents) - base.act(observations, latents)
    assert 0.15 < difference.std() < 0.3  # clipping at ±1 trims the 0.3 noise a little

    grid = gym.make("dynamite/Gridworld-v0")
    greedy = NoisyPolicy(grid.unwrapped.make_oracle(), grid.action_space, noise=0.5)
    obs, info = grid.reset(seed=0)
    greedy.reset(list(range(2000)))
    actions = greedy.act(np.repeat(obs[None], 2000, 0), np.repeat(info["latent"][None], 2000, 0))
    oracle_action = grid.unwrapped.make_oracle().act(obs[None], info["latent"][None])[0]
    # ε = 0.5 explores half the time and explores into the oracle's own action 1 time in 5.
    assert abs((actions != oracle_action).mean() - 0.5 * 4 / 5) < 0.04


# ---------------------------------------------------------------------------- d3rlpy
def test_d3rlpy_dataset_from_the_reader_is_aligned_and_trains(grid_root, monkeypatch):
    import d3rlpy

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(grid_root))
    flat = load_flat(GRID_ID)
    mdp = flat.to_mdp_dataset()
    dataset = minari.load_dataset(GRID_ID)
    assert mdp.size() == len(dataset)
    for index in (0, 1, 17, 39):  # d3rlpy's get_minari drifts by one row per earlier episode
        episode, ours = dataset[index], mdp.episodes[index]
        np.testing.assert_array_equal(ours.observations, episode.observations[:-1])
        np.testing.assert_array_equal(ours.actions.ravel(), episode.actions)
        np.testing.assert_allclose(ours.rewards.ravel(), episode.rewards)
    algo = d3rlpy.algos.DiscreteCQLConfig(batch_size=16).create(device="cpu:0")
    algo.fit(mdp, n_steps=5, n_steps_per_epoch=5, show_progress=False,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    assert algo.predict(flat.observations[:3]).shape == (3,)


# ---------------------------------------------------------------------------- tooling
def test_inspect_validate_and_card(grid_root, tmp_path):
    inspected = run_cli("inspect", GRID_ID, root=grid_root)
    assert inspected.returncode == 0, inspected.stderr
    for text in ("sessions / episode", "Returns per behaviour policy", "oracle+noise0.2", "Sessions per latent"):
        assert text in inspected.stdout
    valid = run_cli("validate", GRID_ID, root=grid_root)
    assert valid.returncode == 0 and "valid" in valid.stdout
    card = run_cli("card", GRID_ID, "--output", str(tmp_path / "card.md"), root=grid_root)
    assert card.returncode == 0, card.stderr
    text = (tmp_path / "card.md").read_text()
    assert text.startswith(f"# {GRID_ID}") and "## Behaviour mix" in text and "content sha256" in text


def tampered_copy(grid_root: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(grid_root / GRID_ID, copy)
    with h5py.File(copy / "data" / "main_data.hdf5", "a") as file:
        change(file)
    return copy


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f["episode_2/rewards"].__setitem__(5, 9.0), "content hash differs"),
        (lambda f: f["episode_2/observations"].__setitem__(5, np.nan), "non-finite"),
        (lambda f: f["episode_1/infos/session_id"].__setitem__(slice(10, None), 7), "session_id must rise by 0 or 1"),
        (lambda f: [f[f"episode_{i}/infos"].__delitem__("latent") for i in range(len(f))], "no session labels"),
    ],
)
def test_validate_finds_broken_datasets(grid_root, tmp_path, change, message):
    copy = tampered_copy(grid_root, tmp_path, change)
    result = run_cli("validate", str(copy), root=grid_root)
    assert result.returncode == 1
    assert message in result.stderr


def test_publish_round_trip_through_a_directory_remote(grid_root, tmp_path):
    remote = tmp_path / "remote"
    env_extra = {"MINARI_REMOTE": f"dir://{remote}"}
    published = run_cli("publish", GRID_ID, root=grid_root, **env_extra)
    assert published.returncode == 0, published.stderr
    again = run_cli("publish", GRID_ID, root=grid_root, **env_extra)
    assert again.returncode == 2 and "already on" in again.stderr

    fresh = tmp_path / "fresh-root"
    code = (
        "import collect.remote, minari\n"
        f"minari.download_dataset({GRID_ID!r})\n"
        f"print(len(minari.load_dataset({GRID_ID!r})))\n"
    )
    env = {**os.environ, **env_extra, "MINARI_DATASETS_PATH": str(fresh)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    original, downloaded = load_flat(GRID_ID, grid_root), load_flat(GRID_ID, fresh)
    assert original.content_hasher().field_digests() == downloaded.content_hasher().field_digests()
    assert original.metadata == downloaded.metadata


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--env", "cartpole"], "unknown env 'cartpole'"),
        (["--env", "gridworld", "--dataset-id", "dynamite/gridworld/mine"], "invalid dataset id"),
        (["--env", "gridworld", "--switch-prob", "2"], "switch_prob must be in [0, 1]"),
        (["--env", "gridworld", "--recipe", GRID_ID], "give either --env"),
        ([], "give either --env"),
        (["--recipe", "nowhere/recipe.toml"], "does not exist"),
    ],
)
def test_bad_collect_input_is_one_line_and_leaves_nothing(arguments, message, tmp_path):
    root = tmp_path / "root"
    result = run_cli(*arguments, "--episodes", "2", root=root)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert visible_entries(root) == []


@pytest.mark.parametrize(
    "content, message",
    [
        ('dataset_id = "my/set-v0"\nenv = "gridworld"\nepisodes = 3\nseed = 0\ncolour = 1\n[[behaviour]]\npolicy = "random"\n', "unknown recipe key(s) colour"),
        ('dataset_id = "my/set-v0"\nenv = "gridworld"\nepisodes = 3\n[[behaviour]]\npolicy = "random"\n', "missing recipe key(s) seed"),
        ('dataset_id = "my/set-v0"\nenv = "gridworld"\nepisodes = 3\nseed = 0\n[[behaviour]]\npolicy = "expert"\n', "unknown behaviour policy 'expert'"),
        ('dataset_id = "my/set-v0"\nenv = "gridworld"\nepisodes = 3\nseed = 0\n[[behaviour]]\npolicy = "oracle"\nnoize = 1\n', "unexpected keyword argument 'noize'"),
        ('dataset_id = "my/set-v0"\nenv = "gridworld"\nepisodes = 3\nseed = 0\n[env_kwargs]\nhorizon = -1\n[[behaviour]]\npolicy = "random"\n', "horizon must be a positive integer"),
        ("dataset_id = [", "is not valid TOML"),
    ],
)
def test_invalid_recipes_are_rejected_with_one_line(content, message, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(content)
    root = tmp_path / "root"
    result = run_cli("--recipe", str(recipe), root=root)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert visible_entries(root) == []


def test_existing_dataset_needs_overwrite(tmp_path):
    root = tmp_path / "root"
    collect(small_recipe(episodes=4), root)
    before = load_flat(GRID_ID, root).content_hasher().hexdigest()
    with pytest.raises(DatasetExistsError, match="pass --overwrite"):
        collect(small_recipe(episodes=4), root)
    result = run_cli("--recipe", GRID_ID, "--episodes", "4", root=root)
    assert result.returncode == 2 and "already exists" in result.stderr
    collect(small_recipe(episodes=6), root, overwrite=True)
    assert load_flat(GRID_ID, root).num_episodes == 6
    assert load_flat(GRID_ID, root).content_hasher().hexdigest() != before
    assert not [p for p in root.iterdir() if p.name.startswith(PARTIAL_PREFIX)]


def test_ctrl_c_mid_collection_leaves_no_dataset_and_no_stray_folder(tmp_path):
    root = tmp_path / "root"
    returncode, stderr = interrupt_collection(
        ["--recipe", "dynamite/reacher/mixed-v0", "--episodes", "4000", "--workers", "2"], root,
        running_s=1.0,  # well into the roll-outs
    )
    assert returncode == 130
    assert "interrupted: no dataset was written" in stderr
    assert visible_entries(root) == []  # no dataset, no partial folder, no namespace folder
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root)}
    listed = subprocess.run([console_script("minari"), "list", "local"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0


def test_every_catalogue_recipe_loads_and_matches_its_path():
    recipes = sorted(RECIPES_DIR.glob("*/*.toml"))
    assert recipes, "the catalogue is empty"
    for path in recipes:
        recipe = Recipe.from_file(path)
        assert recipe.dataset_id == f"dynamite/{path.parent.name}/{path.stem}"


def test_recipe_errors_name_the_problem():
    with pytest.raises(RecipeError, match="invalid dataset id"):
        small_recipe(dataset_id="dynamite/grid")
    with pytest.raises(ValueError, match="needs a path"):
        Behaviour("checkpoint")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs: a real full disk (needs root, as on the project's machines and CI)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_mid_collection_leaves_nothing_behind(small_disk):
    # Reacher's 200 episodes need ≈ 4 MB: several chunks fit before the disk fills.
    result = run_cli("--recipe", "dynamite/reacher/mixed-v0", "--episodes", "200", root=small_disk)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not enough free space" in lines[0], result.stderr
    assert visible_entries(small_disk) == []


def test_a_saved_d3rlpy_policy_is_a_behaviour(grid_root, tmp_path):
    import d3rlpy

    flat = load_flat(GRID_ID, grid_root)
    algo = d3rlpy.algos.DiscreteBCConfig(batch_size=32).create(device="cpu:0")
    algo.fit(flat.to_mdp_dataset(), n_steps=20, n_steps_per_epoch=20, show_progress=False,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    checkpoint = tmp_path / "bc.d3"
    algo.save(str(checkpoint))
    recipe = small_recipe(episodes=6, dataset_id="dynamite/gridworld/bc-v0",
                          behaviour=(Behaviour("checkpoint", path=str(checkpoint)),))
    result = collect(recipe, tmp_path / "root")
    collected = load_flat(result.data_file)
    rows = collected.observation_rows()
    np.testing.assert_array_equal(collected.actions, algo.predict(collected.observations[rows]))
    assert collected.metadata["dynamite"]["behaviour_ids"] == {"0": "checkpoint:bc.d3"}


def test_explorer_behaviour_is_the_envs_latent_blind_adaptive_policy():
    from offline_dynamite.envs.gridworld import GridworldExplorer

    noisy = Behaviour("explorer", noise=0.2).build(gym.make("dynamite/Gridworld-v0"))
    assert isinstance(noisy, NoisyPolicy) and isinstance(noisy.base, GridworldExplorer)
    assert Behaviour("explorer", noise=0.2).name == "explorer+noise0.2"
    with pytest.raises(ValueError, match="has no explorer behaviour"):
        Behaviour("explorer").build(gym.make("dynamite/Reacher-v0"))
