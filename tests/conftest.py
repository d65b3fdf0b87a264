"""Shared fixtures: one local Ray per session, a nano tokenizer/model, a temporary artifact store."""

from __future__ import annotations

import os

import pytest

os.environ.pop("RAY_ADDRESS", None)  # never attach the tests to someone else's cluster
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def nano_tokenizer():
    from squigglray.families import list_families, sample
    from squigglray.families.trace import format_prompt
    from squigglray.models import train_tokenizer

    texts = [format_prompt(x.problem) + x.trace for f in list_families() for x in sample(f, 20, 0)]
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture
def store(tmp_path):
    from squigglray.paths import ArtifactStore

    return ArtifactStore(tmp_path / "data")


SOLVER_MODEL = {
    "name": "solver-test", "seed": 0,
    "model": {"preset": "nano", "max_seq_len": 160, "vocab_size": 400},
    "data": {"families": ["arithmetic", "mod_power"], "pool_per_family_level": 200, "seed": 0},
    "curriculum": [{"name": "easy", "fraction": 1.0, "levels": {"easy": 1.0}}],
    "train": {"steps": 250, "batch_size": 32, "lr": 0.01, "warmup_steps": 10, "log_dense_until": 8,
              "log_every": 50, "threads": 2},
    "eval": {"n_per_family": 2, "levels": ["easy"]},
}


@pytest.fixture(scope="session")
def solver_store(tmp_path_factory):
    """An artifact store holding a nano model trained for ~10 s on two families: enough to write
    well-formed tool-integrated traces (code block, output, boxed answer), published as preset 'nano'."""
    from squigglray.paths import ArtifactStore
    from squigglray.training import BaseTrainConfig, train_base

    store = ArtifactStore(tmp_path_factory.mktemp("solver") / "data")
    train_base(BaseTrainConfig.model_validate(SOLVER_MODEL), store)
    return store
