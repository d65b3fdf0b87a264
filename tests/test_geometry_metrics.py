import math

import pytest
import torch

from squigglray.geometry import metrics as gm
from squigglray.geometry.metrics import (
    METRICS,
    activation_anisotropy,
    effective_rank_entropy,
    frobenius_norm,
    gradient_cosine,
    gradient_norm,
    linear_cka,
    relative_update,
    representation_drift,
    spectral_norm,
    stable_rank_fro_spec,
    update_norm,
)


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _orthogonal(d, seed=1):
    q, _ = torch.linalg.qr(_rand(d, d, seed=seed))
    return q


def test_metrics_dict_names_every_function():
    for name, desc in METRICS.items():
        assert callable(getattr(gm, name)), name
        assert isinstance(desc, str) and desc
    assert "stable_rank_fro_spec" in METRICS and "effective_rank_entropy" in METRICS


def test_norms_on_hand_computed_matrix():
    W = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert frobenius_norm(W) == pytest.approx(5.0)
    assert spectral_norm(W) == pytest.approx(4.0)
    assert stable_rank_fro_spec(W) == pytest.approx(25.0 / 16.0)
    assert gradient_norm(torch.tensor([1.0, 2.0, 2.0])) == pytest.approx(3.0)
    # effective rank: p = (3/7, 4/7)
    p = torch.tensor([3 / 7, 4 / 7], dtype=torch.float64)
    assert effective_rank_entropy(W, center=False) == pytest.approx(math.exp(float(-(p * p.log()).sum())))


def test_update_and_relative_update():
    W_prev = torch.tensor([[1.0, 2.0], [2.0, 4.0]])  # ||.||_F = 5
    W = W_prev + torch.tensor([[0.0, 3.0], [4.0, 0.0]])  # delta norm 5
    assert update_norm(W, W_prev) == pytest.approx(5.0)
    assert relative_update(W, W_prev) == pytest.approx(1.0)
    assert update_norm(W_prev, W_prev) == 0.0 and relative_update(W_prev, W_prev) == 0.0
    # 0-safe: previous weights all zero (e.g. LoRA B at init)
    Z = torch.zeros(2, 2)
    assert relative_update(W, Z) == 0.0 and update_norm(W, Z) == pytest.approx(frobenius_norm(W))
    with pytest.raises(ValueError):
        update_norm(torch.zeros(2, 3), torch.zeros(3, 2))


def test_identity_known_values():
    n = 7
    eye = torch.eye(n)
    assert stable_rank_fro_spec(eye) == pytest.approx(n)
    assert spectral_norm(eye) == pytest.approx(1.0)
    assert effective_rank_entropy(eye, center=False) == pytest.approx(n)
    assert effective_rank_entropy(eye, center=True) == pytest.approx(n - 1)  # centering drops 1 dim
    assert activation_anisotropy(eye) == pytest.approx(0.0)  # orthogonal rows


def test_rank_one_known_values():
    u, v = _rand(12, 1, seed=2), _rand(1, 9, seed=3)
    W = u @ v
    assert stable_rank_fro_spec(W) == pytest.approx(1.0, rel=1e-9)
    assert effective_rank_entropy(W, center=False) == pytest.approx(1.0, abs=1e-6)
    assert spectral_norm(W) == pytest.approx(float(u.norm() * v.norm()))


def test_stable_rank_and_effective_rank_bounds_on_random():
    W = _rand(20, 10, seed=4)
    sr = stable_rank_fro_spec(W)
    er = effective_rank_entropy(W, center=False)
    assert 1.0 <= sr <= 10.0 and 1.0 <= er <= 10.0
    assert sr < er  # the Fro/spec ratio is the more conservative of the two


def test_gradient_cosine():
    g = _rand(4, 5, seed=5)
    assert gradient_cosine(g, -g) == pytest.approx(-1.0)
    assert gradient_cosine(g, 3 * g) == pytest.approx(1.0)
    assert gradient_cosine(g, g.reshape(-1)) == pytest.approx(1.0)  # flattened
    assert gradient_cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx(0.0)
    assert gradient_cosine(g, torch.zeros_like(g)) == 0.0
    with pytest.raises(ValueError):
        gradient_cosine(torch.zeros(3), torch.zeros(4))


def _anisotropy_brute(X):
    X = X.to(torch.float64)
    n = X.shape[0]
    norms = X.norm(dim=1)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j and norms[i] > 0 and norms[j] > 0:
                total += float(X[i] @ X[j] / (norms[i] * norms[j]))
    return total / (n * (n - 1))


def test_anisotropy_matches_brute_force():
    X = _rand(25, 8, seed=6) + 0.7  # shared offset -> positive anisotropy
    a = activation_anisotropy(X)
    assert a == pytest.approx(_anisotropy_brute(X), abs=1e-12)
    assert 0.0 < a < 1.0
    X[3] = 0.0  # zero row: its cosines count as 0
    assert activation_anisotropy(X) == pytest.approx(_anisotropy_brute(X), abs=1e-12)


def test_anisotropy_identical_and_orthogonal_rows():
    row = _rand(1, 6, seed=7)
    assert activation_anisotropy(row.repeat(10, 1)) == pytest.approx(1.0)
    assert activation_anisotropy(row.repeat(10, 1) * torch.arange(1, 11).unsqueeze(1)) == pytest.approx(1.0)
    assert activation_anisotropy(_orthogonal(6)) == pytest.approx(0.0, abs=1e-12)
    assert activation_anisotropy(torch.cat([row, -row])) == pytest.approx(-1.0)
    assert activation_anisotropy(row) == 0.0  # n < 2


def test_linear_cka_invariances():
    X = _rand(30, 6, seed=8)
    assert linear_cka(X, X) == pytest.approx(1.0)
    assert linear_cka(X, X @ _orthogonal(6, seed=9)) == pytest.approx(1.0)
    assert linear_cka(X, 5.0 * X) == pytest.approx(1.0)
    assert linear_cka(X, X + 3.0) == pytest.approx(1.0)  # centering
    assert representation_drift(X, 2.0 * X @ _orthogonal(6, seed=10)) == pytest.approx(0.0, abs=1e-12)
    Y = _rand(30, 4, seed=11)
    c = linear_cka(X, Y)
    assert 0.0 < c < 1.0
    assert linear_cka(Y, X) == pytest.approx(c)
    assert representation_drift(X, Y) == pytest.approx(1.0 - c)


def test_linear_cka_gram_and_feature_forms_agree():
    # n=10 with d1*d2 > n*n takes the Gram branch; compare with the feature-space formula
    X, Y = _rand(10, 15, seed=12), _rand(10, 12, seed=13)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    ref = float((Yc.T @ Xc).norm() ** 2 / ((Xc.T @ Xc).norm() * (Yc.T @ Yc).norm()))
    assert linear_cka(X, Y) == pytest.approx(ref, rel=1e-10)
    with pytest.raises(ValueError):
        linear_cka(X, Y[:5])


def test_zero_and_degenerate_inputs_are_finite():
    Z = torch.zeros(5, 4)
    values = {
        "frobenius_norm": frobenius_norm(Z),
        "spectral_norm": spectral_norm(Z),
        "stable_rank_fro_spec": stable_rank_fro_spec(Z),
        "effective_rank_entropy": effective_rank_entropy(Z),
        "effective_rank_uncentered": effective_rank_entropy(Z, center=False),
        "activation_anisotropy": activation_anisotropy(Z),
        "linear_cka": linear_cka(Z, Z),
        "linear_cka_one_zero": linear_cka(_rand(5, 4), Z),
        "representation_drift": representation_drift(Z, Z),
        "relative_update": relative_update(Z, Z),
        "gradient_cosine": gradient_cosine(Z, Z),
    }
    assert all(isinstance(v, float) and math.isfinite(v) for v in values.values()), values
    assert values["stable_rank_fro_spec"] == 0.0 and values["effective_rank_entropy"] == 0.0
    assert values["linear_cka"] == 0.0 and values["representation_drift"] == 1.0
    # constant rows: centered effective rank 0, anisotropy 1
    C = torch.ones(4, 3)
    assert effective_rank_entropy(C) == 0.0 and activation_anisotropy(C) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        spectral_norm(torch.ones(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    X = _rand(16, 8, seed=14)
    Xl = X.to(dtype)
    Xr = Xl.to(torch.float64)  # what the metric actually sees after rounding
    pairs = [
        (frobenius_norm(Xl), frobenius_norm(Xr)),
        (spectral_norm(Xl), spectral_norm(Xr)),
        (stable_rank_fro_spec(Xl), stable_rank_fro_spec(Xr)),
        (effective_rank_entropy(Xl), effective_rank_entropy(Xr)),
        (activation_anisotropy(Xl), activation_anisotropy(Xr)),
        (linear_cka(Xl, Xl), 1.0),
        (gradient_cosine(Xl, -Xl), -1.0),
        (update_norm(Xl, torch.zeros_like(Xl)), frobenius_norm(Xr)),
    ]
    for got, want in pairs:
        assert isinstance(got, float)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    # and close to the float64 originals within the dtype's rounding
    tol = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    assert stable_rank_fro_spec(Xl) == pytest.approx(stable_rank_fro_spec(X), rel=tol)
    assert linear_cka(Xl, X) == pytest.approx(1.0, abs=tol)


def test_requires_grad_tensors_and_higher_dim_weights():
    W = _rand(4, 3, 2, seed=15).requires_grad_(True)  # e.g. a conv kernel: reshaped to (4, 6)
    assert spectral_norm(W) == pytest.approx(spectral_norm(W.detach().reshape(4, 6)))
    assert frobenius_norm(W) == pytest.approx(float(W.detach().norm()))
