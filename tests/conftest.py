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
