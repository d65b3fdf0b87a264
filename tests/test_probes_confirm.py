"""Confirmation experiment: corpus arms of equal token budget, paired statistics, end to end on Ray."""

from __future__ import annotations

import json
import random

import pytest

from probe_factory import make_summary
from squigglray.probes.confirm import (
    confirmation_markdown, confirmation_result, corpus_stats, corpus_targets,
)
from squigglray.probes.dis import family_table, score_summaries
from squigglray.schemas.probes import ProbeMetric
from squigglray.training.data import encode

FAMILIES = ["mod_power", "gcd_lcm", "arithmetic", "linear_equation"]
PARAM = {"mod_power": 0.01, "gcd_lcm": 0.08, "arithmetic": 0.02, "linear_equation": 0.04}


def _e(i: int, dim: int = 8) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(dim)]


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory, nano_tokenizer):
    from squigglray.models import build_model

    folder = tmp_path_factory.mktemp("nano-base")
    build_model("nano", nano_tokenizer, 160).save_pretrained(folder)
    nano_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def plan(base_folder, tmp_path_factory):
    from squigglray.paths import ArtifactStore
    from squigglray.probes.config import ProbeConfig
    from squigglray.probes.plan import build_plan

    store = ArtifactStore(tmp_path_factory.mktemp("plan") / "data")
    return build_plan(ProbeConfig(families=FAMILIES, seeds=[0], data={"n_instances": 8}), str(base_folder), store,
                      "exp")


@pytest.fixture(scope="module")
def scored():
    rows = [make_summary(f, 0, _e(i), param_change=PARAM[f]) for i, f in enumerate(FAMILIES)]
    rows += [make_summary(f"control:{k}", 0, _e(5 + i)) for i, k in enumerate(["shuffled_labels", "random_family"])]
    return score_summaries(rows)


def _tokens(tok, xs) -> list[int]:
    return [len(encode(tok, x).ids) for x in xs]


def test_corpus_arms_budget_and_composition(scored, plan, nano_tokenizer):
    top = [r["family_id"] for r in family_table(scored) if r["role"] == "family"][:2]
    assert set(top) == {"gcd_lcm", "linear_equation"}
    t = corpus_targets(scored, plan, nano_tokenizer, 2, None, seed=0)
    assert set(t) == {"corpus:dis", "corpus:random"}
    dis, rnd = t["corpus:dis"], t["corpus:random"]
    assert dis.role == rnd.role == "corpus" and dis.level == rnd.level == plan.config.data.level
    assert len(dis.instances) == plan.config.data.n_instances
    assert {x.family_id for x in dis.instances} == set(top)
    assert [x.family_id for x in dis.instances[:2]] == top  # round-robin in DIS order
    assert {x.family_id for x in rnd.instances} <= set(FAMILIES) and len({x.family_id for x in rnd.instances}) > 2
    budget = sum(_tokens(nano_tokenizer, dis.instances))
    stats = corpus_stats(t, nano_tokenizer)
    assert stats["corpus:dis"]["tokens"] == budget >= stats["corpus:random"]["tokens"]
    longest = max(_tokens(nano_tokenizer, dis.instances + rnd.instances))
    assert budget - stats["corpus:random"]["tokens"] < longest
    eval_problems = {x.instance.problem for x in plan.eval_a + plan.eval_b}
    target_problems = {x.problem for tg in plan.targets.values() for x in tg.instances}
    for tg in t.values():
        problems = [x.problem for x in tg.instances]
        assert not set(problems) & eval_problems and len(set(problems)) == len(problems)
        assert not set(problems) & target_problems  # a fresh draw, not the probes' own instances
    again = corpus_targets(scored, plan, nano_tokenizer, 2, None, seed=0)
    assert {k: v.slice_hash for k, v in again.items()} == {k: v.slice_hash for k, v in t.items()}
    other = corpus_targets(scored, plan, nano_tokenizer, 2, None, seed=1)
    assert other["corpus:dis"].slice_hash != dis.slice_hash


def test_corpus_explicit_budget_and_errors(scored, plan, nano_tokenizer):
    t = corpus_targets(scored, plan, nano_tokenizer, 1, 1500, seed=3)
    assert {x.family_id for x in t["corpus:dis"].instances} == {"gcd_lcm"}
    assert len({x.family_id for x in t["corpus:random"].instances}) > 1  # a mix of every probed family
    for tg in t.values():
        lens = _tokens(nano_tokenizer, tg.instances)
        assert 1500 - max(lens) < sum(lens) <= 1500
    with pytest.raises(ValueError, match="top_families"):
        corpus_targets(scored, plan, nano_tokenizer, 5, None, seed=0)
    with pytest.raises(ValueError, match="empty"):
        corpus_targets(scored, plan, nano_tokenizer, 1, 5, seed=0)
    with pytest.raises(ValueError, match="scored"):
        corpus_targets([make_summary("gcd_lcm", 0)], plan, nano_tokenizer, 1, None, seed=0)


def _corpus(arm: str, seed: int, b_acc: float, b_loss: float, a_acc: float = 0.5, a_loss: float = 1.0):
    def metric(acc, loss):
        return ProbeMetric(n=4, loss_before=2.0, loss_after=loss, token_acc_before=0.5, token_acc_after=0.6,
                           answer_acc_before=0.25, answer_acc_after=acc)

    s = make_summary(f"corpus:{arm}", seed)
    m = s.metrics.model_copy(update={"probe_a": metric(a_acc, a_loss), "probe_b": metric(b_acc, b_loss)})
    return s.model_copy(update={"role": "corpus", "metrics": m})


def test_confirmation_result_statistics_and_verdict():
    rows = [_corpus("dis", s, acc, loss, a_acc=0.6 + 0.1 * s) for s, acc, loss in
            [(0, 0.5, 1.0), (1, 0.6, 0.8), (2, 0.7, 0.9)]]
    rows += [_corpus("random", s, acc, loss) for s, acc, loss in [(0, 0.4, 0.9), (1, 0.45, 1.0), (2, 0.5, 0.8),
                                                                  (3, 0.9, 0.1)]]
    random.Random(0).shuffle(rows)
    r = confirmation_result(rows)
    dis = r["arms"]["dis"]["metrics"]
    assert r["arms"]["dis"]["seeds"] == [0, 1, 2] and r["arms"]["random"]["seeds"] == [0, 1, 2, 3]
    assert dis["probe_b_answer_acc_after"]["mean"] == pytest.approx(0.6)
    assert dis["probe_b_answer_acc_after"]["std"] == pytest.approx(0.1)
    assert dis["probe_b_answer_acc_delta"]["mean"] == pytest.approx(0.35)
    assert dis["probe_b_loss_delta"]["mean"] == pytest.approx(-1.1)
    assert dis["probe_a_answer_acc_after"]["mean"] == pytest.approx(0.7)
    assert dis["probe_a_loss_after"]["std"] == pytest.approx(0.0)
    acc = r["paired"]["probe_b_answer_acc_after"]
    assert acc["seeds"] == [0, 1, 2] and acc["n"] == 3  # seed 3 has no DIS partner
    assert acc["diffs"] == pytest.approx([0.1, 0.15, 0.2])
    assert acc["mean"] == pytest.approx(0.15) and acc["std"] == pytest.approx(0.05)
    half = 4.302652729911275 * 0.05 / 3 ** 0.5
    assert acc["ci95"] == pytest.approx([0.15 - half, 0.15 + half]) and acc["excludes_zero"] is True
    loss = r["paired"]["probe_b_loss_after"]
    assert loss["mean"] == pytest.approx(0.0, abs=1e-12) and loss["excludes_zero"] is False
    assert "holdout answer accuracy DIS-random +0.1500" in r["verdict"]
    assert "DIS corpus better (interval excludes 0)" in r["verdict"]
    assert "holdout loss" in r["verdict"] and "no detectable difference at this scale" in r["verdict"]
    md = confirmation_markdown({**r, "corpus": {"corpus:dis": {"families": ["gcd_lcm"], "n_instances": 8,
                                                               "tokens": 900}}})
    assert "| probe_b_answer_acc_after | 0.6000 ± 0.1000 | 0.5625 ± 0.2287 |" in md
    assert "+0.1500" in md and r["verdict"] in md and "gcd_lcm; 8 instances, 900 tokens" in md
    assert "Not a general claim" in md and "3 seed(s)" in md


def test_confirmation_verdict_no_difference_worse_and_too_few():
    rows = [_corpus("dis", s, acc, 0.9 + 0.1 * s) for s, acc in [(0, 0.5), (1, 0.3)]]
    rows += [_corpus("random", s, acc, 0.5 + 0.05 * s) for s, acc in [(0, 0.3), (1, 0.5)]]
    r = confirmation_result(rows)
    assert r["paired"]["probe_b_answer_acc_after"]["excludes_zero"] is False
    assert "holdout answer accuracy DIS-random +0.0000" in r["verdict"]
    assert "answer accuracy DIS-random +0.0000 (95% CI" in r["verdict"]
    assert "no detectable difference at this scale" in r["verdict"]
    assert "holdout loss DIS-random +0.4250" in r["verdict"]
    assert "DIS corpus worse (interval excludes 0)" in r["verdict"]
    flat = confirmation_result([_corpus(a, s, 0.5 if a == "dis" else 0.25, 1.0) for a in ("dis", "random")
                                for s in (0, 1)])
    assert "DIS corpus better (interval excludes 0, zero spread over seeds)" in flat["verdict"]
    one = confirmation_result([_corpus("dis", 0, 0.5, 1.0), _corpus("random", 0, 0.4, 1.0)])
    assert one["paired"]["probe_b_answer_acc_after"]["ci95"] is None
    assert one["verdict"].startswith("too few paired seeds (n=1)")
    assert "n/a" in confirmation_markdown(one)
    with pytest.raises(ValueError, match="random"):
        confirmation_result([_corpus("dis", 0, 0.5, 1.0)])


def test_run_confirmation_needs_scored_summaries(plan, tmp_path):
    from squigglray.jobs.probe_confirm import run_confirmation
    from squigglray.paths import ArtifactStore
    from squigglray.probes.aggregate import write_summary
    from squigglray.probes.plan import write_plan

    store = ArtifactStore(tmp_path / "data")
    write_plan(store, plan)
    write_summary(store, make_summary("gcd_lcm", 0, experiment_id="exp"))
    with pytest.raises(ValueError, match="no scored summaries"):
        run_confirmation(store, "exp", [0, 1])


@pytest.mark.slow
def test_confirmation_end_to_end(ray_session, base_folder, tmp_path):
    import time

    from squigglray.jobs.probe import run_probe_sweep
    from squigglray.jobs.probe_confirm import run_confirmation
    from squigglray.paths import ArtifactStore
    from squigglray.probes.aggregate import read_summaries
    from squigglray.probes.config import ProbeConfig
    from squigglray.probes.plan import read_plan
    from transformers import AutoTokenizer

    fams = ["mod_power", "gcd_lcm"]
    cfg = ProbeConfig.model_validate({
        "families": fams, "seeds": [0], "events": False, "data": {"n_instances": 8},
        "finetune": {"steps": 4, "batch_size": 4, "capture_every": 2, "max_seq_len": 160, "threads": 1},
        "eval": {"families": fams, "a_per_family": 1, "b_per_family": 1, "capture_batch_size": 2},
        "signature": {"sketch_dim": 16}})
    store = ArtifactStore(tmp_path / "data")
    t0 = time.perf_counter()
    run_probe_sweep(cfg, "e2e", str(base_folder), str(tmp_path / "data"))
    t1 = time.perf_counter()
    plan, scored = read_plan(store, "e2e"), read_summaries(store, "e2e")
    tok = AutoTokenizer.from_pretrained(plan.base.path)
    corpus_seed = next(s for s in range(20) if len({x.family_id for t in corpus_targets(
        scored, plan, tok, 1, None, s).values() for x in t.instances}) == 2)  # the random arm's family differs
    result = run_confirmation(store, "e2e", [0, 1], top_families=1, steps=4, corpus_seed=corpus_seed)
    t2 = time.perf_counter()
    print(f"sweep {t1 - t0:.1f}s, confirmation {t2 - t1:.1f}s")
    saved = json.loads((tmp_path / "data/experiments/e2e/confirmation.json").read_text())
    assert saved["verdict"] == result["verdict"]
    assert saved["arms"]["dis"]["seeds"] == saved["arms"]["random"]["seeds"] == [0, 1]
    assert saved["paired"]["probe_b_answer_acc_after"]["n"] == 2 and saved["steps"] == 4
    c = saved["corpus"]
    assert c["corpus:dis"]["tokens"] >= c["corpus:random"]["tokens"] and len(c["corpus:dis"]["families"]) == 1
    assert (tmp_path / "data/experiments/e2e/confirmation.md").read_text().startswith("## Confirmation")
    assert sorted(p.name for p in (tmp_path / "data/experiments/e2e-confirm/summaries").iterdir()) == [
        "corpus-dis.seed0.json", "corpus-dis.seed1.json", "corpus-random.seed0.json", "corpus-random.seed1.json"]
    assert c["corpus:dis"]["families"] != c["corpus:random"]["families"]
    assert c["corpus:dis"]["tokens"] - c["corpus:random"]["tokens"] < 160
    again = run_confirmation(store, "e2e", [0, 1], top_families=1, steps=4, corpus_seed=corpus_seed)
    assert again["paired"] == result["paired"]  # nothing left to run: the summaries are reused
