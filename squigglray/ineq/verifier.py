"""Mechanical verifier for inequality claims and proof chains (the contract in `problems.py`).

A claim (`check_claim`) is first attacked numerically: sampling over the domain (log-uniform
magnitudes, the boundary, the equality case, a short local search; on a constraint surface via a
rescaling or a solved variable), and any violation is re-checked at ~30 digits so float noise
never refutes a true claim. Then it is proved: SymPy for exact rewrites ("=", also on the
constraint surface) and for differences whose factored form is visibly nonnegative; else Z3
nonlinear real arithmetic on the negated claim, with roots and quotients as auxiliary variables
(``r >= 0, r**q == x``; ``d * y == 1``) and a homogeneous claim over positive reals normalized
by fixing one variable to 1. ``unsat`` -> "proved"; a Z3 model is re-checked numerically before
"refuted". "proved" thus only comes from SymPy/Z3 and "refuted" only from a checked point.

A *proof* is scored by another standard (`check_proof`, `judge_completion`): every step must be
justified by the rule book of `squigglray.ineq.proof_check` (exact rewrites, matching lemma
instances, evidently nonnegative gaps); what the solver proves of the chain is reported apart as
``claim_verified``.

Vacuous proofs are blocked: a claim whose sides are real at no sampled point (or whose Z3 domain
is empty) stays "unknown", and a proof chain with an expression that is not real somewhere the
claim is (``sqrt(a)`` over the reals) is invalid. Expression text may come from a model, so its
tokens are whitelisted before SymPy evaluates it and oversized constant powers are refused.

All SymPy/Z3 work runs in a `TimedWorker` subprocess under a deadline (SymPy can hang, and signal
alarms do not work off the main thread): the public functions here only orchestrate, the
underscore functions run in the worker. This module must not import ray.
"""

from __future__ import annotations

import ast
import io
import keyword
import math
import re
import threading
import time
import tokenize
from dataclasses import asdict, dataclass, field, replace
from typing import Any, get_args

import numpy as np
import sympy as sp
from sympy.parsing.sympy_parser import convert_xor, parse_expr, rationalize, standard_transformations

from squigglray.ineq.problems import Domain, Problem, Rel, Step
from squigglray.ineq.proof_text import ProofParseError, parse_answer, parse_proof
from squigglray.verify.worker import TimedWorker, WorkerError, WorkerTimeout

__all__ = ["ExpressionError", "ProofVerdict", "Verdict", "check_claim", "check_equality_case", "check_proof",
           "check_step", "default_worker", "judge_completion"]

_RELS = get_args(Rel)
_DOMAINS = get_args(Domain)
_GRACE_S = 0.5  # past Z3's own timeout before the worker is killed (a kill costs a restart)
_TOL = 1e-12  # relative violation that refutes, measured at 30 digits
_SCREEN = 1e-9  # relative violation in floats that makes a point worth re-checking


class ExpressionError(ValueError):
    """An expression string that is not a valid expression over the problem's variables."""


@dataclass
class Verdict:
    status: str  # "proved" | "refuted" | "unknown"
    reason: str
    counterexample: dict[str, float] | None = None
    seconds: float = 0.0
    method: str = ""  # "sympy" | "z3" | "sampling" | "lemma:<name>" | "exact" | ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProofVerdict:
    valid: bool  # every step justified by the rule book (`proof_check`), ends exact, equality line right
    status: str  # "valid" | "invalid" | "incomplete" | "circular" | "unjustified" | "unknown"
    step_verdicts: list[Verdict] = field(default_factory=list)  # per step: is it true (rule or solver)
    reasons: list[str] = field(default_factory=list)
    justification: list[dict] = field(default_factory=list)  # per step: {"step", "rule", "justified", "why"}
    claim_verified: bool | None = False  # the chain holds by SymPy/Z3 (the old check); None: not computed
    claim_status: str = ""  # "valid" | "invalid" | "incomplete" | "unknown" | "" (not computed)
    equality: dict | None = None  # {"written", "ok", "why"} for the Equality line

    def to_dict(self) -> dict:
        return asdict(self)


# ================================ parent side: orchestration ================================
_DEFAULT: TimedWorker | None = None
_DEFAULT_LOCK = threading.Lock()


def default_worker() -> TimedWorker:
    """The shared worker (created on first use; thread-safe; preloads this module)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = TimedWorker(preload=(__name__, "squigglray.ineq.proof_check"))
        return _DEFAULT


def _remote(worker: TimedWorker | None, name: str, *args, timeout_s: float):
    """Run this module's worker-side `name` (or ``module:name``); a remote ExpressionError is
    re-raised as itself."""
    try:
        return (worker or default_worker()).call(name if ":" in name else f"{__name__}:{name}", *args,
                                                 timeout_s=timeout_s)
    except WorkerError as e:
        if e.remote_type.endswith("ExpressionError"):
            raise ExpressionError(e.remote_message) from None
        raise


def _since(t0: float) -> float:
    return round(time.monotonic() - t0, 4)


def _spec(lhs, rel, rhs, variables, domain, constraint) -> dict:
    if rel not in _RELS:
        raise ValueError(f"relation {rel!r} is not one of {_RELS}")
    if domain not in _DOMAINS:
        raise ValueError(f"domain {domain!r} is not one of {_DOMAINS}")
    return {"lhs": str(lhs), "rel": rel, "rhs": str(rhs), "variables": [str(v) for v in variables],
            "domain": domain, "constraint": constraint or None}


def check_claim(lhs: str, rel: str, rhs: str, variables, domain: str, constraint: str | None = None,
                timeout_s: float = 2.0, samples: int = 300, seed: int = 0, near: dict | None = None,
                worker: TimedWorker | None = None) -> Verdict:
    """Decide ``lhs rel rhs`` for all `variables` in `domain` (on ``constraint == 0`` if given).

    `near` (variable -> value or SymPy string) focuses part of the sampling on the equality case.
    `timeout_s` bounds the solver time (sampling plus proving; a worker restart after a kill adds
    its import time). Raises ExpressionError for an expression that does not parse.
    """
    spec = _spec(lhs, rel, rhs, variables, domain, constraint)
    worker = worker or default_worker()
    with worker.reserved():  # the budget starts when the worker is ours and running
        try:
            worker.start()
        except WorkerError as e:
            return Verdict("unknown", f"verifier worker unavailable: {e.remote_message}", None, 0.0, "")
        return _check_claim(worker, spec, timeout_s, samples, seed, near)


def _check_claim(worker: TimedWorker, spec: dict, timeout_s: float, samples: int, seed: int, near) -> Verdict:
    t0 = time.monotonic()

    def left() -> float:
        return max(0.05, timeout_s - (time.monotonic() - t0))

    try:
        sampled = _remote(worker, "_refute_by_sampling", spec, samples, seed, near, timeout_s=left())
        if sampled["cex"]:
            return Verdict("refuted", sampled["cex"]["reason"], sampled["cex"]["point"], _since(t0), "sampling")
        if sampled["defined"] == 0:  # a proof would be vacuous
            return Verdict("unknown", "no sampled point of the domain (and constraint surface) has both sides "
                           "real; a proof would be vacuous", None, _since(t0), "sampling")
        budget = left()
        res = _remote(worker, "_prove", spec, budget, sampled["defined"] is None, timeout_s=budget + _GRACE_S)
    except WorkerTimeout as e:
        return Verdict("unknown", f"no decision within {timeout_s:g} s ({e.func.split(':')[-1]} killed)",
                       None, _since(t0), "")
    except WorkerError as e:
        return Verdict("unknown", f"verifier error {e.remote_type}: {e.remote_message}", None, _since(t0), "")
    return Verdict(res["status"], res["reason"], res.get("point"), _since(t0), res["method"])


def check_equality_case(problem_like, point: dict[str, str], timeout_s: float = 2.0,
                        worker: TimedWorker | None = None) -> Verdict:
    """Is `point` (variable -> SymPy constant) in the domain, on the constraint, and lhs == rhs
    there, in exact arithmetic? `problem_like`: a Problem, or any object/dict with variables,
    domain, lhs, rhs and constraint."""
    spec = _spec(_get(problem_like, "lhs"), "=", _get(problem_like, "rhs"), _get(problem_like, "variables"),
                 _get(problem_like, "domain"), _get(problem_like, "constraint"))
    t0 = time.monotonic()
    try:
        res = _remote(worker, "_equality_case", spec, {str(k): str(v) for k, v in point.items()},
                      timeout_s=timeout_s)
    except WorkerTimeout:
        return Verdict("unknown", f"exact evaluation did not finish within {timeout_s:g} s", None, _since(t0), "exact")
    except WorkerError as e:
        return Verdict("unknown", f"verifier error {e.remote_type}: {e.remote_message}", None, _since(t0), "exact")
    return Verdict(res["status"], res["reason"], res.get("point"), _since(t0), "exact")


def _get(obj, name: str):
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def _as_step(step) -> Step:
    return step if isinstance(step, Step) else Step(**step)


def check_step(prev_expr: str, step, variables, domain: str, constraint: str | None = None,
               timeout_s: float = 2.0, near: dict | None = None, worker: TimedWorker | None = None) -> Verdict:
    """Check one link ``prev_expr step.rel step.rhs``.

    A cited lemma (am_gm, weighted_am_gm, cauchy_schwarz, titu, square_nonneg) is accepted when
    the step's gap is a positive constant times the lemma instance's gap and the lemma's side
    conditions hold; otherwise (and for "=", "by constraint" and uncited steps) the step is
    checked as a plain claim, on the constraint surface when there is one, with the lemma
    mismatch noted in the reason. This is the solver's truth of a link (side conditions by the
    solver too), not the proof score: `check_proof` justifies steps by `proof_check`'s rule book.
    """
    step = _as_step(step)
    t0 = time.monotonic()
    note = ""
    if step.rel != "=" and step.lemma and step.lemma != "constraint":
        match = _match(prev_expr, step, variables, domain, timeout_s, worker)
        if match["ok"]:
            bad = _side_conditions(match["side"], variables, domain, constraint, timeout_s, worker)
            if bad is None:
                return Verdict("proved", match["reason"], None, _since(t0), f"lemma:{step.lemma}")
            match["reason"] = f"{match['reason']}, but side condition {bad}"
        note = match["reason"] + "; as a plain step: "
    v = check_claim(prev_expr, step.rel, step.rhs, variables, domain, constraint, timeout_s, near=near, worker=worker)
    return replace(v, reason=note + v.reason, seconds=_since(t0))


def _match(prev_expr, step: Step, variables, domain, timeout_s, worker) -> dict:
    try:
        return _remote(worker, "_match_lemma", str(prev_expr), step.rel, step.rhs, step.lemma, step.args,
                       [str(v) for v in variables], domain, timeout_s=timeout_s)
    except WorkerTimeout:
        return {"ok": False, "reason": f"matching {step.lemma} did not finish within {timeout_s:g} s"}
    except (WorkerError, ExpressionError) as e:
        return {"ok": False, "reason": f"{step.lemma} could not be matched: {e}"}


def _side_conditions(side, variables, domain, constraint, timeout_s, worker) -> str | None:
    """None when every side condition is proved, else a description of the first that is not."""
    for expr, rel in side:
        v = check_claim(expr, rel, "0", variables, domain, constraint, timeout_s, samples=100, worker=worker)
        if v.status != "proved":
            return f"{expr} {rel} 0 is {'false' if v.status == 'refuted' else 'not proved'} ({v.reason})"
    return None


def _short(expr: str, n: int = 60) -> str:
    expr = " ".join(str(expr).split())
    return expr if len(expr) <= n else expr[: n - 3] + "..."


_UP, _DOWN = {">=", ">"}, {"<=", "<"}


def _composition_error(claim_rel: str, rels: list[str]) -> str | None:
    """Why the chain's relations do not compose to the claim's relation (None when they do)."""
    up = [i for i, r in enumerate(rels, 1) if r in _UP]
    down = [i for i, r in enumerate(rels, 1) if r in _DOWN]
    if up and down:
        return f"the chain mixes directions: step {up[0]} uses {rels[up[0] - 1]!r}, step {down[0]} uses " \
               f"{rels[down[0] - 1]!r}"
    if claim_rel == "=" and (up or down):
        k = (up or down)[0]
        return f"the claim is an equality but step {k} uses {rels[k - 1]!r}"
    wrong = down if claim_rel in _UP else up if claim_rel in _DOWN else []
    if wrong:
        return f"step {wrong[0]} uses {rels[wrong[0] - 1]!r} but the claim is {claim_rel!r}"
    strict = {">": ">", "<": "<"}.get(claim_rel)
    if strict and strict not in rels:
        return f"the claim is strict ({claim_rel!r}) but no step is strict"
    return None


_PC = "squigglray.ineq.proof_check"  # the rule book's worker-side checks
_STATUS_ORDER = ("invalid", "incomplete", "circular", "unjustified", "unknown")


def check_proof(problem: Problem, start: str, steps, timeout_s: float = 2.0, worker: TimedWorker | None = None,
                equality_text: str | None = None, verify_claim: bool = True) -> ProofVerdict:
    """Check the chain ``start rel1 e1 rel2 e2 ...`` against the problem's claim by the rule book
    of `squigglray.ineq.proof_check` (its module docstring).

    ``valid`` (status "valid") iff every step is justified by a rule (an exact SymPy rewrite, a
    matching lemma instance with its side conditions, an evidently nonnegative gap), the chain
    starts at the claim's lhs and ends at its rhs by exact SymPy identity (also on the constraint
    surface), its relations compose to the claim's, no chain expression is undefined where the claim
    is defined, and a written Equality line (`equality_text`) is right -- present and right where the
    problem asks for the equality case. Otherwise the status is the worst that is wrong, in this
    order: "invalid" (relations do not compose, an expression is undefined or unparseable, a step or
    a missing end link is false, the Equality line is wrong), "incomplete" (a missing end link is
    true or undecided, or the asked-for Equality line is missing), "circular" (a step restates the
    claim, or cites the problem's own result for all of it), "unjustified" (a step, an end or the
    Equality line that no rule covers, however true), "unknown" (a check did not finish).

    ``claim_verified`` is the solver's view (the check made before the rule book): every step is true
    (justified, or proved by SymPy/Z3) and the ends meet the claim, exactly or by the solver; with
    ``claim_status`` "valid" | "invalid" | "incomplete" | "unknown". ``verify_claim=False`` skips the
    solver on unjustified steps and ends (claim_verified is then None unless every step is justified
    and the ends are exact); the proof score does not need it. Checking stops at the first false or
    unparseable step. `timeout_s` is per check. Without the solver, checking also stops after the
    steps when one of them is not justified (the ends and the Equality line are not checked then),
    and the sampled check that every chain expression is real where the claim is runs only once
    every step is justified.
    """
    from squigglray.ineq.proof_check import asks_equality

    steps = [_as_step(s) for s in steps]
    if not steps:
        return ProofVerdict(False, "invalid", [], ["the proof has no steps"], claim_status="invalid")
    err = _composition_error(problem.rel, [s.rel for s in steps])
    if err:
        return ProofVerdict(False, "invalid", [], [err], claim_status="invalid")
    ctx = _Ctx(problem, timeout_s, worker, verify_claim)
    if verify_claim and not ctx.hole(start, steps):  # without the solver, only a justified chain needs it
        return ctx.verdict()
    prev = start
    for i, s in enumerate(steps, 1):
        if not ctx.step(i, prev, s):
            return ctx.verdict()
        prev = s.rhs
    if not verify_claim and (ctx.flags or not ctx.hole(start, steps)):
        return ctx.verdict()  # the score is decided: without the solver, the ends and Equality line wait
    for label, a, b in (("start", start, problem.lhs), ("end", steps[-1].rhs, problem.rhs)):
        if not ctx.end(label, a, b):
            return ctx.verdict()
    if equality_text:
        ctx.equality_line(equality_text)
    elif asks_equality(problem):
        ctx.equality = {"written": False, "ok": False, "why": "the problem asks for the equality case; the proof "
                                                             "has no Equality line"}
        ctx.flag("incomplete", None, ctx.equality["why"])
    return ctx.verdict()


class _Ctx:
    """What `check_proof` has found so far: proof-score flags, claim (solver) flags, reasons."""

    def __init__(self, problem: Problem, timeout_s: float, worker, verify_claim: bool):
        self.problem, self.timeout_s, self.worker, self.verify_claim = problem, timeout_s, worker, verify_claim
        self.args = (list(problem.variables), problem.domain, problem.constraint)
        self.spec = _spec(problem.lhs, problem.rel, problem.rhs, problem.variables, problem.domain,
                          problem.constraint)
        self.ref_lemmas = sorted({s.lemma for s in problem.proof if s.lemma})
        self.flags: set[str] = set()  # proof score: invalid, incomplete, circular, unjustified, unknown
        self.truth: set[str] = set()  # claim_verified: invalid, incomplete, unknown, unchecked
        self.reasons: list[str] = []
        self.verdicts: list[Verdict] = []
        self.justification: list[dict] = []
        self.equality: dict | None = None

    def flag(self, proof: str | None, claim: str | None, reason: str) -> None:
        if proof:
            self.flags.add(proof)
        if claim:
            self.truth.add(claim)
        self.reasons.append(reason)

    def verdict(self) -> ProofVerdict:
        status = next((s for s in _STATUS_ORDER if s in self.flags), "valid")
        claim = next((s for s in ("invalid", "incomplete", "unknown", "unchecked") if s in self.truth), "valid")
        verified = None if claim == "unchecked" else claim == "valid"
        return ProofVerdict(status == "valid", status, self.verdicts, self.reasons, self.justification,
                            verified, "" if claim == "unchecked" else claim, self.equality)

    def hole(self, start: str, steps: list[Step]) -> bool:
        """Is every chain expression real wherever the claim is (sampled)? False: it is not."""
        hole = _chain_hole(self.problem, start, steps, self.timeout_s, self.worker)
        if hole and "index" in hole:
            where = f"step {hole['index']}'s expression" if hole["index"] else "the chain's start"
            self.flag("invalid", "invalid", f"{where} {hole['reason']}")
            return False
        if hole:
            self.flag("unknown", "unknown", hole["reason"])
        return True

    def step(self, i: int, prev: str, s: Step) -> bool:
        """Justify step i; False when checking must stop (a false or unparseable step)."""
        link = f"step {i} ({_short(prev)} {s.rel} {_short(s.rhs)})"
        t0 = time.monotonic()
        j = self._justify(prev, s)
        if j.get("unparseable"):
            self.justification.append({"step": i, "rule": None, "justified": False, "why": j["why"]})
            self.verdicts.append(Verdict("refuted", j["why"], None, _since(t0), "parse"))
            self.flag("invalid", "invalid", f"{link} invalid: {j['why']}")
            return False
        self.justification.append({"step": i, "rule": j["rule"], "justified": bool(j["rule"]), "why": j["why"]})
        if j["rule"]:
            self.verdicts.append(Verdict("proved", j["why"], None, _since(t0), j["rule"]))
            return True
        kind = "circular" if j["circular"] else "unknown" if j.get("undecided") else "unjustified"
        self.flag(kind, None, f"{link} {'is circular' if kind == 'circular' else 'is not justified'}: {j['why']}")
        if not self.verify_claim:
            self.verdicts.append(Verdict("unknown", "not checked by the solver (verify_claim=False)", None,
                                         _since(t0), ""))
            self.truth.add("unchecked")
            return True
        try:
            v = check_claim(prev, s.rel, s.rhs, *self.args, timeout_s=self.timeout_s, near=self.problem.equality,
                            worker=self.worker)
        except ExpressionError as e:
            v = Verdict("refuted", f"unparseable: {e}", None, 0.0, "parse")
        self.verdicts.append(replace(v, seconds=_since(t0)))
        if v.status == "refuted":
            self.flag("invalid", "invalid", f"{link} is false: {v.reason}")
            return False
        if v.status != "proved":
            self.flag(None, "unknown", f"{link} is not proved by the solver either: {v.reason}")
        return True

    def _justify(self, prev: str, s: Step) -> dict:
        try:
            j = _remote(self.worker, f"{_PC}:_justify_step", self.spec, str(prev), s.to_dict(), self.problem.family,
                        self.ref_lemmas, timeout_s=self.timeout_s)
        except ExpressionError as e:
            return {"unparseable": True, "why": f"unparseable: {e}"}
        except WorkerTimeout:
            return {"rule": None, "circular": False, "undecided": True,
                    "why": f"the rule checks did not finish within {self.timeout_s:g} s"}
        except WorkerError as e:
            return {"rule": None, "circular": False, "undecided": True,
                    "why": f"verifier error {e.remote_type}: {e.remote_message}"}
        side = j.pop("solver_side", [])
        for expr, rel in side if j["rule"] else []:
            try:
                v = check_claim(expr, rel, "0", *self.args, timeout_s=self.timeout_s, samples=100, worker=self.worker)
            except ExpressionError as e:
                v = Verdict("refuted", f"unparseable: {e}")
            if v.status != "proved":
                j.update(rule=None, why=f"{j['why']}, but its side condition {expr} {rel} 0 is "
                                        f"{'false' if v.status == 'refuted' else 'not proved'} ({v.reason})")
                return j
        if side and j["rule"]:
            j["why"] += f" (linear side conditions {', '.join(f'{e} {r} 0' for e, r in side)} by the solver)"
        return j

    def end(self, label: str, a: str, b: str) -> bool:
        """Is the chain's start (end) the claim's lhs (rhs) by exact algebra? False: stop checking."""
        which, side = ("starts at", "lhs") if label == "start" else ("ends at", "rhs")
        if " ".join(str(a).split()) == " ".join(str(b).split()):
            return True
        try:
            same = _remote(self.worker, f"{_PC}:_same_exact", self.spec, str(a), str(b), timeout_s=self.timeout_s)
        except ExpressionError as e:
            self.flag("invalid", "invalid", f"the chain's {label} is unparseable: {e}")
            return False
        except (WorkerTimeout, WorkerError) as e:
            same, undecided = None, str(e)
        else:
            undecided = ""
        if same:
            return True
        where = f"the chain {which} {_short(a)}, not at the claim's {side} {_short(b)}"
        if not self.verify_claim:
            self.flag("unknown" if undecided else "incomplete", "unchecked",
                      f"{where} (exact algebra " + (f"did not decide: {undecided})" if undecided else
                                                    "does not equate them)"))
            return True
        v = _same(a, b, self.args, self.timeout_s, self.problem.equality, self.worker)
        if v.status == "proved":
            self.flag("unknown" if undecided else "unjustified", None,
                      f"the chain {which} {_short(a)}, equal to the claim's {side} {_short(b)} by the solver but "
                      f"not by exact algebra" + (f" ({undecided})" if undecided else ""))
            return True
        if v.status == "unknown":
            self.flag("incomplete", "unknown", f"{where}; could not decide whether they are equal: {v.reason}")
            return True
        rel = {">": ">=", "<": "<="}.get(self.problem.rel, self.problem.rel)
        lo, hi = (self.problem.lhs, a) if label == "start" else (a, self.problem.rhs)
        try:
            g = check_claim(lo, rel, hi, *self.args, timeout_s=self.timeout_s, near=self.problem.equality,
                            worker=self.worker)
        except ExpressionError as e:
            g = Verdict("refuted", f"unparseable: {e}")
        if g.status == "proved":
            self.flag("incomplete", "incomplete", f"{where}; the missing link {_short(lo)} {rel} {_short(hi)} is "
                                                  f"true but not written")
        else:
            self.flag("invalid", "invalid", f"{where}; the missing link {_short(lo)} {rel} {_short(hi)} is "
                                            f"{'false' if g.status == 'refuted' else 'unproved'} ({g.reason})")
        return True

    def equality_line(self, text: str) -> None:
        try:
            r = _remote(self.worker, f"{_PC}:_equality_condition", self.spec, text, self.problem.equality,
                        timeout_s=self.timeout_s)
        except ExpressionError as e:
            r = {"ok": None, "why": f"the Equality line {text!r} does not parse: {e}"}
        except (WorkerTimeout, WorkerError) as e:
            r = {"ok": None, "why": f"the Equality line {text!r} could not be checked: {e}", "undecided": True}
        self.equality = {"written": True, "ok": r["ok"], "why": r["why"]}
        if r["ok"] is False:
            self.flag("invalid", None, f"Equality: {r['why']}")
        elif r["ok"] is None:
            self.flag("unknown" if r.get("undecided") else "unjustified", None, f"Equality: {r['why']}")


def _chain_hole(problem: Problem, start: str, steps: list[Step], timeout_s, worker) -> dict | None:
    """A chain expression undefined somewhere the claim is defined ({"index", "reason"}), a
    {"reason"} when that could not be checked, or None."""
    spec = _spec(problem.lhs, problem.rel, problem.rhs, problem.variables, problem.domain, problem.constraint)
    try:
        return _remote(worker, "_undefined_in_chain", spec, [start] + [s.rhs for s in steps], 150, 0,
                       problem.equality, timeout_s=timeout_s)
    except ExpressionError:
        return None  # the step checks name the unparseable expression
    except (WorkerTimeout, WorkerError) as e:
        return {"reason": f"could not check where the chain's expressions are defined: {e}"}


def _same(a: str, b: str, args, timeout_s, near, worker) -> Verdict:
    if " ".join(str(a).split()) == " ".join(str(b).split()):
        return Verdict("proved", "same text", method="text")
    try:
        return check_claim(a, "=", b, *args, timeout_s=timeout_s, samples=100, near=near, worker=worker)
    except ExpressionError as e:
        return Verdict("refuted", f"unparseable: {e}", method="parse")


def judge_completion(problem: Problem, text: str, timeout_s: float = 2.0, worker: TimedWorker | None = None,
                     verify_claim: bool = True) -> dict:
    """The mechanical judge of a model's completion.

    ``score`` (the proof score): 1 iff the parsed proof is justified step by step by the rule book of
    `squigglray.ineq.proof_check` (`check_proof` status "valid", a written Equality line included)
    and, for a ``bound`` or ``relation`` problem, the ``Answer:`` line is right (bound: the same
    constant, SymPy-exact; relation: the same option letter, case-insensitive), so a guessed letter
    earns nothing. A step that only a solver proves, a restated claim or a mismatched citation scores
    0, however true. Also reported: ``answer_ok`` (the answer alone: IneqMath's final-answer judge);
    ``claim_verified`` / ``claim_status`` (a separate score: the written chain holds by SymPy/Z3 and
    meets the claim's sides -- the score before the rule book, which a proof that skips all the work
    earns); ``justification`` (per step: the rule that justified it, or why none did); ``equality``
    (the Equality line's check). ``verify_claim=False`` skips the solver where only the score is
    needed (``claim_verified`` is then None unless the proof is justified).
    """
    out: dict[str, Any] = {"score": 0, "status": "", "reasons": [], "answer_ok": None, "proof_ok": False,
                           "claim_verified": False, "claim_status": "", "justification": [], "equality": None}
    if problem.variant in ("bound", "relation"):
        out["answer_ok"], why = _answer_ok(problem, parse_answer(text), timeout_s, worker)
        if why:
            out["reasons"].append(why)
    try:
        parsed = parse_proof(text)
    except ProofParseError as e:
        out["status"] = "unparsed"
        out["reasons"].append(f"the proof does not parse: {e}")
    else:
        pv = check_proof(problem, parsed.start, parsed.steps, timeout_s, worker=worker,
                         equality_text=parsed.equality_text, verify_claim=verify_claim)
        out.update(status=pv.status, proof_ok=pv.valid, claim_verified=pv.claim_verified,
                   claim_status=pv.claim_status, justification=pv.justification, equality=pv.equality)
        out["reasons"] += pv.reasons
    answer = bool(out["answer_ok"]) if problem.variant in ("bound", "relation") else True
    out["score"] = int(answer and out["proof_ok"])
    return out


_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?(?:[\s.:)]|$)")


def _answer_ok(problem: Problem, answer: str | None, timeout_s, worker) -> tuple[bool, str]:
    if answer is None:
        return False, "no 'Answer:' line"
    if problem.variant == "relation":
        got, want = _LETTER.match(answer.strip()), _LETTER.match(problem.answer.strip())
        if not got:
            return False, f"answer {answer!r} is not an option letter"
        ok = bool(want) and got.group(1).upper() == want.group(1).upper()
        return ok, "" if ok else f"answer {got.group(1)} is not the right option"
    cleaned = answer.strip().strip("$").rstrip(".").split("=")[-1].strip()
    try:
        ok = _remote(worker, "_same_constant", cleaned, problem.answer, timeout_s=timeout_s)
    except ExpressionError as e:
        return False, f"answer {answer!r} is not a constant: {e}"
    except (WorkerTimeout, WorkerError) as e:
        return False, f"answer {answer!r} could not be compared: {e}"
    return ok, "" if ok else f"answer {cleaned} differs from the best constant"


# ================================ worker side: SymPy, sampling, Z3 ================================
_FUNCS = {"sqrt": sp.sqrt, "cbrt": sp.cbrt, "root": sp.root, "Rational": sp.Rational, "Abs": sp.Abs,
          "abs": sp.Abs, "Min": sp.Min, "Max": sp.Max, "exp": sp.exp, "log": sp.log, "pi": sp.pi, "E": sp.E}
_PARSER_NAMES = {"Integer": sp.Integer, "Float": sp.Float, "Symbol": sp.Symbol}  # emitted by SymPy's transforms
_OPS = {"+", "-", "*", "/", "**", "^", "(", ")", ","}
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_TRANSFORMS = standard_transformations + (convert_xor, rationalize)
_SKIP_TOKENS = {tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER}
_MAX_OPS = 3000  # larger expressions skip simplify()


def _symbols(variables, domain: str) -> dict[str, sp.Symbol]:
    assumptions = {"positive": {"positive": True}, "nonnegative": {"nonnegative": True},
                   "real": {"real": True}}[domain]
    out = {}
    for v in variables:
        if not (isinstance(v, str) and v.isidentifier()) or keyword.iskeyword(v) or v.startswith("_") or v in _FUNCS:
            raise ExpressionError(f"variable name {v!r} is not usable (an identifier, not a keyword, "
                                  f"not starting with '_', not one of {sorted(_FUNCS)})")
        out[v] = sp.Symbol(v, **assumptions)
    return out


def _parse(text, syms: dict[str, sp.Symbol], what: str = "expression") -> sp.Expr:
    """Parse a Python-syntax SymPy expression over `syms` only. Tokens are whitelisted first
    (parse_expr evaluates Python, and the text may come from a model)."""
    if not isinstance(text, str) or not text.strip() or "\n" in text or len(text) > 4000:
        raise ExpressionError(f"{what} {text!r} is empty, multi-line, too long or not a string")
    text = text.strip()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as e:
        raise ExpressionError(f"{what} {text!r} does not tokenize: {e}") from None
    for t in tokens:
        ok = (t.type in _SKIP_TOKENS or (t.type == tokenize.NAME and (t.string in syms or t.string in _FUNCS))
              or (t.type == tokenize.NUMBER and _NUMBER.fullmatch(t.string))
              or (t.type == tokenize.OP and t.string in _OPS))
        if not ok:
            raise ExpressionError(f"{what} {text!r}: {t.string!r} is not allowed (variables: "
                                  f"{', '.join(syms) or 'none'}; functions: {', '.join(sorted(_FUNCS))})")
        if t.type == tokenize.NUMBER and (len(t.string) > 60 or float(t.string) > 1e300):
            raise ExpressionError(f"{what} {text!r}: the number {t.string} is too large")
    _check_powers(text, what)
    try:
        e = parse_expr(text, local_dict=dict(syms), global_dict={"__builtins__": {}, **_FUNCS, **_PARSER_NAMES},
                       transformations=_TRANSFORMS)
    except Exception as exc:  # noqa: BLE001 - SymPy raises many types here
        raise ExpressionError(f"{what} {text!r} does not parse: {type(exc).__name__}: {exc}") from None
    if not isinstance(e, sp.Expr) or e.has(sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I) or any(
            x.is_number and x.is_real is False for x in sp.preorder_traversal(e)):
        raise ExpressionError(f"{what} {text!r} is not a finite real expression (got {_short(str(e))})")
    return e


def _constant(node) -> float | None:
    """Float value of a constant arithmetic subtree (inf on overflow), None if it is not one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _constant(node.operand)
        return None if v is None else -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
        a, b = _constant(node.left), _constant(node.right)
        if a is None or b is None:
            return None
        try:
            v = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(node.op)) if not isinstance(
                node.op, (ast.Div, ast.Pow)) else a / b if isinstance(node.op, ast.Div) else abs(a) ** b
        except OverflowError:
            return math.inf
        except (ZeroDivisionError, ValueError):
            return math.nan
        return v if isinstance(v, float) else abs(v)  # complex from a negative base: magnitude suffices
    return None


def _check_powers(text: str, what: str) -> None:
    """Reject constant exponents above 1000 and constant powers above ~1e5 bits: SymPy would
    compute them exactly (``9**9**9``) and could exhaust memory before any deadline."""
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError:
        return  # parse_expr reports it
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            exp, base = _constant(node.right), _constant(node.left)
            if exp is not None and not abs(exp) <= 1000:
                raise ExpressionError(f"{what} {text!r}: an exponent is too large (limit 1000)")
            if exp is not None and base is not None and base != 0 and not abs(exp) * abs(math.log2(abs(base))) <= 1e5:
                raise ExpressionError(f"{what} {text!r}: a constant power is too large")


class _Claim:
    """A parsed claim; `slack` is >= 0 (> 0 strict, == 0 for '=') exactly where it holds."""

    def __init__(self, spec: dict):
        self.domain, self.rel = spec["domain"], spec["rel"]
        self.syms = _symbols(spec["variables"], self.domain)
        self.order = [self.syms[v] for v in spec["variables"]]
        self.lhs = _parse(spec["lhs"], self.syms, "lhs")
        self.rhs = _parse(spec["rhs"], self.syms, "rhs")
        self.cons = _parse(spec["constraint"], self.syms, "constraint") if spec.get("constraint") else None
        self.slack = self.rhs - self.lhs if self.rel in ("<=", "<") else self.lhs - self.rhs
        self.strict = self.rel in (">", "<")


def _is_zero(e: sp.Expr) -> bool:
    if e == 0 or sp.expand(e) == 0:
        return True
    return sp.count_ops(e) <= _MAX_OPS and sp.simplify(e) == 0


def _fmt(x) -> str:
    return f"{float(x):.6g}"


# ---- points: exact re-check ---------------------------------------------------------------------
def _in_domain(val, domain: str) -> bool:
    return val > 0 if domain == "positive" else val >= 0 if domain == "nonnegative" else True


def _check_point(c: _Claim, point: dict, exact: bool) -> dict | None:
    """A counterexample {"point", "reason"} if the claim fails at `point` (Symbol -> exact Rational,
    or 50-digit Float when not `exact`), judged at 30 digits; None when it holds or is undefined."""
    try:
        if not all(val.is_real and _in_domain(val, c.domain) for val in point.values()):
            return None
        if c.cons is not None:
            r = c.cons.evalf(30, subs=point)
            if not r.is_real or abs(r) > 1e-20 * (1 + max(abs(v) for v in point.values())):
                return None
        lhs, rhs = (e.evalf(30, subs=point, chop=True) for e in (c.lhs, c.rhs))
        s = c.slack.evalf(30, subs=point)
        if not all(v.is_real and v.is_finite for v in (lhs, rhs, s)):
            return None
        tol = _TOL * max(1, abs(lhs), abs(rhs))
        if c.rel == "=":
            bad = abs(s) > tol
        elif s < -tol:
            bad = True
        else:  # a strict claim also fails where the sides are exactly equal
            bad = c.strict and exact and abs(s) <= tol and sp.simplify(c.slack.xreplace(point)) == 0
    except (TypeError, ValueError, ZeroDivisionError, ArithmeticError):
        return None
    if not bad:
        return None
    at = ", ".join(f"{k} = {_fmt(v)}" for k, v in point.items())
    return {"point": {str(k): float(v) for k, v in point.items()},
            "reason": f"fails at {at}: lhs = {_fmt(lhs)}, rhs = {_fmt(rhs)}, lhs - rhs = "
                      f"{_fmt(-s if c.rel in ('<=', '<') else s)} (claim {c.rel})"}


# ---- sampling -------------------------------------------------------------------------------------
class _Map:
    """Parameters -> a point of the claim's surface (identity without a constraint)."""

    def __init__(self, c: _Claim, params: list, coords: list, exact: bool, how: str):
        self.params, self.coords, self.exact, self.how = params, coords, exact, how
        self._f = sp.lambdify(params, coords, "numpy")

    def points(self, P: np.ndarray) -> np.ndarray:
        cols = self._f(*P.T)
        return np.stack([np.broadcast_to(np.asarray(x, dtype=float), P.shape[:1]) for x in cols], axis=1)

    def exact_point(self, c: _Claim, row) -> dict:
        vals = {p: sp.Rational(float(x)) for p, x in zip(self.params, row)}
        if self.exact:
            return {v: vals[v] for v in c.order}
        return {v: sp.N(e.xreplace(vals), 50) for v, e in zip(c.order, self.coords)}


def _homogeneous_degree(g: sp.Expr, order: list) -> sp.Rational | None:
    """Degree d with g(t x) = t**d g(x), estimated numerically (exactness is re-checked later)."""
    rng = np.random.default_rng(1)
    ds = []
    for _ in range(3):
        pt = {v: sp.Rational(int(rng.integers(1, 50)), int(rng.integers(1, 50))) for v in order}
        g1, g2 = g.evalf(30, subs=pt), g.evalf(30, subs={v: 2 * x for v, x in pt.items()})
        if not (g1.is_real and g2.is_real) or g1 == 0 or g2 / g1 <= 0:
            return None
        ds.append(math.log2(float(g2 / g1)))
    d = sp.Rational(round(ds[0] * 6), 6)
    return d if d != 0 and all(abs(x - float(d)) < 1e-9 for x in ds) else None


def _surface_maps(c: _Claim) -> list[_Map]:
    if c.cons is None:
        return [_Map(c, c.order, c.order, True, "identity")]
    maps = []
    const = sp.Add(*[a for a in sp.Add.make_args(c.cons) if not a.free_symbols])
    g = c.cons - const
    if const != 0:
        d = _homogeneous_degree(g, c.order)
        if d is not None:
            scale = (-const / g) ** (1 / d)
            maps.append(_Map(c, c.order, [v * scale for v in c.order], False, "rescale"))
    return maps + _solved_maps(c)


def _solved_maps(c: _Claim) -> list[_Map]:
    """Solve the constraint for a variable it is linear (else quadratic) in: one map per branch."""
    by_degree = []
    for v in reversed(c.order):
        try:
            deg = sp.Poly(c.cons, v).degree()
        except sp.PolynomialError:
            continue
        if deg in (1, 2):
            by_degree.append((deg, v))
    if not by_degree:
        return []
    v = min(by_degree, key=lambda x: x[0])[1]
    others = [o for o in c.order if o != v]
    return [_Map(c, others, [sol if o == v else o for o in c.order], False, f"solved for {v}")
            for sol in sp.solve(c.cons, v) if v not in sol.free_symbols]


def _param_points(domain: str, k: int, n: int, rng, near: np.ndarray | None) -> np.ndarray:
    """Grid, log-uniform (1e-3..1e3), moderate, boundary and near-equality points."""
    if k == 0:
        return np.zeros((1, 0))
    m = max(n, 30)
    blocks = [np.ones((1, k)), np.full((1, k), 2.0)]
    if k <= 4:
        blocks.append(np.array(np.meshgrid(*[[0.5, 1.0, 2.0]] * k)).reshape(k, -1).T)
    blocks.append(10 ** rng.uniform(-3, 3, (m // 3, k)))
    blocks.append(rng.uniform(0.05, 4, (m // 3, k)))
    edge = {"positive": [1e-6, 1e-3], "nonnegative": [0.0, 1e-6], "real": [0.0, 1e-6, -1e-6]}[domain]
    bd = rng.uniform(0.05, 4, (m // 6, k))
    mask = rng.random(bd.shape) < 0.4
    bd[mask] = rng.choice(edge, int(mask.sum()))
    blocks.append(bd)
    if near is not None:
        scales = rng.choice([1e-4, 1e-2, 0.1, 0.5], (m // 6, 1))
        blocks += [near[None, :], near * (1 + rng.normal(0, 1, (m // 6, k)) * scales)
                   + rng.normal(0, 1, (m // 6, k)) * scales * 0.1]
    P = np.vstack(blocks)
    if domain == "real":
        return np.vstack([P, P * rng.choice([-1.0, 1.0], P.shape)])
    return np.abs(P) if domain == "nonnegative" else np.where(P > 0, P, 1e-6)


def _scores(c: _Claim, smap: _Map, fns, P: np.ndarray) -> np.ndarray:
    """Relative slack per parameter row (lower is worse for the claim; inf where undefined)."""
    with np.errstate(all="ignore"):
        X = smap.points(P)
        ok = np.isfinite(X).all(axis=1)
        ok &= (X > 0).all(axis=1) if c.domain == "positive" else (X >= 0).all(axis=1) if c.domain == "nonnegative" \
            else True
        L, R = (np.broadcast_to(np.asarray(f(*X.T), dtype=float), ok.shape) for f in fns)
        s = R - L if c.rel in ("<=", "<") else L - R
        rel = s / (np.abs(L) + np.abs(R) + 1e-300)
        if c.rel == "=":
            rel = -np.abs(rel)
    return np.where(ok & np.isfinite(rel), rel, np.inf)


def _local_search(c: _Claim, smap: _Map, fns, P, score, rng, keep: int = 4, width: int = 24):
    """Shrinking random perturbations of the worst rows: finds narrow counterexample regions."""
    best = P[np.argsort(score)[:keep]]
    best_s = np.sort(score)[:keep]
    for sigma in (0.5, 0.2, 0.05, 0.01, 0.002):
        Q = np.repeat(best, width, axis=0)
        Q = Q * np.exp(rng.normal(0, sigma, Q.shape))
        if c.domain == "real":
            Q = Q + rng.normal(0, sigma, Q.shape) * 0.1
        qs = _scores(c, smap, fns, Q)
        allP, allS = np.vstack([best, Q]), np.concatenate([best_s, qs])
        idx = np.argsort(allS)[:keep]
        best, best_s = allP[idx], allS[idx]
    return best, best_s


def _near_vector(c: _Claim, smap: _Map, near: dict | None) -> np.ndarray | None:
    if not near:
        return None
    try:
        vals = {c.syms[k]: float(_parse(str(v), {}, "near value").evalf(20)) for k, v in near.items() if k in c.syms}
        return np.array([vals[p] for p in smap.params])
    except (ExpressionError, KeyError, TypeError, ValueError):
        return None


def _sampled(c: _Claim, samples: int, seed: int, near: dict | None):
    """(map, parameter rows, their scores) per surface map; scores are inf where undefined."""
    rng = np.random.default_rng(seed)
    fns = [sp.lambdify(c.order, e, "numpy") for e in (c.lhs, c.rhs)]
    for smap in _surface_maps(c):
        P = _param_points(c.domain, len(smap.params), samples, rng, _near_vector(c, smap, near))
        score = _scores(c, smap, fns, P)
        if np.isfinite(score).any() and c.rel != "=":
            Q, qs = _local_search(c, smap, fns, P, score, rng)
            P, score = np.vstack([P, Q]), np.concatenate([score, qs])
        yield smap, P, score


def _refute_by_sampling(spec: dict, samples: int = 300, seed: int = 0, near: dict | None = None) -> dict:
    """Worker: {"cex": a counterexample {"point", "reason"} confirmed at 30 digits or None,
    "defined": how many sampled points had both sides defined (None: the surface was not sampled)}."""
    c = _Claim(spec)
    defined = None
    for smap, P, score in _sampled(c, samples, seed, near):
        defined = (defined or 0) + int(np.isfinite(score).sum())
        limit = _SCREEN if c.strict else -_SCREEN
        for i in [i for i in np.argsort(score)[:12] if score[i] < limit]:
            cex = _check_point(c, smap.exact_point(c, P[i]), smap.exact)
            if cex:
                return {"cex": cex, "defined": defined}
    return {"cex": None, "defined": defined}


def _value(e: sp.Expr, point: dict) -> sp.Expr | None:
    """`e` at `point` to 30 digits, or None where it is not a finite real number."""
    try:
        v = e.xreplace(point)
        if v.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            return None
        v = sp.N(v, 30)
        return v if v.is_real and v.is_finite else None
    except (TypeError, ValueError, ZeroDivisionError, ArithmeticError):
        return None


def _undefined_in_chain(spec: dict, exprs: list[str], samples: int = 150, seed: int = 0,
                        near: dict | None = None) -> dict | None:
    """Worker: the first chain expression that is not a finite real number at a sampled point of
    the domain where the claim's sides are: {"index", "point", "reason"}, or None. (A step proved
    only where its expressions are defined must not shrink the claim's domain.)"""
    c = _Claim(spec)
    parsed = [_parse(e, c.syms, f"chain expression {i}") for i, e in enumerate(exprs)]
    fns = [sp.lambdify(c.order, e, "numpy") for e in parsed]
    for smap, P, score in _sampled(c, samples, seed, near):
        P = P[np.isfinite(score)]
        with np.errstate(all="ignore"):
            X = smap.points(P)
            bad = [~np.isfinite(np.broadcast_to(np.asarray(f(*X.T), dtype=float), X.shape[:1])) for f in fns]
        for i, rows in enumerate(bad):
            for r in np.flatnonzero(rows)[:5]:
                point = smap.exact_point(c, P[r])
                if not all(v.is_real and _in_domain(v, c.domain) for v in point.values()) \
                        or _value(c.lhs, point) is None or _value(c.rhs, point) is None \
                        or _value(parsed[i], point) is not None:
                    continue
                at = ", ".join(f"{k} = {_fmt(v)}" for k, v in point.items())
                return {"index": i, "point": {str(k): float(v) for k, v in point.items()},
                        "reason": f"{_short(exprs[i])} is not a real number at {at}, where the claim is defined"}
    return None


# ---- SymPy proofs ---------------------------------------------------------------------------------
def _sympy_equal(c: _Claim) -> str | None:
    """Why lhs == rhs holds exactly (on the constraint surface when there is one), or None."""
    d = c.lhs - c.rhs
    if _is_zero(d):
        return "SymPy: lhs - rhs simplifies to 0"
    if c.cons is None:
        return None
    num = sp.fraction(sp.cancel(sp.together(d)))[0]
    cnum = sp.fraction(sp.together(c.cons))[0]
    try:
        if sp.reduced(num, [cnum], *c.order)[1] == 0:
            return "SymPy: the numerator of lhs - rhs is a multiple of the constraint"
    except (sp.PolynomialError, sp.GeneratorsNeeded):
        pass
    maps = _solved_maps(c)
    if maps and all(_is_zero(d.xreplace(dict(zip(c.order, m.coords)))) for m in maps):
        return f"SymPy: lhs - rhs vanishes on the constraint surface ({maps[0].how})"
    return None


def _sympy_sign(c: _Claim) -> str | None:
    """Why the slack is >= 0 (> 0 if strict) by SymPy's sign rules on a factored form, or None."""
    if c.cons is not None or sp.count_ops(c.slack) > _MAX_OPS:
        return None
    want = "is_positive" if c.strict else "is_nonnegative"
    for form in (lambda e: e, sp.factor, lambda e: sp.factor(sp.cancel(sp.together(e)))):
        try:
            e = form(c.slack)
        except (sp.PolynomialError, ValueError, TypeError):
            continue
        if getattr(e, want):
            return f"SymPy: lhs - rhs = {_short(str(e), 80)} is {'positive' if c.strict else 'nonnegative'} " \
                   f"term by term"
    return None


def _prove(spec: dict, budget_s: float, check_vacuity: bool = False) -> dict:
    """Worker: {"status", "reason", "method", "point"} from SymPy, then Z3 with the time left."""
    t0 = time.monotonic()
    c = _Claim(spec)
    why = _sympy_equal(c) if c.rel == "=" else _sympy_sign(c)
    if why:
        return {"status": "proved", "reason": why, "method": "sympy"}
    return _z3_decide(c, budget_s - (time.monotonic() - t0), check_vacuity)


def _same_constant(a: str, b: str) -> bool:
    """Worker: are two constant expressions equal?"""
    return _is_zero(_parse(a, {}, "answer") - _parse(b, {}, "reference answer"))


def _equality_case(spec: dict, point: dict[str, str]) -> dict:
    """Worker: lhs == rhs exactly at `point`, which lies in the domain and on the constraint."""
    c = _Claim(spec)
    missing = [str(v) for v in c.order if str(v) not in point]
    if missing:
        return {"status": "refuted", "reason": f"the point gives no value for {', '.join(missing)}"}
    vals = {v: _parse(point[str(v)], {}, f"value of {v}") for v in c.order}
    fpoint = {str(v): float(x.evalf(20)) for v, x in vals.items()}
    for v, x in vals.items():
        if not (x.is_real and _in_domain(x.evalf(50), c.domain)):
            return {"status": "refuted", "reason": f"{v} = {point[str(v)]} is outside the {c.domain} domain",
                    "point": fpoint}
    if c.cons is not None and not _is_zero(c.cons.xreplace(vals)):
        return {"status": "refuted", "reason": f"the point is not on the constraint {c.cons} = 0", "point": fpoint}
    if not _is_zero((c.lhs - c.rhs).xreplace(vals)):
        lhs, rhs = (e.xreplace(vals).evalf(15) for e in (c.lhs, c.rhs))
        return {"status": "refuted", "reason": f"lhs = {_fmt(lhs)} but rhs = {_fmt(rhs)} at the point", "point": fpoint}
    return {"status": "proved", "reason": "lhs == rhs exactly at the point"}


# ---- lemma instances --------------------------------------------------------------------------------
def _lemma_instance(lemma: str, args: dict, syms) -> tuple[sp.Expr, sp.Expr, list, str]:
    """(L, R, side conditions [[expr, rel]], text) with L >= R the lemma's instance."""
    def exprs(key, required=True):
        raw = args.get(key)
        if raw is None and not required:
            return None, []
        if not isinstance(raw, (list, tuple)) or not raw:
            raise ExpressionError(f"{lemma} needs a non-empty argument list {key!r}")
        return [_parse(str(x), syms, f"{lemma} argument") for x in raw], [str(x) for x in raw]

    if lemma in ("am_gm", "weighted_am_gm"):
        xs, raw = exprs("terms")
        n = len(xs)
        if lemma == "am_gm":
            ws = [sp.Rational(1, n)] * n
        else:
            ws, _ = exprs("weights")
            if len(ws) != n or not all(w.is_number and w.is_positive for w in ws) or not _is_zero(sp.Add(*ws) - 1):
                raise ExpressionError(f"weighted_am_gm weights {args.get('weights')} are not {n} positive "
                                      f"numbers summing to 1")
        L = sp.Add(*[w * x for w, x in zip(ws, xs)])
        R = sp.Mul(*xs) ** ws[0] if lemma == "am_gm" else sp.Mul(*[x**w for w, x in zip(ws, xs)])
        return L, R, [[x, ">="] for x in raw], f"{lemma}({', '.join(raw)})"
    if lemma in ("cauchy_schwarz", "titu"):
        (xs, rx), (ys, ry) = exprs("xs"), exprs("ys")
        if len(xs) != len(ys):
            raise ExpressionError(f"{lemma} needs as many xs as ys, got {len(xs)} and {len(ys)}")
        text = f"{lemma}({', '.join(rx)}; {', '.join(ry)})"
        if lemma == "cauchy_schwarz":
            L = sp.Add(*[x**2 for x in xs]) * sp.Add(*[y**2 for y in ys])
            return L, sp.Add(*[x * y for x, y in zip(xs, ys)]) ** 2, [], text
        L = sp.Add(*[x**2 / y for x, y in zip(xs, ys)])
        return L, sp.Add(*xs) ** 2 / sp.Add(*ys), [[y, ">"] for y in ry], text
    if lemma == "square_nonneg":
        ps, rp = exprs("squares")
        cs, rc = exprs("coeffs", required=False)
        cs, rc = (cs, rc) if cs else ([sp.Integer(1)] * len(ps), ["1"] * len(ps))
        if len(cs) != len(ps):
            raise ExpressionError(f"square_nonneg needs one coefficient per square, got {len(cs)} for {len(ps)}")
        side = [[r, ">="] for r, cc in zip(rc, cs) if not (cc.is_number and cc.is_nonnegative)]
        if any(cc.is_number and cc.is_negative for cc in cs):
            raise ExpressionError(f"square_nonneg coefficients {rc} include a negative number")
        return sp.Add(*[cc * p**2 for cc, p in zip(cs, ps)]), sp.Integer(0), side, \
            f"square_nonneg({', '.join(rp)}; {', '.join(rc)})"

    def numbers(key, count):
        vals, raw = exprs(key)
        if len(vals) != count or not all(v.is_number and v.is_real for v in vals):
            raise ExpressionError(f"{lemma} needs {count} real number(s) as {key!r}, got {args.get(key)}")
        return vals, raw

    def nonneg(pairs):  # side conditions x >= 0, except for numbers that are evidently so
        return [[r, ">="] for x, r in pairs if not (x.is_number and x.is_nonnegative)]

    def ordered(xs, rx, ys, ry):  # similarly ordered: (x_i - x_j)*(y_i - y_j) >= 0 for all i < j
        n = len(xs)
        return [[f"(({rx[i]}) - ({rx[j]}))*(({ry[i]}) - ({ry[j]}))", ">="] for i in range(n) for j in range(i + 1, n)
                if not (((xs[i] - xs[j]) * (ys[i] - ys[j])).is_number
                        and ((xs[i] - xs[j]) * (ys[i] - ys[j])).is_nonnegative)]

    if lemma == "schur":
        xs, raw = exprs("terms")
        (t,), (rt,) = numbers("t", 1)
        if len(xs) != 3 or not t.is_positive:
            raise ExpressionError(f"schur needs three terms and a number t > 0, got {args.get('terms')} and {rt}")
        a, b, c = xs
        L = a**t * (a - b) * (a - c) + b**t * (b - a) * (b - c) + c**t * (c - a) * (c - b)
        return L, sp.Integer(0), nonneg(zip(xs, raw)), f"schur({', '.join(raw)}; {rt})"
    if lemma == "power_mean":
        xs, raw = exprs("terms")
        (p, q), rpq = numbers("exps", 2)
        if not p > q:
            raise ExpressionError(f"power_mean needs exps p > q, got {rpq}")
        n = len(xs)

        def mean(r):
            if r == 0:
                return sp.Mul(*xs) ** sp.Rational(1, n)
            return (sp.Add(*[x**r for x in xs]) / n) ** (1 / r)

        if (p, q) == (2, 1):
            side = []  # QM >= |AM| >= AM over the reals
        elif q <= 0:
            side = [[r, ">"] for x, r in zip(xs, raw) if not (x.is_number and x.is_positive)]
        else:
            side = nonneg(zip(xs, raw))
        return mean(p), mean(q), side, f"power_mean({', '.join(raw)}; {', '.join(rpq)})"
    if lemma in ("chebyshev", "rearrangement", "holder"):
        (xs, rx), (ys, ry) = exprs("xs"), exprs("ys")
        zs, rz = exprs("zs") if lemma != "chebyshev" else (None, None)
        if len({len(xs), len(ys), len(zs if zs is not None else xs)}) != 1 or len(xs) < 2 and lemma != "holder":
            raise ExpressionError(f"{lemma} needs sequences of one length (at least 2), got "
                                  f"{[len(v) for v in (xs, ys, zs) if v is not None]}")
        text = f"{lemma}({'; '.join(', '.join(r) for r in (rx, ry, rz) if r is not None)})"
        if lemma == "chebyshev":
            n = len(xs)
            return (sp.Add(*[x * y for x, y in zip(xs, ys)]), sp.Add(*xs) * sp.Add(*ys) / n, ordered(xs, rx, ys, ry),
                    text)
        if lemma == "rearrangement":
            if sorted(map(sp.srepr, ys)) != sorted(map(sp.srepr, zs)):
                raise ExpressionError(f"rearrangement: zs {rz} is not a permutation of ys {ry}")
            return (sp.Add(*[x * y for x, y in zip(xs, ys)]), sp.Add(*[x * z for x, z in zip(xs, zs)]),
                    ordered(xs, rx, ys, ry), text)
        L = sp.Add(*[x**3 for x in xs]) * sp.Add(*[y**3 for y in ys]) * sp.Add(*[z**3 for z in zs])
        return L, sp.Add(*[x * y * z for x, y, z in zip(xs, ys, zs)]) ** 3, \
            nonneg(list(zip(xs, rx)) + list(zip(ys, ry)) + list(zip(zs, rz))), text
    raise ExpressionError(f"lemma {lemma!r} has no instance pattern")


def _match_lemma(prev: str, rel: str, nxt: str, lemma: str, args: dict, variables: list, domain: str) -> dict:
    """Worker: is ``prev rel nxt`` a positive constant multiple of the lemma's instance? The proof
    checker's matcher (`proof_check._match`, rule 3), for `check_step`.
    Returns {"ok", "reason", "side": [[expr, rel], ...]}."""
    from squigglray.ineq import proof_check  # it imports this module

    c = _Claim(_spec(prev, rel, nxt, variables, domain, None))
    return proof_check._match(c, rel, c.slack if rel in (">=", "<=") else c.lhs - c.rhs, lemma, args or {})


# ---- Z3 ----------------------------------------------------------------------------------------------
class _Untranslatable(Exception):
    pass


class _ToZ3:
    """SymPy -> Z3 reals. Roots and negative powers become fresh variables whose defining
    constraints collect in `side` (``r >= 0, r**q == x``; ``d * x**n == 1``)."""

    def __init__(self, z3, symbols):
        self.z3 = z3
        self.vars = {s: z3.Real(s.name) for s in symbols}
        self.side: list = []
        self._cache: dict = {}

    def __call__(self, e: sp.Expr):
        if e not in self._cache:
            self._cache[e] = self._tr(e)
        return self._cache[e]

    def _tr(self, e):
        z3 = self.z3
        if e.is_Symbol and e in self.vars:
            return self.vars[e]
        if e.is_Rational:
            return z3.Q(int(e.p), int(e.q))
        if e.is_Float:
            r = sp.Rational(str(e))
            return z3.Q(int(r.p), int(r.q))
        if e.is_Add:
            return z3.Sum([self(a) for a in e.args])
        if e.is_Mul:
            return z3.Product([self(a) for a in e.args])
        if e.is_Pow:
            return self._pow(e.base, e.exp)
        if isinstance(e, sp.Abs):
            x = self(e.args[0])
            return z3.If(x >= 0, x, -x)
        if isinstance(e, (sp.Min, sp.Max)):
            out = self(e.args[0])
            for a in e.args[1:]:
                y = self(a)
                out = z3.If((y < out) if isinstance(e, sp.Min) else (y > out), y, out)
            return out
        raise _Untranslatable(f"{type(e).__name__} in {_short(str(e), 40)}")

    def _power(self, x, n: int):
        return self.z3.Product([x] * n) if n > 1 else x if n == 1 else self.z3.RealVal(1)

    def _pow(self, b, ex):
        if not ex.is_Rational or abs(ex.p) > 64 or ex.q > 64:
            raise _Untranslatable(f"power with exponent {ex}")
        x = self(b)
        if ex.q > 1:
            r = self.z3.FreshReal("root")
            self.side += [r >= 0, self._power(r, int(ex.q)) == x]
            x = r
        out = self._power(x, abs(int(ex.p)))
        if ex.p < 0:
            d = self.z3.FreshReal("inv")
            self.side.append(d * out == 1)
            return d
        return out


def _root_substitution(c: _Claim) -> dict:
    """v -> t**q when v appears under q-th roots (non-real domains would need v >= 0 anyway)."""
    if c.domain == "real":
        return {}
    exprs = [c.slack] + ([c.cons] if c.cons is not None else [])
    sub = {}
    for v in c.order:
        qs = [int(p.exp.q) for e in exprs for p in e.atoms(sp.Pow) if p.base == v and p.exp.is_Rational]
        q = math.lcm(*qs) if qs else 1
        if 1 < q <= 12:
            sub[v] = sp.Symbol(f"{v.name}_root{q}", **v.assumptions0) ** q
    return sub


def _z3_goal(c: _Claim, sub: dict):
    """(G, D, how): the claim holds iff G >= 0 (> 0 strict, == 0 for '=') wherever D != 0."""
    s = c.slack.xreplace(sub)
    n, d = sp.fraction(sp.cancel(sp.together(s)))
    if d.is_positive or d == 1:
        return n, None
    if d.is_negative:
        return -n, None
    return n * d, d


def _z3_decide(c: _Claim, budget_s: float, check_vacuity: bool = False) -> dict:
    """Z3 on the negated claim. `check_vacuity`: before accepting unsat, make sure the domain
    (with constraint and definitions) is nonempty, for when sampling could not show it."""
    try:
        import z3
    except ImportError:
        return {"status": "unknown", "reason": "z3-solver is not installed", "method": "z3"}
    t0 = time.monotonic()
    try:
        base, negated, tr, sub, note = _z3_problem(z3, c)
    except _Untranslatable as e:
        return {"status": "unknown", "reason": f"no proof: Z3 cannot take {e}", "method": "z3"}
    ms = max(50, int(budget_s * 1000))
    solver = _z3_solver(z3, base + [negated], ms)
    result = solver.check()
    if result == z3.unsat:
        if check_vacuity:
            left = max(50, ms - int((time.monotonic() - t0) * 1000))
            nonempty = _z3_solver(z3, base, left).check()
            if nonempty != z3.sat:
                why = "the domain is empty" if nonempty == z3.unsat else "could not show the domain is nonempty"
                return {"status": "unknown", "reason": f"Z3: the negated claim is unsatisfiable, but {why}",
                        "method": "z3"}
        return {"status": "proved", "reason": f"Z3: the negated claim is unsatisfiable{note}", "method": "z3"}
    if result == z3.sat:
        point, exact = _z3_point(z3, solver.model(), tr, sub, c)
        cex = _check_point(c, point, exact) if point else None
        if cex:
            return {"status": "refuted", "reason": f"Z3 model {cex['reason']}", "method": "z3", "point": cex["point"]}
        return {"status": "unknown", "reason": "Z3 found a model that does not check numerically", "method": "z3"}
    return {"status": "unknown", "reason": f"Z3 gave up after {ms / 1000:g} s: {solver.reason_unknown()}",
            "method": "z3"}


def _z3_solver(z3, assertions: list, timeout_ms: int):
    solver = z3.SolverFor("QF_NRA")
    solver.set("timeout", timeout_ms)
    solver.add(*assertions)
    return solver


def _z3_problem(z3, c: _Claim):
    """(base assertions: domain, constraint, definitions; the negated claim; translator; root
    substitution; a note on normalization)."""
    sub = _root_substitution(c)
    goal, den = _z3_goal(c, sub)
    cons = c.cons.xreplace(sub) if c.cons is not None else None
    symbols = set().union(*(e.free_symbols for e in (goal, cons, *sub.values()) if e is not None))
    symbols |= {v for v in c.order if v not in sub}
    tr = _ToZ3(z3, sorted(symbols, key=str))
    base = [zv > 0 if s.is_positive else zv >= 0 for s, zv in tr.vars.items() if s.is_nonnegative]
    G = tr(goal)
    negated = G != 0 if c.rel == "=" else G <= 0 if c.strict else G < 0
    if den is not None:
        base.append(tr(den) != 0)
    if cons is not None:
        base.append(tr(cons) == 0)
    note = ""
    if cons is None and c.domain == "positive" and len(tr.vars) > 1:
        try:
            homogeneous = sp.Poly(goal, *tr.vars).is_homogeneous
        except sp.PolynomialError:
            homogeneous = False
        if homogeneous:  # the sign is scale-invariant: fix one variable
            first = next(iter(tr.vars))
            base.append(tr.vars[first] == 1)
            note = f" (homogeneous: normalized {first} = 1)"
    return base + tr.side, negated, tr, sub, note


def _z3_point(z3, model, tr: _ToZ3, sub: dict, c: _Claim) -> tuple[dict, bool]:
    exact, vals = True, {}
    for s, zv in tr.vars.items():
        val = model.eval(zv, model_completion=True)
        if z3.is_rational_value(val):
            vals[s] = sp.Rational(val.numerator_as_long(), val.denominator_as_long())
        elif z3.is_algebraic_value(val):
            approx = val.approx(45)
            vals[s], exact = sp.Rational(approx.numerator_as_long(), approx.denominator_as_long()), False
        else:
            return {}, False
    point = {}
    for v in c.order:
        e = sub.get(v, v).xreplace(vals)
        point[v] = e if e.is_Rational else sp.N(e, 50)
        exact &= bool(e.is_Rational)
    return point, exact
