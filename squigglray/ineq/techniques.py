"""More inequality families (issue 21): SOS shapes, AM-GM on monomials, Titu, power means, Chebyshev,
rearrangement, Schur, Holder, the tangent-line trick, Cauchy-Schwarz forms.

Each family draws its equality point first, so the claim is tight (the relation variant's strongest
relation is >= or <=, never strict) and a bound variant's constant is the best one. Every reference
step is an exact rewrite, a rewrite on the constraint, or a lemma instance whose gap is a positive
constant times the lemma's (problems.LEMMAS). `generator.FAMILIES` registers them after its own
(bump `generator.GENERATOR_VERSION` when a family's draws change).
"""

from __future__ import annotations

import random
from fractions import Fraction
from math import gcd as math_gcd, lcm as math_lcm
from typing import Callable

from squigglray.ineq.draws import Draw, all_equal as _all_equal, frac as _frac, pick_vars as _vars
from squigglray.ineq.problems import Step

__all__ = ["TECHNIQUES"]


Mono = tuple  # exponent vector over the draw's variables


def _mono_text(e: Mono, vs) -> str:
    return "*".join(v if k == 1 else f"{v}**{k}" for v, k in zip(vs, e) if k)


def _poly_text(poly: dict, vs, signed: bool = False) -> str:
    """Terms by degree, then lexicographically; coefficients must be positive unless `signed`."""
    items = sorted(((e, c) for e, c in poly.items() if c), key=lambda t: (-sum(t[0]), [-x for x in t[0]]))
    out = ""
    for i, (e, c) in enumerate(items):
        if c < 0 and not signed:
            raise ValueError("negative coefficient in an unsigned polynomial")
        m, a = _mono_text(e, vs), abs(c)
        body = _frac(a) if not m else m if a == 1 else f"{_frac(a)}*{m}"
        out += (("-" if c < 0 else "") if i == 0 else (" - " if c < 0 else " + ")) + body
    return out or "0"


def _poly_add(p: dict, q: dict, k=1) -> dict:
    out = dict(p)
    for e, c in q.items():
        out[e] = out.get(e, 0) + k * c
    return {e: c for e, c in out.items() if c}


def _poly_mul(p: dict, q: dict) -> dict:
    out: dict = {}
    for e1, c1 in p.items():
        for e2, c2 in q.items():
            e = tuple(x + y for x, y in zip(e1, e2))
            out[e] = out.get(e, 0) + c1 * c2
    return {e: c for e, c in out.items() if c}


def _poly_at(p: dict, x) -> Fraction:
    total = Fraction(0)
    for e, c in p.items():
        term = Fraction(c)
        for xi, k in zip(x, e):
            term *= Fraction(xi) ** k
        total += term
    return total


def _monos(n: int, degree: int) -> list:
    """Exponent vectors of total degree `degree` over n variables."""
    if n == 1:
        return [(degree,)]
    return [(k,) + rest for k in range(degree, -1, -1) for rest in _monos(n - 1, degree - k)]


def _point(vs, x) -> tuple[dict, str]:
    vals = [_frac(Fraction(v)) for v in x]
    if len(set(vals)) == 1:
        return {v: vals[0] for v in vs}, f"{' = '.join(vs)} = {vals[0]}"
    return dict(zip(vs, vals)), ", ".join(f"{v} = {x}" for v, x in zip(vs, vals))


def _paren(t: str) -> str:
    return t if t.replace("_", "").isalnum() else f"({t})"


def _sos(rng: random.Random, degree: int) -> Draw:
    """lhs >= rhs where lhs - rhs is sum w_i*f_i**2 for random forms f_i (linear or quadratic) that all
    vanish at a drawn point: the monomials with positive coefficients make the lhs."""
    n = rng.choice([2, 3, 3]) if degree == 1 else rng.choice([2, 2, 3])
    vs = _vars(rng, n)
    homogeneous = rng.random() < 0.4
    x0 = (0,) * n if homogeneous else tuple(rng.choice([0, 1, 1, 2, -1]) for _ in range(n))
    pool = [e for d in ([degree] if homogeneous else range(1, degree + 1)) for e in _monos(n, d)]
    while True:
        forms, weights = [], []
        for _ in range(rng.randint(1, 3 if n > 2 or degree > 1 else 2)):
            chosen = rng.sample(pool, min(len(pool), rng.randint(2, 3)))
            f = {e: Fraction(rng.choice([-3, -2, -1, -1, 1, 1, 2, 3])) for e in chosen}
            first = sorted(f, key=lambda e: [-x for x in e])[0]
            content = math_gcd(*(int(c) for c in f.values()))  # 3*a - 3*b -> a - b (the weight scales)
            f = {e: c / content * (1 if f[first] > 0 else -1) for e, c in f.items()}
            f = _poly_add(f, {(0,) * n: -_poly_at(f, x0)})
            if f and f not in forms:
                forms.append(f)
                weights.append(rng.choice([1, 1, 2, 3, 4]))
        total: dict = {}
        for f, w in zip(forms, weights):
            total = _poly_add(total, _poly_mul(f, f), w)
        content = math_gcd(*(int(c) for c in total.values())) or 1  # 4*a**2 + 4*b**2 >= 8*a*b -> a**2 + b**2 >= 2*a*b
        total = {e: c / content for e, c in total.items()}
        weights = [Fraction(w, content) for w in weights]
        lhs_p = {e: c for e, c in total.items() if c > 0}
        rhs_p = {e: -c for e, c in total.items() if c < 0}
        if lhs_p and rhs_p and any(sum(e) for e in rhs_p):
            break
    lhs, rhs = _poly_text(lhs_p, vs), _poly_text(rhs_p, vs)
    texts = [_poly_text(f, vs, signed=True) for f in forms]
    tail = " + ".join(f"({t})**2" if w == 1 else f"{_frac(w)}*({t})**2" for t, w in zip(texts, weights))
    steps = [Step("=", f"{rhs} + {tail}"),
             Step(">=", rhs, "square_nonneg", {"squares": texts, "coeffs": [_frac(w) for w in weights]})]
    eq, eq_text = _point(vs, x0)
    bound = None
    if len(rhs_p) == 1:
        (e, c), = rhs_p.items()
        g = _mono_text(e, vs) or "1"
        if _poly_at({e: 1}, x0) > 0:
            bound = (_frac(c), g)
    return Draw(vs, "real", lhs, ">=", rhs, steps, eq, eq_text, bound=bound,
                knobs={"degree": degree, "n": n, "squares": len(forms), "homogeneous": homogeneous})


def sos_linear(rng: random.Random) -> Draw:
    """SOS with explicit squares of linear forms: e.g. a**2 + 3*b**2 + 2 >= 2*a*b + 4*b, (a - b)**2 + 2*(b - 1)**2."""
    return _sos(rng, 1)


def sos_quadratic(rng: random.Random) -> Draw:
    """SOS with explicit squares of quadratic forms (quartic claims): e.g. a**4 + 2*b**2 + 1 >= 2*a**2*b + 2*b,
    (a**2 - b)**2 + (b - 1)**2."""
    return _sos(rng, 2)


def amgm_monomials(rng: random.Random) -> Draw:
    """sum w_i*m_i >= W*m for monomials m_i whose weighted geometric mean is the monomial m (AM-GM, or
    weighted AM-GM with weights w_i/W): a**3 + b**3 + c**3 >= 3*a*b*c, 2*a**3 + b**3 >= 3*a**2*b, ..."""
    n = rng.choice([2, 3, 3])
    vs = _vars(rng, n)
    d = rng.randint(2, 5)
    all_monos = _monos(n, d)
    while True:  # r distinct monomials other than the target (n = 2, d = 2 has 3 monomials in all)
        r = rng.randint(2, min(4, len(all_monos) - 1))
        target = rng.choice(all_monos)
        ws = [rng.randint(1, 4) for _ in range(r - 1)] + [1]
        es = [rng.choice(all_monos) for _ in range(r - 1)]
        W = sum(ws)
        last = tuple(W * target[j] - sum(w * e[j] for w, e in zip(ws, es)) for j in range(n))
        es.append(last)
        if min(last) >= 0 and len(set(es)) == r and target not in es:
            break
    terms = [_mono_text(e, vs) for e in es]
    lhs = " + ".join(t if w == 1 else f"{w}*{t}" for w, t in zip(ws, terms))
    rhs = f"{W}*{_mono_text(target, vs)}"
    if len(set(ws)) == 1:
        mid = f"{r}*({'*'.join(_paren(t) for t in terms)})**(1/{r})"
        step = Step(">=", mid, "am_gm", {"terms": terms})
    else:
        wts = [_frac(Fraction(w, W)) for w in ws]
        mid = f"{W}*({'*'.join(f'{_paren(t)}**({x})' for t, x in zip(terms, wts))})"
        step = Step(">=", mid, "weighted_am_gm", {"terms": terms, "weights": wts})
    eq, eq_text = _all_equal(vs)
    return Draw(vs, "positive", lhs, ">=", rhs, [step, Step("=", rhs)], eq, eq_text,
                bound=(str(W), _mono_text(target, vs)), knobs={"n": n, "degree": d, "terms": r, "weights": ws})


def _linear_text(coefs, const, vs) -> str:
    return _poly_text({**{tuple(int(i == j) for j in range(len(vs))): Fraction(c) for i, c in enumerate(coefs) if c},
                       **({(0,) * len(vs): Fraction(const)} if const else {})}, vs)


def titu_forms(rng: random.Random) -> Draw:
    """Titu (Engel form of Cauchy-Schwarz) on positive linear forms y_i with numerators k_i**2 equal to
    y_i at the equality point: 9/(a + 2*b) + 4/(b + c) + 16/(a + 3*c) >= 81/(2*a + 3*b + 4*c); on
    a + b + c = s: k1**2/a + k2**2/b + k3**2/c >= (k1 + k2 + k3)**2/s."""
    if rng.random() < 0.3:  # on the constraint surface
        n = rng.choice([2, 3, 3, 4])
        vs = _vars(rng, n)
        ks = [rng.randint(1, 4) for _ in range(n)]
        s = rng.choice([1, 2, 3, 4, 6, sum(ks)])
        total = sum(ks)
        value = Fraction(total * total, s)
        lhs = " + ".join(f"{k * k}/{v}" for k, v in zip(ks, vs))
        steps = [Step(">=", f"({' + '.join(map(str, ks))})**2/({' + '.join(vs)})", "titu",
                      {"xs": [str(k) for k in ks], "ys": list(vs)}),
                 Step("=", _frac(value), "constraint")]
        eq, eq_text = _point(vs, [Fraction(s * k, total) for k in ks])
        return Draw(vs, "positive", lhs, ">=", _frac(value), steps, eq, eq_text, constraint=f"{' + '.join(vs)} - {s}",
                    bound=(_frac(value), "1"), knobs={"form": "constraint", "ks": ks, "s": s})
    nv = rng.choice([2, 3, 3])
    vs = _vars(rng, nv)
    n = rng.randint(2, 4)
    x0 = [rng.randint(1, 3) for _ in range(nv)]
    ys: list[tuple] = []
    while len(ys) < n:
        coefs = tuple(rng.choice([0, 0, 1, 1, 2, 3]) for _ in range(nv))
        const = rng.choice([0, 0, 0, 1, 2])
        if any(coefs) and (coefs, const) not in ys and sum(c > 0 for c in coefs) + (const > 0) >= 2:
            ys.append((coefs, const))
    ks = [sum(c * x for c, x in zip(coefs, x0)) + const for coefs, const in ys]
    ytexts = [_linear_text(c, k, vs) for c, k in ys]
    lhs = " + ".join(f"{k * k}/({y})" for k, y in zip(ks, ytexts))
    total = sum(ks)
    ysum = _linear_text([sum(c[j] for c, _ in ys) for j in range(nv)], sum(k for _, k in ys), vs)
    rhs = f"{total * total}/({ysum})"
    steps = [Step(">=", f"({' + '.join(map(str, ks))})**2/({' + '.join(ytexts)})", "titu",
                  {"xs": [str(k) for k in ks], "ys": ytexts}),
             Step("=", rhs)]
    eq, eq_text = _point(vs, x0)
    return Draw(vs, "positive", lhs, ">=", rhs, steps, eq, eq_text, bound=(str(total * total), f"1/({ysum})"),
                knobs={"form": "forms", "n": n, "ks": ks})


def _mean_text(r, terms: list[str]) -> str:
    n = len(terms)
    if r == 1:
        return f"({' + '.join(terms)})/{n}"
    if r == 0:
        return f"({'*'.join(_paren(t) for t in terms)})**(1/{n})"
    if r == -1:
        return f"{n}/({' + '.join(f'1/{_paren(t)}' for t in terms)})"
    inner = f"({' + '.join(f'{_paren(t)}**{r}' for t in terms)})/{n}"
    return f"sqrt({inner})" if r == 2 else f"({inner})**(1/{r})"


def power_mean(rng: random.Random) -> Draw:
    """The power-mean inequality M_p >= M_q (QM-AM, cubic mean-AM, AM-HM, QM-GM, ...), on variables,
    scaled variables or pair sums, or on a + b + c = s: sqrt((a**2 + b**2 + c**2)/3) >= (a + b + c)/3."""
    p, q = rng.choice([(2, 1), (2, 1), (3, 1), (3, 2), (1, -1), (2, -1), (2, 0), (3, 0), (4, 2)])
    shape = rng.choice(["vars", "scaled", "scaled", "shifted", "pairs", "constraint"] if q == 1
                       else ["vars", "scaled", "scaled", "shifted", "pairs"])
    n = 3 if shape == "pairs" else rng.choice([2, 3, 3, 4] if p < 3 else [2, 3])  # (the claim checker's Z3)
    vs = _vars(rng, n)
    k = rng.choice([1, 1, 2, 3, 4, 6])
    shift = 0
    if shape == "scaled":
        cs = [rng.randint(1, 5) for _ in range(n)]
        while len(set(cs)) == 1:
            cs = [rng.randint(1, 5) for _ in range(n)]
        terms = [v if c == 1 else f"{c}*{v}" for c, v in zip(cs, vs)]
        lcm = math_lcm(*cs)
        x0 = [Fraction(lcm, c) for c in cs]
    elif shape == "pairs":
        terms = [f"{vs[i]} + {vs[(i + 1) % n]}" for i in range(n)]
        x0 = [1] * n
    elif shape == "shifted":
        shift = rng.randint(1, 4)
        terms, x0 = [f"{v} + {shift}" for v in vs], [1] * n
    else:
        terms, x0 = list(vs), [1] * n
    domain = "real" if (p, q) == (2, 1) else "positive"
    lhs = _mean_text(p, terms) if k == 1 else f"{k}*{_mean_text(p, terms)}"
    mid = _mean_text(q, terms) if k == 1 else f"{k}*{_mean_text(q, terms)}"
    step = Step(">=", mid, "power_mean", {"terms": terms, "exps": [str(p), str(q)]})
    constraint, bound = None, None
    collected = None
    if q == 1 and shape in ("scaled", "pairs", "shifted"):  # k*(2*a + 3*b)/2 -> k*a + 3*k/2*b, as a rewrite
        coefs = [Fraction(0)] * n
        for i in range(n):
            if shape == "pairs":
                coefs[i] += 1
                coefs[(i + 1) % n] += 1
            else:
                coefs[i] += cs[i] if shape == "scaled" else 1
        collected = _linear_text([Fraction(k) * c / n for c in coefs], k * shift, vs)
    if shape == "constraint":
        s = rng.choice([1, 2, 3, 4, 6])
        constraint, value = f"{' + '.join(vs)} - {s}", Fraction(k * s, n)
        x0 = [Fraction(s, n)] * n
        steps, rhs, bound = [step, Step("=", _frac(value), "constraint")], _frac(value), (_frac(value), "1")
    elif collected:
        steps, rhs = [step, Step("=", collected)], collected
    else:
        steps, rhs = [step], mid
    eq, eq_text = _point(vs, x0)
    return Draw(vs, domain, lhs, ">=", rhs, steps, eq, eq_text, constraint=constraint, bound=bound,
                knobs={"p": p, "q": q, "shape": shape, "n": n, "k": k})


def _powers(vs, e: int) -> list[str]:
    return [v if e == 1 else f"{v}**{e}" for v in vs]


def chebyshev(rng: random.Random) -> Draw:
    """Chebyshev's sum inequality for the similarly ordered a**p, ... and a**q, ...:
    n*(a**(p+q) + ...) >= (a**p + ...)*(a**q + ...); on a + b + c = s with p = 1."""
    n = rng.choice([2, 3, 3, 4])
    vs = _vars(rng, n)
    k = rng.choice([1, 1, 2, 3])
    constrained_form = rng.random() < 0.3
    p = 1 if constrained_form else rng.randint(1, 2)
    q = rng.randint(p + 1, 3)
    xs, ys = _powers(vs, p), _powers(vs, q)
    lhs = f"{k * n}*({' + '.join(_powers(vs, p + q))})"
    g = f"({' + '.join(xs)})*({' + '.join(ys)})"
    step_rhs = g if k == 1 else f"{k}*{g}"
    steps = [Step(">=", step_rhs, "chebyshev", {"xs": xs, "ys": ys})]
    if constrained_form:
        s = rng.choice([1, 2, 3, 4, 6])
        rhs = f"{k * s}*({' + '.join(ys)})"
        steps.append(Step("=", rhs, "constraint"))
        x0 = [Fraction(s, n)] * n
        eq, eq_text = _point(vs, x0)
        return Draw(vs, "positive", lhs, ">=", rhs, steps, eq, eq_text, constraint=f"{' + '.join(vs)} - {s}",
                    bound=(str(k * s), f"({' + '.join(ys)})"), knobs={"n": n, "p": p, "q": q, "k": k, "s": s})
    eq, eq_text = _all_equal(vs)
    return Draw(vs, "positive", lhs, ">=", step_rhs, steps, eq, eq_text, bound=(str(k), g),
                knobs={"n": n, "p": p, "q": q, "k": k})


def rearrangement(rng: random.Random) -> Draw:
    """The rearrangement inequality for the similarly ordered a**p, ... and a**q, ...:
    a**(p+q) + b**(p+q) + ... >= a**p*b**q + b**p*c**q + ... for any permutation of the second factor."""
    n = rng.choice([2, 3, 3, 4])
    vs = _vars(rng, n)
    p, q = rng.choice([(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (2, 2), (2, 3), (3, 2)])
    k = rng.choice([1, 1, 2, 3])
    perm = list(range(n))
    while any(perm[i] == i for i in range(n)):  # a derangement: a fixed point is the same term on both sides
        rng.shuffle(perm)
    xs, ys = _powers(vs, p), _powers(vs, q)
    zs = [ys[j] for j in perm]
    g = " + ".join(f"{x}*{z}" for x, z in zip(xs, zs))
    lhs_inner = " + ".join(_powers(vs, p + q))
    lhs = lhs_inner if k == 1 else f"{k}*({lhs_inner})"
    rhs = g if k == 1 else f"{k}*({g})"
    steps = [Step(">=", rhs, "rearrangement", {"xs": xs, "ys": ys, "zs": zs})]
    eq, eq_text = _all_equal(vs)
    return Draw(vs, "positive", lhs, ">=", rhs, steps, eq, eq_text, bound=(str(k), f"({g})"),
                knobs={"n": n, "p": p, "q": q, "k": k, "perm": perm})


def schur(rng: random.Random) -> Draw:
    """Schur's inequality, t = 1 or 2, in expanded, pqr or constrained form, plus an SOS part:
    a**3 + b**3 + c**3 + 3*a*b*c >= a**2*b + a**2*c + ..., (a + b + c)**3 + 9*a*b*c >= 4*(a + b + c)*(ab + bc + ca)."""
    a, b, c = _vars(rng, 3)
    form = rng.choice(["t1", "t1", "t2", "pqr", "constraint"])
    k = rng.choice([1, 1, 2, 3])
    m = rng.choice([0, 0, 1, 2, 3])
    t = 2 if form == "t2" else 1
    s1, pq = f"{a} + {b} + {c}", f"{a}*{b} + {b}*{c} + {c}*{a}"
    constraint, x0 = None, [1, 1, 1]
    if form == "t1":
        big = f"{a}**3 + {b}**3 + {c}**3 + 3*{a}*{b}*{c}"
        small = f"{a}*{b}*({a} + {b}) + {b}*{c}*({b} + {c}) + {c}*{a}*({c} + {a})"
    elif form == "t2":
        big = f"{a}**4 + {b}**4 + {c}**4 + {a}*{b}*{c}*({s1})"
        small = f"{a}*{b}*({a}**2 + {b}**2) + {b}*{c}*({b}**2 + {c}**2) + {c}*{a}*({c}**2 + {a}**2)"
    else:
        big, small = f"({s1})**3 + 9*{a}*{b}*{c}", f"4*({s1})*({pq})"
    sq_big, sq_small = f"{a}**2 + {b}**2 + {c}**2", pq
    sk = (lambda e: e) if k == 1 else (lambda e: f"{k}*({e})")
    steps: list[Step] = []
    if form == "constraint":
        s = rng.choice([1, 2, 3, 6])
        constraint, x0 = f"{s1} - {s}", [Fraction(s, 3)] * 3
        lhs_schur, rhs_schur = f"9*{a}*{b}*{c} + {s ** 3}", f"{4 * s}*({pq})"
        steps.append(Step("=", sk(big) + (f" + {m}*({sq_big})" if m else ""), "constraint"))
    else:
        lhs_schur, rhs_schur = big, small
    lhs = sk(lhs_schur) + (f" + {m}*({sq_big})" if m else "")
    rhs = sk(rhs_schur) + (f" + {m}*({sq_small})" if m else "")
    after_schur = sk(small) + (f" + {m}*({sq_big})" if m else "")
    steps.append(Step(">=", after_schur, "schur", {"terms": [a, b, c], "t": [str(t)]}))
    if m:
        steps.append(Step(">=", sk(small) + f" + {m}*({sq_small})", "square_nonneg",
                          {"squares": [f"{a} - {b}", f"{b} - {c}", f"{c} - {a}"],
                           "coeffs": [_frac(Fraction(m, 2))] * 3}))
    if form == "constraint":
        steps.append(Step("=", rhs, "constraint"))
    eq, eq_text = _point([a, b, c], x0)
    return Draw([a, b, c], "nonnegative", lhs, ">=", rhs, steps, eq, eq_text, constraint=constraint,
                knobs={"form": form, "t": t, "k": k, "m": m})


def holder(rng: random.Random) -> Draw:
    """Holder for three sequences, (sum x**3)*(sum y**3)*(sum z**3) >= (sum x*y*z)**3, with y = z = (m_i):
    (m1*m1*a + m2*m2*b + ...)**3 <= (m1**3 + m2**3 + ...)**2*(a**3 + b**3 + ...), equality at a:b:... = m1:m2:..."""
    n = rng.choice([2, 3, 3])
    vs = _vars(rng, n)
    ms = [1] * n
    while math_gcd(*ms) != 1 or len(set(ms)) == 1 and rng.random() < 0.7:  # (3, 3) is (1, 1) scaled
        ms = [rng.randint(1, 3) for _ in range(n)]
    c3 = sum(x ** 3 for x in ms)
    C = c3 * c3
    cubes = " + ".join(f"{v}**3" for v in vs)
    lin = " + ".join(v if mm == 1 else f"{mm * mm}*{v}" for mm, v in zip(ms, vs))
    big, small = f"{C}*({cubes})", f"({lin})**3"
    args = {"xs": list(vs), "ys": [str(x) for x in ms], "zs": [str(x) for x in ms]}
    eq, eq_text = _point(vs, ms)
    if rng.random() < 0.5:
        return Draw(vs, "nonnegative", small, "<=", big, [Step("<=", big, "holder", args)], eq, eq_text,
                    bound=(str(C), f"({cubes})"), knobs={"n": n, "ms": ms, "form": "upper"})
    return Draw(vs, "nonnegative", big, ">=", small, [Step(">=", small, "holder", args)], eq, eq_text,
                knobs={"n": n, "ms": ms, "form": "lower"})


def tangent_line(rng: random.Random) -> Draw:
    """The tangent-line trick on x1 + ... + xn = n*t: each f(x) = c*x**k + m/x + e/x**2 lies above its tangent
    at t, f(x) - f(t) - f'(t)*(x - t) = (x - t)**2*g(x) with g >= 0 term by term, so sum f(x_i) >= n*f(t)."""
    n = rng.choice([2, 3, 3, 4])
    vs = _vars(rng, n)
    k = rng.randint(2, 5 if n < 4 else 3)  # (the claim checker's Z3 gives up beyond)
    cc = rng.choice([1, 1, 2, 3, 4])
    m = rng.choice([0, 0, 1, 2, 3, 4, 6])
    e = rng.choice([0, 0, 0, 1, 2, 3]) if n < 4 and k < 5 else 0  # (the claim checker's Z3 gives up beyond)
    t = rng.choice([1, 1, 2, 3, 4] if n < 4 else [1, 1, 2, 3])

    def f_text(x: str) -> str:
        return (f"{x}**{k}" if cc == 1 else f"{cc}*{x}**{k}") + (f" + {m}/{x}" if m else "") + \
            (f" + {e}/{x}**2" if e else "")

    ft = Fraction(cc * t ** k) + Fraction(m, t) + Fraction(e, t * t)
    dft = Fraction(cc * k * t ** (k - 1)) - Fraction(m, t * t) - Fraction(2 * e, t ** 3)
    alpha = ft - dft * t

    def g_text(x: str) -> str:
        # c*x**k: c*sum (k-1-j)*t**(k-2-j)*x**j;  m/x: m/(t**2*x);  e/x**2: e*(2*x + t)/(t**3*x**2)
        poly = {(j,): Fraction(cc * (k - 1 - j) * t ** (k - 2 - j)) for j in range(k - 1)}
        g = _poly_text(poly, [x])
        g += f" + {_frac(Fraction(m, t * t))}/{x}" if m else ""
        g += f" + {_frac(Fraction(e, t ** 3))}*(2*{x} + {t})/{x}**2" if e else ""
        return g

    lhs = " + ".join(f_text(v) for v in vs)
    value = n * ft
    total = " + ".join(vs)
    tangent = (_frac(n * alpha) if dft == 0 else f"{_frac(n * alpha)} - {_frac(-dft)}*({total})" if dft < 0
               else f"{_frac(n * alpha)} + {_frac(dft)}*({total})")
    steps = [Step(">=", tangent, "square_nonneg", {"squares": [f"{v} - {t}" for v in vs],
                                                     "coeffs": [g_text(v) for v in vs]}),
             Step("=", _frac(value), "constraint")]
    eq, eq_text = _point(vs, [t] * n)
    return Draw(vs, "positive", lhs, ">=", _frac(value), steps, eq, eq_text, constraint=f"{' + '.join(vs)} - {n * t}",
                bound=(_frac(value), "1"), knobs={"n": n, "k": k, "c": cc, "m": m, "e": e, "t": t})


def cauchy_forms(rng: random.Random) -> Draw:
    """Cauchy-Schwarz against constants: (w1*a**2 + ...)*(m1**2/w1 + ...) >= (m1*a + ...)**2 over the reals (xs
    sqrt(w_i)*a_i, ys m_i/sqrt(w_i)), as an upper bound of (m1*a + ...)**2, or on m1*a + m2*b + ... = s:
    w1*a**2 + ... >= s**2/(m1**2/w1 + ...); equality at a_i proportional to m_i/w_i."""
    n = rng.choice([2, 3, 3, 4])
    vs = _vars(rng, n)
    ms = [0] * n
    while 0 in ms or math_gcd(*ms) != 1:
        ms = [rng.choice([-3, -2, -1, 1, 1, 2, 2, 3, 4]) for _ in range(n)]
    ws = [1] * n if rng.random() < 0.4 else [rng.randint(1, 4) for _ in range(n)]
    M = sum(Fraction(x * x, w) for x, w in zip(ms, ws))
    lin = _poly_text({tuple(int(i == j) for j in range(n)): Fraction(x) for i, x in enumerate(ms)}, vs, signed=True)
    squares = " + ".join(f"{v}**2" if w == 1 else f"{w}*{v}**2" for v, w in zip(vs, ws))
    args = {"xs": [v if w == 1 else f"sqrt({w})*{v}" for v, w in zip(vs, ws)],
            "ys": [str(x) if w == 1 else f"{x}/sqrt({w})" for x, w in zip(ms, ws)]}
    direction = [Fraction(x, w) for x, w in zip(ms, ws)]  # the equality direction
    knobs = {"ms": ms, "ws": ws}
    if rng.random() < 0.4:  # on the constraint surface m . v = s
        s = rng.choice([1, 2, 3, 4, 5, 6, 10, 12])
        value = Fraction(s * s) / M
        steps = [Step(">=", f"({lin})**2/({_frac(M)})", "cauchy_schwarz", args), Step("=", _frac(value), "constraint")]
        eq, eq_text = _point(vs, [s * x / M for x in direction])
        return Draw(vs, "real", squares, ">=", _frac(value), steps, eq, eq_text, constraint=f"{lin} - {s}",
                    bound=(_frac(value), "1"), knobs={**knobs, "form": "constraint", "s": s})
    scale = math_lcm(*ws)
    eq, eq_text = _point(vs, [x * scale for x in direction])
    big = f"{_frac(M)}*({squares})"
    if rng.random() < 0.5:
        return Draw(vs, "real", f"({lin})**2", "<=", big, [Step("<=", big, "cauchy_schwarz", args)], eq, eq_text,
                    bound=(_frac(M), f"({squares})"), knobs={**knobs, "form": "upper"})
    return Draw(vs, "real", big, ">=", f"({lin})**2", [Step(">=", f"({lin})**2", "cauchy_schwarz", args)], eq, eq_text,
                knobs={**knobs, "form": "lower"})


TECHNIQUES: dict[str, Callable[[random.Random], Draw]] = {
    "sos_linear": sos_linear, "sos_quadratic": sos_quadratic, "amgm_monomials": amgm_monomials,
    "titu_forms": titu_forms, "power_mean": power_mean, "chebyshev": chebyshev, "rearrangement": rearrangement,
    "schur": schur, "holder": holder, "tangent_line": tangent_line, "cauchy_forms": cauchy_forms,
}
