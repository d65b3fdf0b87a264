"""squigglray.data.dedup: normalization, hashes, MinHash/LSH near-duplicates, contamination guard.

Pure Python + numpy, no ray. The Jaccard values in the near-duplicate test ids are the measured
word-3-gram shingle similarities of each pair (pinned below to +-0.005); they are the numbers the
module docstring quotes to justify the default threshold.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from squigglray.data.dedup import (
    DEFAULT_THRESHOLD,
    Contamination,
    ContaminationGuard,
    MinHasher,
    NearDupIndex,
    exact_hash,
    jaccard,
    normalize_text,
    normalized_hash,
    shingles,
    tokenize,
)

ROOT = Path(__file__).resolve().parents[1]

# --- normalization and hashes --------------------------------------------------------------


def test_normalize_variants_share_normalized_hash():
    variants = [
        r"Find $\dfrac{1}{2} + \frac{1}{3}$.",
        r"find \(\tfrac{1}{2}+\frac{1}{3}\)",
        "FIND  $\\frac {1}{2}\\,+\\,\\frac{1}{3}$ .",
        "Find \\[\\frac{1}{2} \\; + \\quad \\frac{1}{3}\\]",
        "Find~$\\frac{1}{2}\\!+\\frac{1}{3}$?",
        "\uff26\uff49\uff4e\uff44\u00a0$\\frac{1}{2}$\n\t+ $\\frac{1}{3}$",  # fullwidth, nbsp
    ]
    assert len({exact_hash(v) for v in variants}) == len(variants)
    assert {normalize_text(v) for v in variants} == {r"find \frac{1}{2}+\frac{1}{3}"}
    assert len({normalized_hash(v) for v in variants}) == 1


def test_normalize_operators_delimiters_and_punctuation():
    assert normalize_text("3 + 4 = 7") == normalize_text("3+4=7") == "3+4=7"
    assert normalize_text(r"Compute $\left( x + 1 \right)^2$ .") == "compute(x+1)^2"
    assert normalize_text("  What is 2, 3 , or 5 ?!  ") == "what is 2,3,or 5"
    assert normalize_text(r"$a \Leftarrow b$ and $\rightarrow$") == r"a \leftarrow b and \rightarrow"
    assert normalize_text("It costs \\$5.") == "it costs 5"
    assert normalize_text("") == ""


def test_changed_number_changes_normalized_hash():
    a = "Find the remainder when $3^{100}$ is divided by 7."
    assert normalized_hash(a) == normalized_hash("find the remainder when 3^{100} is divided by 7")
    assert normalized_hash(a) != normalized_hash("Find the remainder when $3^{100}$ is divided by 11.")
    assert normalized_hash(a) != normalized_hash("Find the remainder when $3^{101}$ is divided by 7.")
    assert normalized_hash("x = 1.5") != normalized_hash("x = 15")


def test_hashes_are_sha256_hex():
    assert exact_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    assert normalized_hash(" ABC. ") == hashlib.sha256(b"abc").hexdigest()
    assert exact_hash("é") == hashlib.sha256("é".encode()).hexdigest()


# --- tokens, shingles, jaccard -------------------------------------------------------------


def test_tokenize_and_shingles():
    assert tokenize("$x^2+1$") == ["x", "^", "2", "+", "1"]
    assert tokenize("Let n_1 = 120.") == ["let", "n", "_", "1", "=", "120"]
    assert tokenize("Αβγ x² café_1 ≤ 3") == ["αβγ", "x2", "café", "_", "1", "≤", "3"]
    assert shingles("x^2+1") == {"x ^ 2", "^ 2 +", "2 + 1"}
    assert shingles("a b c d", n=2) == {"a b", "b c", "c d"}
    assert shingles("x^2") == {"x ^ 2"}
    assert shingles("Hello") == {"hello"}  # fewer than n tokens: one shingle of them all
    assert shingles("two words") == {"two words"}
    assert shingles("") == set() and shingles(" $ $ ") == set()
    with pytest.raises(ValueError):
        shingles("a b", n=0)


def test_jaccard():
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    assert jaccard({1}, {1}) == 1.0
    assert jaccard({1}, {2}) == 0.0
    assert jaccard(set(), {1}) == 0.0
    assert jaccard(set(), set()) == 0.0


# --- near-duplicates on realistic problems ------------------------------------------------

MARBLES = (
    "A bag contains 5 red marbles, 4 blue marbles and 3 green marbles. Two marbles are drawn "
    "at random without replacement. What is the probability that both marbles drawn are the "
    "same color?"
)
PAIRS_GCD = (
    "Find the number of ordered pairs $(a, b)$ of positive integers such that $a + b = 100$ "
    "and the greatest common divisor of $a$ and $b$ is equal to 5."
)
TRIANGLE = (
    "Triangle $ABC$ has side lengths $AB = 13$, $BC = 14$ and $CA = 15$. Let $H$ be the foot "
    "of the altitude from $A$ to side $BC$. Find the length of the segment $BH$."
)
SEQUENCE = (
    r"Let $a_1, a_2, a_3, \ldots$ be a sequence with $a_1 = 2$ and $a_{n+1} = a_n^2 - a_n + 1$ "
    r"for all $n \geq 1$. Find the remainder when $a_{10}$ is divided by 1000."
)
DIVISOR = (
    "A positive divisor of 60 is chosen uniformly at random from all of its positive divisors. "
    "What is the probability that it is a multiple of 4?"
)
DICE = "What is the probability that the sum of two fair six-sided dice is 7?"
CRT = (
    "Find the smallest non-negative integer x such that x leaves remainder 2 when divided by 7 "
    "and remainder 0 when divided by 2."
)

# (id, a, b, measured Jaccard): same problem, one local edit -> must be flagged
DUPLICATES = [
    ("find_to_determine", PAIRS_GCD, PAIRS_GCD.replace("Find", "Determine"), 0.939),
    (
        "reworded_clause",
        MARBLES,
        MARBLES.replace("both marbles drawn are the same", "the two marbles have the same"),
        0.700,
    ),
    (
        "reworded_condition",
        SEQUENCE,
        SEQUENCE.replace(r"for all $n \geq 1$", "for every positive integer $n$"),
        0.794,
    ),
    ("added_common_fraction", MARBLES, MARBLES + " Express your answer as a common fraction.", 0.810),
    ("added_fraction_27_words", DIVISOR, DIVISOR + " Express your answer as a fraction.", 0.788),
    ("added_sentence_14_words", DICE, DICE + " Express your answer as a common fraction.", 0.636),
]
# different problems -> must not be flagged
DISTINCT = [
    (
        "shared_boilerplate",
        "Find the remainder when $3^{100}$ is divided by 7.",
        "Find the number of positive divisors of 360.",
        0.000,
    ),
    (
        "shared_long_boilerplate",
        PAIRS_GCD,
        "Find the number of ordered triples $(a, b, c)$ of positive integers such that "
        r"$abc = 2310$ and $a \le b \le c$.",
        0.180,
    ),
    ("unrelated_long", MARBLES, TRIANGLE, 0.000),
    (
        "same_template_all_constants_changed",
        CRT,
        CRT.replace("2 when divided by 7", "5 when divided by 11").replace("0 when divided by 2", "8 when divided by 10"),
        0.375,
    ),
]


def _jac(a: str, b: str) -> float:
    return jaccard(shingles(a), shingles(b))


def test_default_threshold_value():
    assert DEFAULT_THRESHOLD == 0.6
    assert NearDupIndex().threshold == ContaminationGuard().threshold == DEFAULT_THRESHOLD


@pytest.mark.parametrize(
    "a,b,measured", [p[1:] for p in DUPLICATES], ids=[f"{p[0]}-J={p[3]:.3f}" for p in DUPLICATES]
)
def test_near_duplicates_are_flagged(a, b, measured):
    j = _jac(a, b)
    assert j == pytest.approx(measured, abs=0.005)
    assert normalized_hash(a) != normalized_hash(b)  # so only the near-dup check can catch it
    assert j >= DEFAULT_THRESHOLD
    idx = NearDupIndex()
    idx.add("orig", a)
    assert idx.query(b) == [("orig", j)]


@pytest.mark.parametrize(
    "a,b,measured", [p[1:] for p in DISTINCT], ids=[f"{p[0]}-J={p[3]:.3f}" for p in DISTINCT]
)
def test_distinct_problems_are_not_flagged(a, b, measured):
    j = _jac(a, b)
    assert j == pytest.approx(measured, abs=0.005)
    assert j < DEFAULT_THRESHOLD
    idx = NearDupIndex()
    idx.add("orig", a)
    assert idx.query(b) == []


def test_query_sorted_by_similarity_then_key_and_validates():
    idx = NearDupIndex(threshold=0.5)
    idx.add("b", MARBLES)
    idx.add("a", MARBLES)
    idx.add("c", MARBLES + " Express your answer as a common fraction.")
    idx.add("t", TRIANGLE)
    idx.add("empty", "")
    got = idx.query(MARBLES)
    assert [k for k, _ in got] == ["a", "b", "c"]
    assert got[0][1] == got[1][1] == 1.0 and 0.5 <= got[2][1] < 1.0
    assert idx.query("") == []  # an empty text never near-matches
    assert len(idx) == 5 and "t" in idx
    with pytest.raises(ValueError, match="duplicate key"):
        idx.add("a", "anything")
    with pytest.raises(ValueError, match="must divide"):
        NearDupIndex(num_perm=128, bands=30)
    with pytest.raises(ValueError):
        NearDupIndex(threshold=0.0)


# --- LSH recall on synthetic near-duplicates -----------------------------------------------


def _synthetic_texts(rng: np.random.Generator, n: int, vocab: int = 3000, lo: int = 35, hi: int = 46):
    words = np.array([f"w{i}" for i in range(vocab)])
    texts = [" ".join(words[rng.integers(0, vocab, int(rng.integers(lo, hi)))]) for _ in range(n)]
    return texts, words


def _perturb(rng: np.random.Generator, text: str, words: np.ndarray) -> str:
    toks = text.split()
    for _ in range(int(rng.integers(1, 3))):  # 1-2 edits
        i = int(rng.integers(len(toks)))
        if rng.random() < 0.5:
            del toks[i]
        else:
            toks[i] = str(words[rng.integers(len(words))])
    return " ".join(toks)


def test_lsh_recall_and_no_false_positives():
    rng = np.random.default_rng(1234)
    originals, words = _synthetic_texts(rng, 300)
    distractors, _ = _synthetic_texts(rng, 700)
    variants = [_perturb(rng, t, words) for t in originals]
    idx = NearDupIndex()
    idx.add_many((f"o{i}", t) for i, t in enumerate(originals))
    for i, t in enumerate(distractors):
        idx.add(f"d{i}", t)
    thr = idx.threshold
    eligible = found = 0
    for i, v in enumerate(variants):
        res = idx.query(v)
        assert all(s >= thr for _, s in res)
        for k, s in res:  # reported similarities are exact Jaccard, not estimates
            ref = originals[int(k[1:])] if k[0] == "o" else distractors[int(k[1:])]
            assert s == _jac(v, ref)
        true = _jac(v, originals[i])
        if true >= thr + 0.05:
            eligible += 1
            found += any(k == f"o{i}" for k, _ in res)
    assert eligible >= 250, eligible
    assert found / eligible >= 0.95, (found, eligible)
    assert idx.query_many(variants[:20]) == [idx.query(v) for v in variants[:20]]


# --- contamination guard -------------------------------------------------------------------


def test_contamination_guard_reasons():
    g = ContaminationGuard()
    g.protect("h1", MARBLES)
    g.protect("h2", TRIANGLE)
    g.protect("h3", "Find the remainder when $3^{100}$ is divided by 7.")
    assert len(g) == 3

    assert g.check("c1", MARBLES) == Contamination("c1", "exact", "h1", 1.0)
    assert g.check("c2", "find the remainder when 3^{100} is divided by 7") == Contamination(
        "c2", "normalized", "h3", 1.0
    )
    near = g.check("c3", MARBLES + " Express your answer as a common fraction.")
    assert near is not None and near.reason == "near_duplicate" and near.matched_key == "h1"
    assert near.similarity == pytest.approx(0.810, abs=0.005)
    assert g.check("c4", "Find the number of positive divisors of 360.") is None
    assert g.check("c5", "Find the remainder when $3^{100}$ is divided by 11.", near_dup=True) is not None

    # near_dup=False skips only the near-duplicate stage
    assert g.check("c3", MARBLES + " Express your answer as a common fraction.", near_dup=False) is None
    assert g.check("c1", MARBLES, near_dup=False).reason == "exact"
    assert g.check("c2", "FIND the remainder when $3^{100}$ is divided by 7", near_dup=False).reason == "normalized"
    with pytest.raises(ValueError, match="duplicate key"):
        g.protect("h1", "another text")
    assert len(g) == 3


def test_contamination_guard_best_near_dup_and_first_key():
    g = ContaminationGuard(threshold=0.5)
    g.protect("weak", MARBLES.replace("both marbles drawn are the same", "the two marbles have the same"))
    g.protect("strong", MARBLES + " Express your answer as a common fraction.")
    g.protect("copy", MARBLES + " Express your answer as a common fraction.")  # same text, later key
    hit = g.check("x", MARBLES)
    assert hit.reason == "near_duplicate"
    assert hit.matched_key == "copy"  # best similarity; tie between copy/strong -> smaller key
    assert g.check("y", MARBLES + " Express your answer as a common fraction.").matched_key == "strong"


# --- determinism ---------------------------------------------------------------------------

_GOLDEN_TEXT = "Find the remainder when $3^{100}$ is divided by 7."


def test_signatures_deterministic_and_vectorized():
    m1, m2 = MinHasher(seed=7), MinHasher(seed=7)
    texts = [MARBLES, TRIANGLE, "", "x", _GOLDEN_TEXT, DICE]
    s1 = m1.signatures(texts)
    assert s1.shape == (len(texts), 128) and s1.dtype == np.uint64
    assert np.array_equal(s1, m2.signatures(texts))
    assert np.array_equal(s1, np.stack([m1.signature(t) for t in texts]))
    assert not np.array_equal(s1, MinHasher(seed=8).signatures(texts))
    assert (s1[2] == np.iinfo(np.uint64).max).all()  # empty text
    assert (s1[[0, 1, 3, 4, 5]] < 1 << 32).all()
    assert MinHasher().signatures([]).shape == (0, 128)


def test_signature_is_identical_in_a_fresh_process():
    here = MinHasher(seed=3).signature(_GOLDEN_TEXT).astype("<u8").tobytes().hex()
    code = (
        "from squigglray.data.dedup import MinHasher; "
        f"print(MinHasher(seed=3).signature({_GOLDEN_TEXT!r}).astype('<u8').tobytes().hex())"
    )
    for hashseed in ("1", "987654"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": hashseed},
        )
        assert out.stdout.strip() == here


def test_signature_golden_value():
    # pins the whole pipeline (normalize, tokenize, blake2b, permutations) across versions/machines
    sig = MinHasher(seed=0).signature(_GOLDEN_TEXT).astype("<u8").tobytes()
    assert hashlib.sha256(sig).hexdigest() == GOLDEN_SHA


GOLDEN_SHA = "2740cf68074fefa9c1405a08d3633461e5f6ba5eff2b106baca50e3f104e111e"


def test_module_does_not_import_ray():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('dedup_alone', {str(ROOT / 'squigglray/data/dedup.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['dedup_alone'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
        "print(mod.normalize_text('OK'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


# --- speed ---------------------------------------------------------------------------------


def test_speed_index_20k_query_5k():
    rng = np.random.default_rng(99)
    texts, words = _synthetic_texts(rng, 20_000, vocab=5000)
    queries = [_perturb(rng, texts[int(i)], words) for i in rng.integers(0, len(texts), 2500)]
    queries += _synthetic_texts(rng, 2500, vocab=5000)[0]
    t0 = time.perf_counter()
    idx = NearDupIndex()
    for i, t in enumerate(texts):
        idx.add(f"k{i}", t)
    t1 = time.perf_counter()
    hits = sum(bool(idx.query(q)) for q in queries)
    t2 = time.perf_counter()
    print(f"index 20k: {t1 - t0:.2f}s, query 5k: {t2 - t1:.2f}s, hits {hits}")
    assert len(idx) == 20_000 and hits >= 2400
    assert t2 - t0 < 20.0
