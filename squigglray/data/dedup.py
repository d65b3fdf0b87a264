"""Text normalization, stable hashes and a MinHash/LSH near-duplicate index.

The dataset slice keeps a strict holdout: no holdout item may overlap a training item or a
"probe A" item. This module gives the three overlap tests that check uses, and the same tools
serve exact dedup. Everything is pure Python + numpy (no ray) and deterministic across
processes and machines: no Python ``hash()`` anywhere (it is salted per process), shingles are
hashed with blake2b and the MinHash hash functions are derived from blake2b of the seed.

Three kinds of overlap, tested in this order by :class:`ContaminationGuard`:

* **exact** -- the raw strings are byte-identical: ``exact_hash`` (sha256 of the UTF-8 bytes).
* **normalized** -- the strings are equal after :func:`normalize_text`: Unicode NFKC,
  lowercase, LaTeX math delimiters (``$`` -- also an escaped ``\\$``, so money signs go too --
  ``\\(``, ``\\)``, ``\\[``, ``\\]``) and spacing
  commands (``\\,`` ``\\;`` ``\\:`` ``\\!`` ``\\ `` ``\\quad`` ``\\qquad`` ``~``) removed,
  ``\\left``/``\\right`` (and ``\\displaystyle``) dropped, ``\\dfrac``/``\\tfrac`` read as
  ``\\frac``, whitespace collapsed, whitespace around operators and punctuation removed (so
  ``3 + 4 = 7`` equals ``3+4=7``), trailing punctuation stripped. Numbers are kept verbatim,
  so a changed constant gives a different normalized text: ``normalized_hash``.
* **near-duplicate** -- the exact Jaccard similarity of the two texts' shingle sets is at least
  ``threshold``. Shingles (:func:`shingles`) are word 3-grams over the tokens of the normalized
  text, where a token is a run of letters/digits or a single other non-space character, so
  numbers are tokens and ``x^2+1`` reads ``x ^ 2 + 1``; a text of fewer than 3 tokens gives one
  shingle of all its tokens (an empty text gives no shingles and never near-matches anything).

MinHash (:class:`MinHasher`): each shingle is hashed to 32 bits ``x`` (the first 4 bytes of
blake2b of its UTF-8, little-endian), then ``num_perm`` (default 128) hash functions from the
strongly universal multiply-add-shift family ``h_i(x) = ((a_i * x + b_i) mod 2**64) >> 32``
(Dietzfelbinger), with 64-bit ``a_i, b_i`` taken from blake2b of ``(seed, i)``, so they do not
depend on the numpy version. uint64 array arithmetic wraps mod 2**64, so nothing overflows
unexpectedly. The signature is the per-function minimum over the shingles (uint64 values
< 2**32; an empty text gets all 2**64 - 1).

LSH (:class:`NearDupIndex`): the signature is cut into ``bands`` (default 32) bands of
``num_perm // bands`` (default 4) rows; two texts become candidates when any band is identical,
which for Jaccard ``s`` happens with probability ``1 - (1 - s**4)**32``: 0.05 at s = 0.2,
0.23 at 0.3, 0.87 at 0.5, 0.988 at 0.6, 0.998 at 0.65, 0.9998 at 0.7, 1 - 5e-8 at 0.8. The
banding buys recall; precision comes from verification: every candidate is checked by the
**exact Jaccard of the stored shingle sets**, so a reported similarity is exact, not a MinHash
estimate, and nothing below the threshold is ever returned.

Default threshold: **0.6** (word 3-gram Jaccard). The usual 0.8 misbehaves on problems of
20-60 words: every changed word touches up to 3 shingles, so one reworded clause in a 33-word
problem already drops to 0.70. Measured (pinned in ``tests/test_data_dedup.py``):

  same problem, one local edit -- must be flagged
    "Find" -> "Determine" (31 words)                                    0.939
    appended "Express your answer as a common fraction." (33 words)     0.810
    reworded condition "for all n >= 1" -> "for every positive
      integer n" (34 words)                                             0.794
    appended "Express your answer as a fraction." (27 words)            0.788
    reworded clause "both marbles drawn are the same color" ->
      "the two marbles have the same color" (33 words)                  0.700
    appended "Express your answer as a common fraction." (14 words)     0.636
  different problems -- must not be flagged
    same template, every constant changed (CRT, 23 words)               0.375
    shared long boilerplate "Find the number of ordered pairs/triples
      ... of positive integers such that" (31 vs 23 words)              0.180
    "Find the remainder when $3^{100}$ is divided by 7." vs
      "Find the number of positive divisors of 360."                    0.000
    two unrelated long problems                                         0.000

0.6 sits below every single-edit variant (0.64-0.94) and far above problems that merely share
boilerplate (<= 0.18); erring low suits a strict holdout, where a false alarm only drops a
candidate item. Limits: this is a surface check, not paraphrase detection -- two separate
rewrites in a 20-35-word problem score 0.55-0.59 and are missed (e.g. "Compute ... such that"
-> "Find ... for which"). And a problem that differs from a protected one in a single constant
IS flagged whenever the template is long or the constant comes last ("... divided by 7" vs
"... divided by 11": 0.83); among the synthetic families' own template siblings, 0-42% of
pairs per family reach 0.6. Check template-generated items with ``near_dup=False`` (exact and
normalized only) when siblings that differ in their constants are meant to be allowed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLD",
    "Contamination",
    "ContaminationGuard",
    "MinHasher",
    "NearDupIndex",
    "exact_hash",
    "jaccard",
    "normalize_text",
    "normalized_hash",
    "shingles",
    "tokenize",
]

DEFAULT_THRESHOLD = 0.6
MAX_HASH = np.uint64(np.iinfo(np.uint64).max)  # signature slot of an empty shingle set
_SHIFT = np.uint64(32)

# --- normalization -------------------------------------------------------------------------

_LEFT_RIGHT = re.compile(r"\\(?:left|right|displaystyle|textstyle)(?![a-z])")
_FRAC = re.compile(r"\\[dt]frac(?![a-z])")
# to a space: \quad \qquad, \, \; \: \! \<space>, ~, \$ and $, \( \) \[ \]
_TO_SPACE = re.compile(r"\\q?quad(?![a-z])|\\[,;:! $()\[\]]|[~$]")
_OPERATORS = re.escape("+-*/=<>^_()[]{},.;:!?|")
_WS_AROUND_OP = re.compile(rf"\s+(?=[{_OPERATORS}])|(?<=[{_OPERATORS}])\s+")
_TRAILING_PUNCT = " .,;:!?"


def normalize_text(text: str) -> str:
    """Canonical form of a problem text (see the module docstring); numbers kept verbatim."""
    s = unicodedata.normalize("NFKC", text).lower()
    if "\\" in s:
        s = _LEFT_RIGHT.sub("", s)
        s = _FRAC.sub(r"\\frac", s)
        s = _TO_SPACE.sub(" ", s)
    elif "$" in s or "~" in s:
        s = s.replace("$", " ").replace("~", " ")
    s = " ".join(s.split())  # collapse (and strip) all whitespace
    s = _WS_AROUND_OP.sub("", s)
    return s.rstrip(_TRAILING_PUNCT)


def _sha256(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def exact_hash(text: str) -> str:
    """sha256 hex of the raw UTF-8 bytes."""
    return _sha256(text)


def normalized_hash(text: str) -> str:
    """sha256 hex of ``normalize_text(text)``."""
    return _sha256(normalize_text(text))


# --- shingles ------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+|\S")  # letter/digit runs, or any single other non-space char


def tokenize(text: str) -> list[str]:
    """Tokens of the normalized text: letter/digit runs and single symbol characters."""
    out: list[str] = []
    for word in normalize_text(text).split(" "):
        if word.isalnum():  # the common case, and exactly what one [^\W_]+ run matches
            out.append(word)
        elif word:
            out.extend(_TOKEN.findall(word))
    return out


def _shingles_of_tokens(tokens: list[str], n: int) -> set[str]:
    if not tokens:
        return set()
    if len(tokens) < n:
        return {" ".join(tokens)}
    return set(map(" ".join, zip(*(tokens[i:] for i in range(n)))))


def shingles(text: str, n: int = 3) -> set[str]:
    """Word n-grams (joined by one space) of the normalized text's tokens.

    A text of fewer than ``n`` tokens gives one shingle of all its tokens; an empty text none.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return _shingles_of_tokens(tokenize(text), n)


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; 0.0 when both are empty (no evidence of overlap)."""
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


# --- MinHash -------------------------------------------------------------------------------


def _hash_shingles(sh: Iterable[str]) -> np.ndarray:
    """32-bit stable hashes (first 4 bytes of blake2b, little-endian) as uint64."""
    blake2b = hashlib.blake2b
    raw = b"".join([blake2b(s.encode("utf-8"), digest_size=4).digest() for s in sh])
    return np.frombuffer(raw, dtype="<u4").astype(np.uint64)


class MinHasher:
    """MinHash signatures of texts' shingle sets; deterministic given (num_perm, ngram, seed)."""

    def __init__(self, num_perm: int = 128, ngram: int = 3, seed: int = 0):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.num_perm = int(num_perm)
        self.ngram = int(ngram)
        self.seed = int(seed)
        # (a_i, b_i): 64-bit words of blake2b(seed, i), the same on every numpy version and machine
        raw = b"".join(
            hashlib.blake2b(f"squigglray.minhash:{self.seed}:{i}".encode(), digest_size=16).digest()
            for i in range(self.num_perm)
        )
        ab = np.frombuffer(raw, dtype="<u8").astype(np.uint64).reshape(self.num_perm, 2)
        self.a = ab[:, 0].copy()
        self.b = ab[:, 1].copy()

    def shingles(self, text: str) -> set[str]:
        return shingles(text, self.ngram)

    def signature_of_shingles(self, sh: Iterable[str]) -> np.ndarray:
        """Signature of an already computed shingle set, shape (num_perm,), uint64."""
        x = _hash_shingles(sh)
        if x.size == 0:
            return np.full(self.num_perm, MAX_HASH, dtype=np.uint64)
        # multiply-add-shift h(x) = ((a*x + b) mod 2**64) >> 32 (uint64 array arithmetic wraps
        # mod 2**64); the shift is monotone, so shifting the minimum gives the minimum of h
        y = np.multiply.outer(x, self.a)
        y += self.b
        return y.min(axis=0) >> _SHIFT

    def signature(self, text: str) -> np.ndarray:
        """Signature of one text, shape (num_perm,), uint64."""
        return self.signature_of_shingles(self.shingles(text))

    def signatures(self, texts: Iterable[str]) -> np.ndarray:
        """Signatures of many texts, shape (n, num_perm), uint64.

        Each text is one (shingles x num_perm) numpy block; batching several texts into one
        block measured no faster (the blocks fall out of cache), so texts go one at a time.
        """
        out = [self.signature(t) for t in texts]
        if not out:
            return np.empty((0, self.num_perm), dtype=np.uint64)
        return np.stack(out)


# --- LSH index -----------------------------------------------------------------------------


class NearDupIndex:
    """MinHash/LSH index whose answers are verified by exact shingle Jaccard."""

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        num_perm: int = 128,
        bands: int = 32,
        ngram: int = 3,
        seed: int = 0,
    ):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if bands < 1 or num_perm % bands:
            raise ValueError(f"bands ({bands}) must divide num_perm ({num_perm})")
        self.threshold = float(threshold)
        self.bands = int(bands)
        self.rows = num_perm // bands
        self.hasher = MinHasher(num_perm=num_perm, ngram=ngram, seed=seed)
        self._keys: list[str] = []
        self._key_set: set[str] = set()
        self._shingles: list[set[str]] = []
        # per band: band key -> item index, or a list of them once several share the key
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        # a band's rows -> one 64-bit key: dot product with fixed odd constants (mod 2**64); a
        # rare collision only adds a candidate, which verification then rejects
        mix = hashlib.blake2b(b"squigglray.lsh.bands", digest_size=8 * self.rows).digest()
        self._band_mix = np.frombuffer(mix, dtype="<u8").astype(np.uint64) | np.uint64(1)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def _band_keys(self, sig: np.ndarray) -> list[int]:
        return (sig.reshape(self.bands, self.rows) @ self._band_mix).tolist()

    def _insert(self, key: str, sh: set[str], sig: np.ndarray) -> None:
        if key in self._key_set:
            raise ValueError(f"duplicate key {key!r}")
        idx = len(self._keys)
        self._keys.append(key)
        self._key_set.add(key)
        self._shingles.append(sh)
        if not sh:
            return  # an empty text never near-matches anything
        for band, bk in zip(self._buckets, self._band_keys(sig)):
            old = band.setdefault(bk, idx)
            if old != idx:
                if type(old) is int:
                    band[bk] = [old, idx]
                else:
                    old.append(idx)

    def add(self, key: str, text: str) -> None:
        """Index ``text`` under ``key`` (keys must be unique)."""
        sh = self.hasher.shingles(text)
        self._insert(key, sh, self.hasher.signature_of_shingles(sh))

    def add_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Index many (key, text) pairs."""
        for key, text in items:
            self.add(key, text)

    def _verify(self, sh: set[str], sig: np.ndarray) -> list[tuple[str, float]]:
        if not sh:
            return []
        cand: set[int] = set()
        for band, bk in zip(self._buckets, self._band_keys(sig)):
            hit = band.get(bk)
            if hit is None:
                continue
            if type(hit) is int:
                cand.add(hit)
            else:
                cand.update(hit)
        out = []
        for i in cand:
            s = jaccard(sh, self._shingles[i])
            if s >= self.threshold:
                out.append((self._keys[i], s))
        out.sort(key=lambda ks: (-ks[1], ks[0]))
        return out

    def query(self, text: str) -> list[tuple[str, float]]:
        """(key, exact Jaccard) of indexed items with Jaccard >= threshold, by (-sim, key)."""
        sh = self.hasher.shingles(text)
        return self._verify(sh, self.hasher.signature_of_shingles(sh))

    def query_many(self, texts: Iterable[str]) -> list[list[tuple[str, float]]]:
        """``query`` for each of many texts."""
        return [self.query(t) for t in texts]


# --- contamination guard -------------------------------------------------------------------


@dataclass(frozen=True)
class Contamination:
    """Why a candidate item overlaps a protected one."""

    item_key: str
    reason: Literal["exact", "normalized", "near_duplicate"]
    matched_key: str
    similarity: float  # 1.0 for exact / normalized; exact shingle Jaccard for near_duplicate


class ContaminationGuard:
    """Protected items (e.g. the holdout) and a check of candidates against them."""

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        ngram: int = 3,
        num_perm: int = 128,
        bands: int = 32,
        seed: int = 0,
    ):
        self.index = NearDupIndex(
            threshold=threshold, num_perm=num_perm, bands=bands, ngram=ngram, seed=seed
        )
        self._exact: dict[str, str] = {}
        self._normalized: dict[str, str] = {}

    @property
    def threshold(self) -> float:
        return self.index.threshold

    def __len__(self) -> int:
        return len(self.index)

    def protect(self, key: str, text: str) -> None:
        """Add a protected item to the exact, normalized and near-duplicate indexes.

        When several protected items share a hash, matches report the first one protected.
        """
        self.index.add(key, text)  # raises on a duplicate key before anything else changes
        self._exact.setdefault(exact_hash(text), key)
        self._normalized.setdefault(normalized_hash(text), key)

    def check(self, key: str, text: str, near_dup: bool = True) -> Contamination | None:
        """First overlap found, in the order exact, normalized, near_duplicate (best match)."""
        hit = self._exact.get(exact_hash(text))
        if hit is not None:
            return Contamination(key, "exact", hit, 1.0)
        hit = self._normalized.get(normalized_hash(text))
        if hit is not None:
            return Contamination(key, "normalized", hit, 1.0)
        if near_dup:
            matches = self.index.query(text)
            if matches:
                mkey, sim = matches[0]
                return Contamination(key, "near_duplicate", mkey, sim)
        return None
