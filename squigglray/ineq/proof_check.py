"""The rule book of the inequality proof checker: what justifies a step of a proof.

A proof (``problems.py``) is a chain ``e0 rel1 e1 rel2 e2 ... en``. It passes (the ``score`` of
``verifier.judge_completion``) only when every link is justified by one of the rules below, each
checked exactly by SymPy. A step that only a solver (Z3, sampling) can prove is *unjustified*,
however true; the solver's opinion of the chain is reported apart, as ``claim_verified``.

1. ``identity`` -- an ``=`` step whose difference is 0 under the domain's assumptions: after SymPy's
   automatic evaluation, ``expand``, the numerator over a common denominator expanded,
   ``cancel(together(.))``, or ``simplify`` (a difference that is not 0 at a rational test point is
   not tried: a speed-up that can only say "not an identity"). ``simplify`` is not
   used on expressions holding Abs/Min/Max/sign/Piecewise or a fractional power of a compound base:
   there it could hide the sign argument a proof must make (``sqrt((x - y)**2)`` is ``|x - y|``).
2. ``constraint`` -- an ``=`` step whose difference vanishes on the constraint surface: its numerator
   is a multiple of the constraint's numerator (``reduced``), or it is 0 (rule 1) on every branch of
   the constraint solved for one variable. (Cited ``by constraint`` or not: it is exact algebra.)
3. ``lemma:<name>`` -- an inequality step citing a lemma of ``problems.LEMMAS`` whose instance
   ``L >= R`` (``lemmas.lemma_instance`` on the cited arguments) matches the step: the step's gap
   (its larger side minus its smaller side) is ``k*(L - R)`` identically for a constant ``k > 0``.
   A positive constant multiple is allowed (scaling by a constant is elementary); a variable factor
   is not. Every argument must be evidently real (no even root, fractional power or log of a base
   whose sign rule 6 does not give). The lemma's side conditions must be evident by rule 6 (also
   over a common denominator, expanded); the solver may show one only if it is linear in the
   variables and not a positive multiple of the step's gap -- otherwise ``am_gm(X, 0)`` or
   ``square_nonneg(1; X)`` would make any true step ``X >= 0`` an "instance" whose side condition is
   the step itself. A citation that does not match is unjustified, even where the step is true.
   Citing the problem's own named result (its family, e.g. ``nesbitt`` on a Nesbitt problem) for a
   step that is the whole claim is circular -- unless the problem's reference proof does the same
   (then the family is an exercise in applying that lemma, as for ``am_gm`` or ``titu``).
4. ``elementary`` -- an inequality step without a lemma (``by algebra`` or nothing) whose gap is
   evidently nonnegative (positive for a strict step) by rule 6 in one of three forms: as written
   (SymPy's automatic evaluation cancels the terms both sides share, so *dropping nonnegative terms*
   is covered), over a common denominator (``together``) with the numerator expanded, or after
   ``cancel``. No factoring: a proof that needs ``a**2 - 2*a*b + b**2 = (a - b)**2`` writes it.
5. Nothing else. A plain step from the claim's lhs to the claim's rhs (equal after SymPy's
   automatic evaluation, so ``(lhs)``, ``1*(lhs)``, ``lhs + 0`` and reordered terms all count) is
   *circular*: it restates the claim, whatever rule 4 would say.
6. The sign rule ("evidently"): numbers by value; a variable by the domain (positive: > 0,
   nonnegative: >= 0, real: unknown); a sum of terms each >= 0 is >= 0 (> 0 if one term is > 0);
   products and quotients by their factors' signs; an even integer power is >= 0; any power of a
   positive base is > 0; an even root (or fractional power) is >= 0 where it is real; Abs >= 0;
   exp > 0; and monotonicity: ``c*x**r - c*y**r`` (c, r > 0, x, y >= 0 variables) has the sign of
   ``x - y``, so a product in which such differences pair up (``(a - b)*(a**2 - b**2)``, the
   "similarly ordered" side condition of Chebyshev and rearrangement) is >= 0 as written. Nothing
   else: no factoring, no solver.

The chain must start at the claim's lhs and end at its rhs by rule 1 or 2 (a missing end link fails,
true or not), and its relations must compose to the claim's (``verifier._composition_error``).

Equality case: a written ``Equality:`` line must name a condition -- equations ``a = b = c``,
``x = 2``, ratios ``a : b = 1 : 2``, joined by commas, ``;`` or ``and``; ``never`` for a strict
claim -- that has a solution in the domain (and on the constraint) and on whose solutions (SymPy
``solve``, every in-domain branch) lhs - rhs is 0 by rule 1. A line that cannot be read as such a
condition does not pass. Where the problem's statement or question asks for the equality case, a
missing line fails too (`asks_equality`).

A lemma's constant k is read off numerically at random points and then checked exactly (rule 1):
a wrong guess can only reject. The underscore functions run in the verifier's `TimedWorker`
(``verifier.check_proof`` calls them with a deadline); `asks_equality` runs in the caller.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import numpy as np
import sympy as sp

from squigglray.ineq.claim import MAX_OPS, Claim, ExpressionError, fmt, in_domain, parse, short, value
from squigglray.ineq.lemmas import lemma_instance
from squigglray.ineq.prove import equality_case
from squigglray.ineq.refute import solved_maps

POS, NONNEG, NEG, NONPOS, ZERO = "pos", "nonneg", "neg", "nonpos", "zero"
_UP = {">=", ">"}
_ASKS = re.compile(r"\bequality\b", re.I)


def asks_equality(problem) -> bool:
    """Does the problem's text ask for the equality case (then a missing ``Equality:`` line fails)?"""
    return bool(_ASKS.search(f"{problem.statement} {problem.question}"))


# ---- rule 6: the sign rule ---------------------------------------------------------------------
def _sign_add(signs: list) -> str | None:
    if any(s is None for s in signs):
        return None
    nonzero = [s for s in signs if s != ZERO]
    if not nonzero:
        return ZERO
    if all(s in (POS, NONNEG) for s in nonzero):
        return POS if POS in nonzero else NONNEG
    if all(s in (NEG, NONPOS) for s in nonzero):
        return NEG if NEG in nonzero else NONPOS
    return None


def _sign_mul(signs: list) -> str | None:
    if any(s is None for s in signs):
        return None
    if ZERO in signs:
        return ZERO
    negative = sum(s in (NEG, NONPOS) for s in signs) % 2 == 1
    strict = all(s in (POS, NEG) for s in signs)
    return (NEG if strict else NONPOS) if negative else (POS if strict else NONNEG)


def _sign_number(e: sp.Expr) -> str | None:
    if e.is_Rational:
        return POS if e > 0 else NEG if e < 0 else ZERO
    try:
        v = sp.N(e, 30)
    except (TypeError, ValueError, ArithmeticError):
        return None
    if not (v.is_real and v.is_finite):
        return None
    if abs(v) > 1e-20:
        return POS if v > 0 else NEG
    return ZERO if e.is_zero else None


def sign(e: sp.Expr) -> str | None:
    """Rule 6: the evident sign of `e` (pos, nonneg, neg, nonpos, zero) or None."""
    if e.is_number:
        return _sign_number(e)
    if e.is_Symbol:
        return POS if e.is_positive else NONNEG if e.is_nonnegative else None
    if e.is_Add:
        return _sign_add([sign(a) for a in e.args])
    if e.is_Mul:
        return _sign_mul([sign(a) for a in e.args])
    if e.is_Pow:
        return _sign_pow(e.base, e.exp)
    if isinstance(e, sp.Abs):
        s = sign(e.args[0])
        return POS if s in (POS, NEG) else NONNEG
    if isinstance(e, sp.exp):
        return POS
    return None


def _sign_pow(base: sp.Expr, ex: sp.Expr) -> str | None:
    sb = sign(base)
    if ex.is_Integer:
        n = int(ex)
        if n % 2 == 0:
            return POS if n < 0 or sb in (POS, NEG) else NONNEG  # a real base is assumed (chain hole check)
        if sb is None or sb == ZERO and n < 0:
            return None
        return sb if n > 0 else {NONNEG: POS, NONPOS: NEG}.get(sb, sb)
    if ex.is_Rational:
        if sb == POS:
            return POS
        if sb in (NONNEG, ZERO) or ex.q % 2 == 0:  # principal even root: >= 0 where real
            return NONNEG if ex > 0 else POS
        return None
    return POS if sb == POS else None


def _pair(e: sp.Expr) -> tuple | None:
    """(x, y) when `e` is ``c*x**r - c*y**r`` (c > 0, r > 0 numbers, x, y variables >= 0): then e has
    the sign of x - y (rule 6, monotonicity)."""
    if not e.is_Add or len(e.args) != 2:
        return None
    t1, t2 = e.args
    for P, N in ((t1, -t2), (t2, -t1)):
        (cp, bp), (cn, bn) = P.as_coeff_Mul(), N.as_coeff_Mul()
        (xp, rp), (xn, rn) = bp.as_base_exp(), bn.as_base_exp()
        if cp == cn and cp > 0 and rp == rn and rp.is_number and rp > 0 and xp.is_Symbol and xn.is_Symbol \
                and xp != xn and sign(xp) in (POS, NONNEG) and sign(xn) in (POS, NONNEG):
            return xp, xn
    return None


def _paired_nonneg(e: sp.Expr) -> bool:
    """Rule 6, similarly ordered factors: `e` is a product of factors evidently >= 0 and of
    differences ``x**r - y**r`` (`_pair`) in which each pair {x, y} occurs an even number of times
    (``(a - b)*(a**2 - b**2) >= 0``), with the orientations' sign and the other factors >= 0."""
    counts: dict = {}
    flips, others = 0, []
    for f in sp.Mul.make_args(e):
        base, n = (f.base, int(f.exp)) if f.is_Pow and f.exp.is_Integer and f.exp > 0 else (f, 1)
        pr = _pair(base)
        if pr is None:
            others.append(sign(f))
            continue
        key = tuple(sorted(pr, key=str))
        counts[key] = counts.get(key, 0) + n
        flips += n * (pr != key)
    if not counts or any(c % 2 for c in counts.values()):
        return False
    return _sign_mul(others + ([NEG] if flips % 2 else [])) in (POS, NONNEG, ZERO) if others or flips % 2 else True


def _evident(gap: sp.Expr, strict: bool) -> str | None:
    """Which form of `gap` is evidently >= 0 (> 0 if strict), or None (rule 4)."""
    want = {POS} if strict else {POS, NONNEG, ZERO}
    if sign(gap) in want:
        return "as written"
    if not strict and _paired_nonneg(gap):
        return "similarly ordered factors"
    if sp.count_ops(gap) > MAX_OPS:
        return None
    n, d = sp.fraction(sp.together(gap))
    en = sp.expand(n)
    for dd in (d, sp.expand(d)):
        sd = sign(dd)
        if _sign_mul([sign(en), POS if sd == NONNEG else NEG if sd == NONPOS else sd]) in want:
            return "over a common denominator, expanded"
    n, d = sp.fraction(sp.cancel(sp.together(gap)))
    sd = sign(d)
    if _sign_mul([sign(n), POS if sd == NONNEG else NEG if sd == NONPOS else sd]) in want:
        return "after cancel"
    return None


def _evidently_real(e: sp.Expr) -> str | None:
    """None when every even root / fractional power / log in `e` has an evidently nonnegative
    (log: positive) argument, else the first offending subexpression."""
    for x in sp.preorder_traversal(e):
        if x.is_Pow and x.exp.is_Rational and not x.exp.is_Integer:
            if sign(x.base) not in (POS, NONNEG, ZERO) or (x.exp < 0 and sign(x.base) != POS):
                return str(x)
        elif isinstance(x, sp.log) and sign(x.args[0]) != POS:
            return str(x)
    return None


# ---- rules 1 and 2: exact rewrites ---------------------------------------------------------------
def _nonzero_somewhere(e: sp.Expr) -> bool:
    """`e` is clearly not 0 at a positive rational point (any domain holds it): no need to try
    to prove it 0. (Only ever says "not zero": the exact methods decide "zero".)"""
    syms = sorted(e.free_symbols, key=str)
    for i in range(2):
        pt = {v: sp.Rational(7 + 5 * j + 3 * i, 11 + 2 * j * (i + 1)) for j, v in enumerate(syms)}
        try:
            v = e.xreplace(pt)
            if v.is_Rational:  # a rational function at a rational point: exact
                if v != 0:
                    return True
                continue
            if v.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
                continue
            v = sp.N(v, 60)
        except (TypeError, ValueError, ZeroDivisionError, ArithmeticError):
            continue
        if v.is_real and v.is_finite and abs(v) > 1e-30:
            return True
    return False


def _simplify_safe(e: sp.Expr) -> bool:
    if e.has(sp.Abs, sp.Min, sp.Max, sp.Piecewise, sp.sign):
        return False
    return not any(p.exp.is_Rational and not p.exp.is_Integer and p.base.atoms(sp.Add) for p in e.atoms(sp.Pow))


def exact_zero(e: sp.Expr) -> str | None:
    """Rule 1: how `e` is 0 identically ("as written", "expand", "common denominator", "cancel",
    "simplify"), or None."""
    if e == 0:
        return "as written"
    if _nonzero_somewhere(e):
        return None
    if sp.expand(e) == 0:
        return "expand"
    if sp.count_ops(e) > MAX_OPS:
        return None
    if sp.expand(sp.fraction(sp.together(e))[0]) == 0:
        return "common denominator"
    if sp.cancel(sp.together(e)) == 0:
        return "cancel"
    if _simplify_safe(e) and sp.simplify(e) == 0:
        return "simplify"
    return None


def _on_surface(d: sp.Expr, c: Claim) -> str | None:
    """Rule 2: why `d` vanishes on the constraint surface, or None."""
    if c.cons is None:
        return None
    try:
        num = sp.fraction(sp.cancel(sp.together(d)))[0]
        cnum = sp.fraction(sp.together(c.cons))[0]
        if sp.reduced(num, [cnum], *c.order)[1] == 0:
            return "its numerator is a multiple of the constraint"
    except (sp.PolynomialError, sp.GeneratorsNeeded, sp.CoercionFailed):
        pass
    maps = solved_maps(c)
    if maps and all(exact_zero(d.xreplace(dict(zip(c.order, m.coords)))) for m in maps):
        return f"it is 0 with the constraint {maps[0].how}"
    return None


def _rewrite(d: sp.Expr, c: Claim) -> tuple[str, str] | None:
    how = exact_zero(d)
    if how:
        return "identity", f"an identity ({how})"
    why = _on_surface(d, c)
    return ("constraint", f"on the constraint surface: {why}") if why else None


# ---- worker entry points -----------------------------------------------------------------------
def _claim(spec: dict) -> Claim:
    """The parsed claim (cached: a proof's steps share it; SymPy expressions are immutable)."""
    return _parsed_claim(json.dumps(spec, sort_keys=True))


@lru_cache(maxsize=64)
def _parsed_claim(key: str) -> Claim:
    return Claim(json.loads(key))


def _justify_step(spec: dict, prev: str, step: dict, family: str = "", ref_lemmas: list | None = None) -> dict:
    """Worker: which rule justifies ``prev step.rel step.rhs`` in the claim `spec`'s setting.

    Returns {"rule": "identity" | "constraint" | "lemma:<name>" | "elementary" | None, "why": text,
    "circular": bool, "solver_side": [[expr, rel], ...] (side conditions left to the solver; the
    rule holds only if the solver proves them)}. Raises ExpressionError for an unparseable side.
    """
    c = _claim(spec)
    rel, lemma, args = step["rel"], step.get("lemma"), step.get("args") or {}
    p, q = parse(prev, c.syms, "step lhs"), parse(step["rhs"], c.syms, "step rhs")
    out = {"rule": None, "why": "", "circular": False, "solver_side": []}
    if rel == "=":
        r = _rewrite(p - q, c)
        if r:
            out.update(rule=r[0], why=r[1])
        else:
            out["why"] = "not an identity (SymPy: the difference is not 0" + \
                         (", not even on the constraint surface)" if c.cons is not None else ")")
        return out
    gap = p - q if rel in _UP else q - p
    if lemma and lemma != "constraint":
        return _lemma_step(c, prev, step, gap, family, ref_lemmas or [], out)
    if p == c.lhs and q == c.rhs:
        out.update(circular=True, why="circular: the step is the claim itself (its lhs to its rhs), "
                                      "justified by nothing")
        return out
    how = _evident(gap, rel in (">", "<"))
    if how:
        out.update(rule="elementary", why=f"the gap is evidently {'positive' if rel in ('>', '<') else 'nonnegative'}"
                                          f" term by term ({how})")
    else:
        out["why"] = "no rule: the gap is not evidently nonnegative term by term (as written, over a common " \
                     "denominator, or after cancel), and no lemma is cited"
    return out


def _lemma_step(c: Claim, prev: str, step: dict, gap: sp.Expr, family: str, ref_lemmas: list, out: dict) -> dict:
    lemma, args = step["lemma"], step.get("args") or {}
    for key, vals in args.items():
        for x in vals if isinstance(vals, (list, tuple)) else []:
            try:
                bad = _evidently_real(parse(str(x), c.syms, f"{lemma} argument"))
            except ExpressionError as e:
                out["why"] = f"{lemma} cited with an unusable argument: {e}"
                return out
            if bad:
                out["why"] = f"{lemma} argument {x} is not evidently real ({bad})"
                return out
    m = _match(c, step["rel"], gap, lemma, args)
    if not m["ok"]:
        out["why"] = f"the cited lemma does not justify the step: {m['reason']}"
        return out
    if lemma == family and lemma not in ref_lemmas and _ratio(gap, c.slack, c) is not None:
        out.update(circular=True, why=f"circular: the step is the whole claim and cites {lemma}, the problem's "
                                      f"own result")
        return out
    for expr, rel in m["side"]:
        e = parse(str(expr), c.syms, f"{lemma} side condition")
        if _evident(e, rel == ">"):
            continue
        if _linear(e, c) and _ratio(gap, e, c) is None:
            out["solver_side"].append([str(expr), rel])
            continue
        out["why"] = f"{m['reason']}, but its side condition {expr} {rel} 0 is not evident (rule 6), and the " \
                     f"solver may show only linear side conditions that are not the step itself"
        return out
    out.update(rule=f"lemma:{lemma}", why=m["reason"])
    return out


def _match(c: Claim, rel: str, gap: sp.Expr, lemma: str, args: dict) -> dict:
    """Is the step's `gap` k*(L - R) for the lemma instance L >= R and a constant k > 0?
    {"ok", "reason", "side": [[expr, rel], ...]}."""
    try:
        L, R, side, text = lemma_instance(lemma, args, c.syms)
    except ExpressionError as e:
        return {"ok": False, "reason": f"{lemma} cited with unusable arguments: {e}"}
    if rel not in (">=", "<="):
        return {"ok": False, "reason": f"{text} gives a non-strict inequality, the step claims {rel!r}"}
    diff = L - R
    if exact_zero(diff):
        ok = exact_zero(gap) is not None
        return {"ok": ok, "side": side,
                "reason": f"{text} is trivial (L == R)" + ("" if ok else " and the step is not an identity")}
    k = _ratio(gap, diff, c)
    if k is None:
        big, small = ("lhs", "rhs") if rel == ">=" else ("rhs", "lhs")
        return {"ok": False, "reason": f"{text} does not match the step: {big} - {small} is not a positive "
                                       f"constant times ({short(str(L), 50)}) - ({short(str(R), 50)})"}
    return {"ok": True, "side": side, "reason": f"instance of {text}" + ("" if k == 1 else f" times {k}")}


def _ratio(gap: sp.Expr, diff: sp.Expr, c: Claim) -> sp.Expr | None:
    """A constant k > 0 with gap == k*diff identically (rule 1), or None. k is read off at random
    points of the domain (30 digits), then checked exactly."""
    rng = np.random.default_rng(2)
    vals = []
    for _ in range(12):
        pt = {s: sp.Rational(int(rng.integers(1, 40)), int(rng.integers(1, 40))) * (1 if c.domain != "real" or
              rng.random() < 0.5 else -1) for s in c.order}
        g, d = value(gap, pt), value(diff, pt)
        if g is None or d is None or abs(d) < 1e-15:
            continue
        vals.append(g / d)
        if len(vals) == 3:
            break
    if len(vals) < 3 or not all(abs(v - vals[0]) < 1e-12 * (1 + abs(vals[0])) for v in vals):
        return None
    k = sp.nsimplify(vals[0], rational=True, tolerance=1e-12)  # a guess: the exact check decides
    return k if k.is_positive and exact_zero(gap - k * diff) else None


def _linear(e: sp.Expr, c: Claim) -> bool:
    try:
        return sp.Poly(e, *c.order).total_degree() <= 1
    except (sp.PolynomialError, sp.GeneratorsNeeded):
        return False


def _same_exact(spec: dict, a: str, b: str) -> dict | None:
    """Worker: {"rule", "why"} when a == b by rule 1 or 2 (the chain's ends), else None."""
    c = _claim(spec)
    r = _rewrite(parse(a, c.syms, "chain end") - parse(b, c.syms, "claim side"), c)
    return {"rule": r[0], "why": r[1]} if r else None


_LEAD = re.compile(r"^(?:equality\s+(?:holds|occurs|is\s+attained)\s*)?(?:(?:if\s+and\s+only\s+if|iff|exactly\s+when|"
                   r"only\s+when|when|if|at|for)\b)?\s*", re.I)
_NEVER = re.compile(r"^(?:never|none|no\s+equality(?:\s+case)?|it\s+never\s+holds|not\s+attained)$", re.I)
_TRIALS = ((1,) * 8, (1, 2, 3, 5, 7, 11, 13, 17), (2, 1, sp.Rational(1, 2), 3, sp.Rational(1, 3), 4, 5, 6))


def _conditions(text: str, syms: dict) -> list[sp.Expr]:
    """Equations (expr == 0) of an Equality line; ExpressionError when it is not one."""
    eqs = []
    for part in re.split(r",|;|\band\b", text.replace("==", "=")):
        part = part.strip()
        if not part:
            continue
        sides = [s.strip() for s in part.split("=")]
        if len(sides) < 2 or not all(sides):
            raise ExpressionError(f"{part!r} is not an equation")
        if ":" in part:
            if len(sides) != 2:
                raise ExpressionError(f"{part!r}: a ratio condition is 'x : y = 1 : 2'")
            u, v = ([parse(x, syms, "ratio term") for x in s.split(":")] for s in sides)
            if len(u) != len(v) or len(u) < 2:
                raise ExpressionError(f"{part!r}: both sides of a ratio need the same number (>= 2) of terms")
            eqs += [u[i] * v[j] - u[j] * v[i] for i in range(len(u)) for j in range(i + 1, len(u))]
        else:
            es = [parse(s, syms, "equality condition") for s in sides]
            eqs += [x - y for x, y in zip(es, es[1:])]
    return [e for e in eqs if e != 0]


def _equality_condition(spec: dict, text: str, point: dict | None = None) -> dict:
    """Worker: is the Equality line `text` right for the claim `spec`? {"ok": True | False | None
    (unreadable or undecidable), "why"}. `point`: the problem's known equality point, if any."""
    c = _claim(spec)
    t = _LEAD.sub("", text.strip().strip("$").strip().rstrip(".").strip(), count=1).strip()
    if _NEVER.match(t):
        if c.strict:
            return {"ok": True, "why": "the claim is strict, so equality never holds"}
        if point and equality_case(spec, point)["status"] == "proved":
            return {"ok": False, "why": f"'{text}' is wrong: lhs == rhs at {point}"}
        return {"ok": None, "why": f"'{text}' cannot be checked for a non-strict claim"}
    try:
        eqs = _conditions(t, c.syms)
    except ExpressionError as e:
        return {"ok": None, "why": f"the Equality line {text!r} is not a condition the checker can read: {e}"}
    if not eqs:
        return {"ok": None, "why": f"the Equality line {text!r} names no condition"}
    if c.cons is not None:
        eqs.append(c.cons)
    nums = [sp.fraction(sp.together(e))[0] for e in eqs]
    unknowns = [v for v in c.order if any(n.has(v) for n in nums)]
    try:
        sols = sp.solve(nums, unknowns, dict=True)
    except (NotImplementedError, ValueError, TypeError) as e:
        return {"ok": None, "why": f"could not solve the Equality condition {text!r}: {e}"}
    diff, inside = c.lhs - c.rhs, 0
    for sol in sols:
        at = _domain_point(c, sol)
        if at is None:
            continue
        inside += 1
        g = diff.xreplace(sol)
        if exact_zero(g):
            continue
        val = value(g, at)
        if val is not None and abs(val) > 1e-12 * (1 + abs(value(c.lhs.xreplace(sol), at) or 0)):
            where = ", ".join(f"{v} = {fmt(x)}" for v, x in at.items() if x is not None)
            return {"ok": False, "why": f"the Equality line {text!r} is wrong: lhs - rhs = {fmt(val)} at {where}"}
        return {"ok": None, "why": f"could not show lhs == rhs exactly on the Equality condition {text!r}"}
    if not inside:
        return {"ok": False, "why": f"the Equality condition {text!r} has no solution in the {c.domain} domain"
                                    + (" on the constraint surface" if c.cons is not None else "")}
    return {"ok": True, "why": f"lhs == rhs wherever {t}"}


def _domain_point(c: Claim, sol: dict) -> dict | None:
    """A point of the solution family `sol` (free variables set to trial values) in the domain with
    both sides real, or None."""
    free = sorted(set().union(*(sp.sympify(x).free_symbols for x in sol.values())) | (set(c.order) - set(sol)),
                  key=str)
    for trial in _TRIALS:
        sub = {f: sp.Integer(1) * trial[i % len(trial)] for i, f in enumerate(free)}
        vals = {v: sp.sympify(sol.get(v, v)).xreplace(sub) for v in c.order}
        nums = [value(x, {}) for x in vals.values()]
        if any(x is None or not in_domain(x, c.domain) for x in nums):
            continue
        if value(c.lhs, vals) is None or value(c.rhs, vals) is None:
            continue
        return vals
    return None
