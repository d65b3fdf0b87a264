"""Q-A pairs for DCM phase 1a (seed 001 §2): each pair is a question Q and an answer A that a frozen
causal LM must reproduce from one per-example soft prompt, Q in one mode and A in the other.
Nothing is downloaded; every loader reads the public file layout of its dataset.

- ``load_squad``: the official SQuAD 2.0 JSON (``data[].paragraphs[].qas[]``). Tier 1: clean
  extractive Q-A. Answer = first gold answer. Unanswerable questions (empty ``answers``) are skipped;
  with ``answerable_only=False`` they are kept with their first ``plausible_answers`` text instead,
  and ones with neither are always skipped. pair_id = the SQuAD id. With ``n``, the subsample is the
  first n pairs when sorted by ``sha256(f"{seed}:{id}")``: stable under file reordering and
  independent of the file's own order; without ``n`` pairs come in file order.
- ``arithmetic_pairs``: "2+3=?" -> "5". Tier 3a: minimal surface form, pure procedural knowledge.
- ``sudoku_pairs``: puzzle grid -> solved grid (9 lines of 9 digits, '.' = empty). Tier 3b:
  structured I/O; every generated puzzle has a unique solution (checked with ``solve_sudoku``).
- ``load_arc``: the public ARC-AGI-1/2 layout (a folder of ``<task_id>.json`` or one such file),
  one pair per test item that has an output. Tier 4: demos + test input -> test output grid.
- ``family_pairs``: the project's synthetic families (``squigglray.families``), answer = str(int).
- ``length_pairs``: capacity sweep over target length as in "Cramming 1568 tokens into a single
  vector": a short fixed question and an L-word random text from a small common-word list.
- ``load_paraphrases``: JSONL of q/a paraphrases attached to pairs (semantic-equivalence option).
- ``load_pairs``: dispatch on ``spec["kind"]``; the config-facing entry point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Grid = list[list[int]]


class DatasetError(ValueError):
    """A data file is unreadable or not in the expected layout; the message names file and place."""


@dataclass(frozen=True)
class QAPair:
    pair_id: str
    question: str
    answer: str
    source: str
    q_variants: tuple[str, ...] = ()
    a_variants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("question", "answer"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"pair {self.pair_id!r}: empty {name}")
        for name in ("q_variants", "a_variants"):
            vs = tuple(getattr(self, name))
            if any(not isinstance(v, str) or not v.strip() for v in vs):
                raise ValueError(f"pair {self.pair_id!r}: {name} must be non-empty strings")
            object.__setattr__(self, name, vs)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from e
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON: {e}") from e


def _need(path: Path, where: str, obj: Any, key: str, typ: type) -> Any:
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: {where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise DatasetError(f"{path}: {where}: missing key {key!r}")
    v = obj[key]
    if not isinstance(v, typ):
        raise DatasetError(f"{path}: {where}.{key}: expected {typ.__name__}, got {type(v).__name__}")
    return v


def _hash_order(ids: list[str], seed: int) -> list[int]:
    return sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).hexdigest())


def _take(path: Path, pairs: list[QAPair], n: int | None) -> list[QAPair]:
    if n is not None and not 0 <= n <= len(pairs):
        raise DatasetError(f"{path}: asked for n={n} pairs but only {len(pairs)} are available")
    return pairs if n is None else pairs[:n]


# ---------------------------------------------------------------- SQuAD 2.0

def load_squad(path: str | Path, n: int | None = None, seed: int = 0, answerable_only: bool = True) -> list[QAPair]:
    path = Path(path)
    doc = _read_json(path)
    pairs: list[QAPair] = []
    seen: set[str] = set()
    for ai, art in enumerate(_need(path, "<root>", doc, "data", list)):
        for pi, par in enumerate(_need(path, f"data[{ai}]", art, "paragraphs", list)):
            pw = f"data[{ai}].paragraphs[{pi}]"
            _need(path, pw, par, "context", str)
            for qi, qa in enumerate(_need(path, pw, par, "qas", list)):
                w = f"{pw}.qas[{qi}]"
                qid = _need(path, w, qa, "id", str)
                question = _need(path, w, qa, "question", str).strip()
                answers = _need(path, w, qa, "answers", list)
                impossible = _need(path, w, qa, "is_impossible", bool) if "is_impossible" in qa else False
                if qid in seen:
                    raise DatasetError(f"{path}: {w}: duplicate id {qid!r}")
                seen.add(qid)
                if not answers and not impossible:
                    raise DatasetError(f"{path}: {w}: answerable question with no answers")
                if not answers:
                    if answerable_only or "plausible_answers" not in qa:
                        continue
                    answers, key = _need(path, w, qa, "plausible_answers", list), "plausible_answers"
                    if not answers:
                        continue
                else:
                    key = "answers"
                text = _need(path, f"{w}.{key}[0]", answers[0], "text", str).strip()
                if not question or not text:
                    raise DatasetError(f"{path}: {w}: empty {'question' if not question else 'answer text'}")
                pairs.append(QAPair(qid, question, text, "squad2"))
    if n is not None:
        pairs = [pairs[i] for i in _hash_order([p.pair_id for p in pairs], seed)]
    return _take(path, pairs, n)


# ---------------------------------------------------------------- arithmetic

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def arithmetic_pairs(n: int, seed: int = 0, max_operand: int = 99, ops: str = "+-*") -> list[QAPair]:
    if not ops or any(o not in _OPS for o in ops):
        raise ValueError(f"ops must be a non-empty subset of {''.join(_OPS)!r}, got {ops!r}")
    ops = "".join(dict.fromkeys(ops))
    if max_operand < 0 or n > (max_operand + 1) ** 2 * len(ops):
        raise ValueError(f"cannot make {n} distinct questions with max_operand={max_operand}, ops={ops!r}")
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        a, b, op = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.choice(ops)
        q = f"{a}{op}{b}=?"
        if q not in seen:
            seen.add(q)
            out.append(QAPair(f"arith:{seed}:{len(out)}", q, str(_OPS[op](a, b)), "arithmetic"))
    return out


# ---------------------------------------------------------------- sudoku

_ALL = 0x3FE  # bits 1..9


def _check_grid(grid: Grid) -> None:
    if (not isinstance(grid, list) or len(grid) != 9
            or any(not isinstance(row, list) or len(row) != 9 for row in grid)
            or any(not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 9 for row in grid for v in row)):
        raise ValueError("sudoku grid must be 9 lists of 9 ints in 0..9 (0 = empty)")


def _search(grid: Grid, limit: int, rng: random.Random | None = None) -> list[Grid]:
    g = [row[:] for row in grid]
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    empty = []
    for r in range(9):
        for c in range(9):
            d = g[r][c]
            if not d:
                empty.append((r, c, r // 3 * 3 + c // 3))
                continue
            bit, b = 1 << d, r // 3 * 3 + c // 3
            if (rows[r] | cols[c] | boxes[b]) & bit:
                return []  # two equal givens in one unit
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
    out: list[Grid] = []

    def rec() -> None:
        best, best_cands, best_n = None, 0, 10
        for cell in empty:
            r, c, b = cell
            if g[r][c]:
                continue
            cands = _ALL & ~(rows[r] | cols[c] | boxes[b])
            k = bin(cands).count("1")
            if k < best_n:
                best, best_cands, best_n = cell, cands, k
                if k <= 1:
                    break
        if best is None:
            out.append([row[:] for row in g])
            return
        r, c, b = best
        digits = [d for d in range(1, 10) if best_cands >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        for d in digits:
            bit = 1 << d
            g[r][c] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            rec()
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            g[r][c] = 0
            if len(out) >= limit:
                return

    rec()
    return out


def solve_sudoku(grid: Grid, limit: int = 2) -> list[Grid]:
    """Up to ``limit`` solutions of ``grid`` (0 = empty) by backtracking on the most constrained cell."""
    _check_grid(grid)
    return _search(grid, limit)


def generate_sudoku(rng: random.Random, holes: int) -> tuple[Grid, Grid]:
    """A random full grid, then cells emptied in random order while the solution stays unique."""
    if not 0 <= holes <= 64:
        raise ValueError(f"holes must be in 0..64 (a sudoku needs >= 17 givens), got {holes}")
    for _ in range(50):
        solution = _search([[0] * 9 for _ in range(9)], 1, rng)[0]
        puzzle = [row[:] for row in solution]
        cells = [(r, c) for r in range(9) for c in range(9)]
        rng.shuffle(cells)
        removed = 0
        for r, c in cells:
            if removed == holes:
                break
            puzzle[r][c] = 0
            if len(_search(puzzle, 2)) == 1:
                removed += 1
            else:
                puzzle[r][c] = solution[r][c]
        if removed == holes:
            return puzzle, solution
    raise ValueError(f"could not make a unique-solution sudoku with {holes} holes in 50 tries")


def sudoku_text(grid: Grid) -> str:
    return "\n".join("".join(str(v) if v else "." for v in row) for row in grid)


def sudoku_pairs(n: int, seed: int = 0, holes: int = 40) -> list[QAPair]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        puzzle, solution = generate_sudoku(rng, holes)
        out.append(QAPair(f"sudoku:{seed}:{holes}:{i}", "Solve the sudoku:\n" + sudoku_text(puzzle),
                          sudoku_text(solution), "sudoku"))
    return out


# ---------------------------------------------------------------- ARC-AGI

def _arc_grid(path: Path, where: str, g: Any) -> str:
    if not isinstance(g, list) or not g or any(not isinstance(row, list) or not row for row in g):
        raise DatasetError(f"{path}: {where}: grid must be a non-empty list of non-empty rows")
    if any(len(row) != len(g[0]) for row in g):
        raise DatasetError(f"{path}: {where}: ragged grid (row lengths {[len(row) for row in g]})")
    for ri, row in enumerate(g):
        for ci, v in enumerate(row):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 9:
                raise DatasetError(f"{path}: {where}[{ri}][{ci}]: cell must be an int 0..9, got {v!r}")
    return "\n".join("".join(map(str, row)) for row in g)


def load_arc(path: str | Path, n: int | None = None) -> list[QAPair]:
    """question = "input:\\n<grid>\\noutput:\\n<grid>" per demo, blank-line separated, then
    "input:\\n<test grid>\\noutput:"; answer = the test output grid (rows of digits)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"), key=lambda p: p.stem)
        if not files:
            raise DatasetError(f"{path}: no <task_id>.json files in folder")
    elif path.is_file():
        files = [path]
    else:
        raise DatasetError(f"{path}: no such file or folder")
    pairs: list[QAPair] = []
    for f in files:
        task = _read_json(f)
        demos = []
        for i, ex in enumerate(_need(f, "<root>", task, "train", list)):
            gi = _arc_grid(f, f"train[{i}].input", _need(f, f"train[{i}]", ex, "input", list))
            go = _arc_grid(f, f"train[{i}].output", _need(f, f"train[{i}]", ex, "output", list))
            demos.append(f"input:\n{gi}\noutput:\n{go}")
        for i, ex in enumerate(_need(f, "<root>", task, "test", list)):
            gi = _arc_grid(f, f"test[{i}].input", _need(f, f"test[{i}]", ex, "input", list))
            if "output" not in ex:
                continue
            go = _arc_grid(f, f"test[{i}].output", _need(f, f"test[{i}]", ex, "output", list))
            q = "\n\n".join(demos + [f"input:\n{gi}\noutput:"])
            pairs.append(QAPair(f"{f.stem}:{i}", q, go, "arc"))
    return _take(path, pairs, n)


# ---------------------------------------------------------------- synthetic families

def family_pairs(families: list[str] | None = None, n_per_family: int = 4, seed: int = 0,
                 level: str = "easy") -> list[QAPair]:
    from squigglray.families import list_families, sample

    out = []
    for fam in families if families is not None else list_families():
        for inst in sample(fam, n_per_family, seed=seed, difficulty=level):
            out.append(QAPair(inst.instance_id, inst.problem, str(inst.answer), f"family:{fam}"))
    return out


# ---------------------------------------------------------------- length sweep

WORDS = tuple("""
the of and to in is you that it he was for on are as with his they at be this have from or one had
by word but not what all were we when your can said there use an each which she do how their if will
up other about out many then them these so some her would make like him into time has look two more
write go see number no way could people my than first water been call who oil its now find long down
day did get come made may part over new sound take only little work know place year live me back give
most very after thing our just name good sentence man think say great where help through much before
line right too mean old any same tell boy follow came want show also around form three small set put
end does another well large must big even such because turn here why ask went men read need land
different home us move try kind hand picture again change off play spell air away animal house point
page letter mother answer found study still learn should world high every near add food between own
below country plant last school father keep tree never start city earth eye light thought head under
story saw left few while along might close something seem next hard open example begin life always
""".split())


def length_pairs(lengths: list[int], n_per_length: int, seed: int = 0, vocab: str | None = None) -> list[QAPair]:
    """``vocab``: whitespace-separated words to draw from (default: ``WORDS``, ~200 common words).
    Each length has its own RNG (seeded with f"{seed}:{L}"), so adding a length changes no other."""
    words = tuple(vocab.split()) if vocab is not None else WORDS
    if len(set(words)) < 2:
        raise ValueError("vocab needs at least 2 distinct words")
    out = []
    for L in lengths:
        if not isinstance(L, int) or L < 1:
            raise ValueError(f"lengths must be positive ints, got {L!r}")
        rng = random.Random(f"{seed}:{L}")
        for i in range(n_per_length):
            out.append(QAPair(f"len{L}:{i}", f"Recite text {i}.", " ".join(rng.choice(words) for _ in range(L)), "length"))
    return out


# ---------------------------------------------------------------- paraphrases

def load_paraphrases(path: str | Path, pairs: list[QAPair]) -> list[QAPair]:
    path = Path(path)
    by_id = {p.pair_id: i for i, p in enumerate(pairs)}
    out = list(pairs)
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from e
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"line {ln}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: {where}: not valid JSON: {e}") from e
        pid = _need(path, where, rec, "pair_id", str)
        if pid not in by_id:
            raise DatasetError(f"{path}: {where}: unknown pair_id {pid!r}")
        if pid in seen:
            raise DatasetError(f"{path}: {where}: duplicate pair_id {pid!r}")
        seen.add(pid)
        extra = {k: rec[k] for k in rec if k not in ("pair_id", "q_variants", "a_variants")}
        if extra:
            raise DatasetError(f"{path}: {where}: unknown keys {sorted(extra)}")
        variants = {}
        for key in ("q_variants", "a_variants"):
            vs = _need(path, where, rec, key, list) if key in rec else []
            if any(not isinstance(v, str) or not v.strip() for v in vs):
                raise DatasetError(f"{path}: {where}.{key}: variants must be non-empty strings")
            variants[key] = tuple(vs)
        out[by_id[pid]] = dataclasses.replace(pairs[by_id[pid]], **variants)
    return out


# ---------------------------------------------------------------- dispatch

_KINDS = {"squad": load_squad, "arithmetic": arithmetic_pairs, "sudoku": sudoku_pairs, "arc": load_arc,
          "families": family_pairs, "length": length_pairs}


def load_pairs(spec: dict[str, Any]) -> list[QAPair]:
    """``{"kind": K, **args}`` -> the loader for K called with args; an optional ``"paraphrases"``
    key (a JSONL path) attaches variants with ``load_paraphrases``."""
    args = dict(spec)
    kind = args.pop("kind", None)
    if kind not in _KINDS:
        raise DatasetError(f"unknown data kind {kind!r}; known kinds: {', '.join(sorted(_KINDS))}")
    para = args.pop("paraphrases", None)
    try:
        inspect.signature(_KINDS[kind]).bind(**args)
    except TypeError as e:
        raise DatasetError(f"bad arguments for data kind {kind!r}: {e}") from e
    pairs = _KINDS[kind](**args)
    return load_paraphrases(para, pairs) if para is not None else pairs
