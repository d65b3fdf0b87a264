"""Streaming training data (training/stream.py): examples from OpenMathReasoning shards packed into
full rows step by step; a resumed stream trains the same steps; long solutions chunked, held-out
problems dropped; the Ray Data pipeline gives the local stream's examples in the same order and
stays within its memory budget while a shard set 10x that budget streams through."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from squigglray.config import ConfigError, build_config
from squigglray.data.omr_sample import write_omr_shards
from squigglray.training import BaseTrainConfig
from squigglray.training.data import build_pool
from squigglray.data.stream import TokenizeRows, file_batches, local_epoch
from squigglray.training.stream import StreamBatches, rows_per_step, stream_tokenizer

ONE_PHASE = "curriculum=[{name: all, fraction: 1.0, levels: {easy: 1, medium: 1, hard: 1}}]"


def stream_config(parquet, *extra: str) -> BaseTrainConfig:
    return build_config(BaseTrainConfig, {}, [
        "model.preset=nano", "model.max_seq_len=256", "data.stream=true", f"data.parquet={parquet}",
        "train.global_batch_tokens=2048", ONE_PHASE, "probes.enabled=false", *extra])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("omr")
    write_omr_shards(folder, 120, shards=2, seed=1, words=80)  # ~500 tokens each: chunked at 256; ~30 steps an epoch
    return folder


def test_steps_fill_their_rows_and_a_resumed_stream_trains_the_same_steps(shards, nano_tokenizer):
    cfg = stream_config(shards)
    pool = build_pool(cfg)
    epoch = local_epoch(pool.source, stream_tokenizer(cfg, pool.source, nano_tokenizer), cfg.seed)
    rows, pad = rows_per_step(cfg), nano_tokenizer.pad_token_id
    assert rows == 8
    run = StreamBatches(epoch, rows, 256, pad, seed=0, micro_batch_size=4)
    steps = [run(s) for s in range(1, 61)]  # about 2 epochs
    assert run.epochs >= 2  # the stream started over when it ran out
    for micro in steps:
        assert [m["input_ids"].shape[0] for m in micro] == [4, 4] and all(m["input_ids"].shape[1] <= 256 for m in micro)
        trained = sum(int((m["labels"][:, 1:] != -100).sum()) for m in micro)
        assert all(int(m["num_items_in_batch"]) == trained for m in micro)
    fill = np.mean([sum(int((m["input_ids"] != pad).sum()) for m in micro) for micro in steps]) / (rows * 256)
    assert fill > 0.85, fill  # 90% measured: first-fit with a carry-over (one example a row: ~60%)
    resumed = StreamBatches(epoch, rows, 256, pad, seed=0, micro_batch_size=4)
    for s in (41, 42, 43):  # a run continued after step 40
        for a, b in zip(resumed(s), steps[s - 1]):
            assert all(np.array_equal(a[k], b[k]) for k in a)
    other = StreamBatches(epoch, rows, 256, pad, seed=1, micro_batch_size=4)(1)
    assert not np.array_equal(other[0]["input_ids"], steps[0][0]["input_ids"])  # each seed its own order


def test_long_solutions_are_chunked_and_held_out_problems_never_streamed(shards, nano_tokenizer):
    table = next(file_batches(str(sorted(shards.iterdir())[0]), ["problem", "generated_solution"]))
    whole = TokenizeRows(nano_tokenizer, 4096, "omr")(table)
    short = TokenizeRows(nano_tokenizer, 128, "omr")(table)
    assert whole.num_rows == table.num_rows and short.num_rows > table.num_rows  # chunked, none dropped
    lengths = [len(x) for x in short["ids"].to_pylist()]
    assert max(lengths) <= 128
    assert sum(lengths) > sum(len(x) for x in whole["ids"].to_pylist())  # chunks repeat the prompt and some context
    held = table["problem"][0].as_py()
    kept = TokenizeRows(nano_tokenizer, 4096, "omr", exclude_problems={held})(table)
    assert kept.num_rows == whole.num_rows - table["problem"].to_pylist().count(held)


def test_a_stream_config_names_what_it_lacks(shards):
    for extra, msg in ((["data.parquet=null"], "needs data.slice or data.parquet"),
                       (["data.stream=false"], "data.parquet is read as a stream"),
                       (["train.global_batch_tokens=1000"], "must be a multiple of model.max_seq_len"),
                       (["curriculum=[{name: a, fraction: 0.5}, {name: b, fraction: 0.5}]"], "must be one phase")):
        with pytest.raises(ConfigError, match=msg):
            stream_config(shards, *extra)
    with pytest.raises(ConfigError, match="3 workers cannot share the 8 packed rows"):
        rows_per_step(stream_config(shards), world=3)
    with pytest.raises(ConfigError, match="global_batch_tokens needs data.stream"):
        build_config(BaseTrainConfig, {}, ["train.global_batch_tokens=640"])
    with pytest.raises(ConfigError, match="model.shape takes positive"):
        build_config(BaseTrainConfig, {}, ["model.shape={hidden: 64}"])


def test_ray_data_streams_the_local_examples_within_its_memory_budget(ray_session, tmp_path, nano_tokenizer):
    """A shard set whose tokenized examples are 10x `data.stream_memory_mb` streams through the Ray Data
    pipeline that Ray Train feeds the workers; the object store never holds much more than the
    budget (polled every 50 ms; 2 MiB measured at 11 and at 22 MiB streamed; Ray Data's default 128 MiB
    blocks held a file's output at once), and the examples are the local stream's, in the same order."""
    from ray._private.internal_api import memory_summary
    from tune_spaces.dynamics import stream_dataset

    from squigglray.paths import ArtifactStore
    from squigglray.training import run_id_for

    budget_mb = 1
    write_omr_shards(tmp_path / "omr", 2600, shards=2, seed=2, words=300)  # ~11 MiB of token ids
    cfg = stream_config(tmp_path / "omr", f"data.stream_memory_mb={budget_mb}", "model.max_seq_len=2048",
                        "train.global_batch_tokens=4096")
    store = ArtifactStore(tmp_path / "data")
    nano_tokenizer.save_pretrained(store.local_path(f"runs/{run_id_for(cfg)}/tokenizer"))  # what the trial keeps
    ds, data_config = stream_dataset(cfg, store.location)
    (it,) = [shard["train"] for shard in data_config.configure({"train": ds}, 1, None, None)]

    gcs = ray_session.get_runtime_context().gcs_address  # this test's Ray: other clusters may run beside it
    samples, done, failed = [], threading.Event(), []

    def poll():
        try:
            while not done.wait(0.05):
                line = next(x for x in memory_summary(gcs, stats_only=True).splitlines() if "Plasma memory usage" in x)
                samples.append(float(line.split("usage")[1].split("MiB")[0]))
        except Exception as e:  # a poller that died would leave a peak of 0: fail instead
            failed.append(e)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    ray_ids, nbytes = hashlib.sha256(), 0
    try:
        for t in it.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            nbytes += t.nbytes
            fingerprint(ray_ids, t)
    finally:
        done.set()
        watcher.join()
    assert not failed and len(samples) >= 20, (failed, len(samples))
    assert nbytes >= 10 * budget_mb * 2**20, nbytes
    print(f"object store peaked at {max(samples)} MiB for a {budget_mb} MiB budget; {nbytes / 2**20:.1f} MiB streamed")
    assert max(samples) <= 3 * budget_mb, f"object store peaked at {max(samples)} MiB for a {budget_mb} MiB budget"
    pool = build_pool(cfg, store)
    local_ids = hashlib.sha256()
    for t in local_epoch(pool.source, stream_tokenizer(cfg, pool.source, nano_tokenizer), cfg.seed)():
        fingerprint(local_ids, t)
    assert ray_ids.hexdigest() == local_ids.hexdigest()


def fingerprint(h, table) -> None:
    """Every example's ids and prompt length, in order, whatever the table boundaries."""
    for ids, n in zip(table["ids"].to_pylist(), table["n_prompt"].to_pylist()):
        h.update(np.asarray(ids, dtype=np.int32).tobytes() + n.to_bytes(4, "little"))


def test_a_streamed_run_resumed_from_its_checkpoint_writes_the_same_artifacts(shards, tmp_path):
    """train_base on a stream (no Ray), checkpoint at step 4; continued from it in another store, the
    run replays the stream's first 4 steps and writes the scalars and geometry of the uninterrupted run."""
    import shutil

    from squigglray.paths import ArtifactStore
    from squigglray.training import run_id_for, train_base

    cfg = stream_config(shards, "train.steps=8", "train.checkpoint_every=4", "train.micro_batch_size=4",
                        "train.log_dense_until=8", "probes.enabled=true", "data.families=[arithmetic, mod_power]",
                        "probes.a_per_family=2", "probes.b_per_family=2", "geometry.capture_batch_size=4",
                        "curriculum=[{name: all, fraction: 1.0, levels: {easy: 1, medium: 1}}]")
    kept = {}
    full = ArtifactStore(tmp_path / "full")
    train_base(cfg, full, progress=False,
               checkpoint_sink=lambda folder, state: kept.setdefault(state.step, shutil.copytree(folder, tmp_path / "ck")))
    resumed = ArtifactStore(tmp_path / "resumed")
    train_base(cfg, resumed, progress=False, resume_from=kept[4])
    rid = run_id_for(cfg)
    for store in (full, resumed):
        assert store.read_json(store.run_config(rid))["token_budget"] == 8 * 2048
    scalars = [s.read_parquet(s.run_scalars(rid)).drop_columns(["wall_s"]).to_pylist() for s in (full, resumed)]
    assert scalars[0] == scalars[1] and scalars[0][-1]["step"] == 8
    geometry = [s.read_parquet(s.geometry_state(rid)).to_pylist() for s in (full, resumed)]
    assert geometry[0] == geometry[1] and geometry[0]
