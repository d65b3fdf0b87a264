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
claim is (``sqrt(a)`` over the reals) is invalid. Expression text may come from a model, so it is
parsed by the symbolic core's whitelisting parser (no ``eval``), which refuses oversized constant
powers before SymPy computes them.

All SymPy/Z3 work runs in a `TimedWorker` subprocess under a deadline (SymPy can hang, and signal
alarms do not work off the main thread): the functions here only orchestrate. The worker side is
split by job: `claim` (parsing, the parsed claim, exact re-checks), `refute` (sampling), `prove`
(SymPy and Z3), `lemmas` (lemma instances), `proof_check` (the rule book); their old private names
stay importable from here. This module must not import ray.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from squigglray.ineq import claim as _c, lemmas as _l, prove as _p, refute as _r
from squigglray.ineq.claim import ExpressionError, short as _short, spec as _spec
from squigglray.ineq.problems import Problem, Step
from squigglray.ineq.proof_text import ProofParseError, parse_answer, parse_proof
from squigglray.verify.worker import TimedWorker, WorkerError, WorkerTimeout

__all__ = ["ExpressionError", "ProofVerdict", "Verdict", "check_claim", "check_equality_case", "check_proof",
           "check_step", "default_worker", "judge_completion"]
# The worker side's names from before the split (proof_mutations, tests and benches use some).
_Claim, _parse, _symbols, _is_zero, _fmt, _value, _in_domain, _check_point, _MAX_OPS = (
    _c.Claim, _c.parse, _c.symbols, _c.is_zero, _c.fmt, _c.value, _c.in_domain, _c.check_point, _c.MAX_OPS)
_refute_by_sampling, _undefined_in_chain, _solved_maps = _r.refute_by_sampling, _r.undefined_in_chain, _r.solved_maps
_prove, _equality_case, _same_constant = _p.prove, _p.equality_case, _p.same_constant
_lemma_instance, _match_lemma = _l.lemma_instance, _l.match_lemma

_GRACE_S = 0.5  # past Z3's own timeout before the worker is killed (a kill costs a restart)
_REFUTE, _PROVE, _LEMMAS = _r.__name__, _p.__name__, _l.__name__  # worker-side modules


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
    """Run the worker-side ``module:name``; a remote ExpressionError is re-raised as itself."""
    try:
        return (worker or default_worker()).call(name if ":" in name else f"{__name__}:{name}", *args,
                                                 timeout_s=timeout_s)
    except WorkerError as e:
        if e.remote_type.endswith("ExpressionError"):
            raise ExpressionError(e.remote_message) from None
        raise


def _since(t0: float) -> float:
    return round(time.monotonic() - t0, 4)


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
        sampled = _remote(worker, f"{_REFUTE}:refute_by_sampling", spec, samples, seed, near, timeout_s=left())
        if sampled["cex"]:
            return Verdict("refuted", sampled["cex"]["reason"], sampled["cex"]["point"], _since(t0), "sampling")
        if sampled["defined"] == 0:  # a proof would be vacuous
            return Verdict("unknown", "no sampled point of the domain (and constraint surface) has both sides "
                           "real; a proof would be vacuous", None, _since(t0), "sampling")
        budget = left()
        res = _remote(worker, f"{_PROVE}:prove", spec, budget, sampled["defined"] is None, timeout_s=budget + _GRACE_S)
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
        res = _remote(worker, f"{_PROVE}:equality_case", spec, {str(k): str(v) for k, v in point.items()},
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
        return _remote(worker, f"{_LEMMAS}:match_lemma", str(prev_expr), step.rel, step.rhs, step.lemma, step.args,
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
        return _remote(worker, f"{_REFUTE}:undefined_in_chain", spec, [start] + [s.rhs for s in steps], 150, 0,
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
        ok = _remote(worker, f"{_PROVE}:same_constant", cleaned, problem.answer, timeout_s=timeout_s)
    except ExpressionError as e:
        return False, f"answer {answer!r} is not a constant: {e}"
    except (WorkerTimeout, WorkerError) as e:
        return False, f"answer {answer!r} could not be compared: {e}"
    return ok, "" if ok else f"answer {cleaned} differs from the best constant"
