"""Pure geometry metrics on torch tensors.

Every function accepts a tensor of any floating dtype (float32, bfloat16, float16, float64) or
anything `torch.as_tensor` accepts, computes in float64 for stability (inputs are detached, the
device is kept) and returns a Python float. Degenerate inputs (zero matrices, zero vectors, fewer
than two rows) return a documented finite value instead of NaN, so a capture never writes NaN
into the long geometry table.

Naming: two quantities are called "stable rank" in the literature. Here
`stable_rank_fro_spec` is ||W||_F^2 / ||W||_2^2 (Rudelson & Vershynin's numerical rank) and
`effective_rank_entropy` is exp(entropy of normalized singular values) (Roy & Vetterli 2007).
"""

from __future__ import annotations

import math

import torch

_EPS = 1e-12  # norms at or below this (in float64) count as zero

# metric name (the `metric` column of the long geometry schema) -> one-line description + formula
METRICS: dict[str, str] = {
    "frobenius_norm": "weight Frobenius norm: ||W||_F = sqrt(sum_ij W_ij^2)",
    "update_norm": "update norm since the previous optimizer step: ||W_t - W_{t-1}||_F",
    "relative_update": "relative update: ||W_t - W_{t-1}||_F / ||W_{t-1}||_F (0 when ||W_{t-1}||_F = 0)",
    "gradient_norm": "gradient norm: ||g||_2 of the flattened gradient",
    "gradient_cosine": "gradient coherence: <g_t, g_{t-1}> / (||g_t|| ||g_{t-1}||) (0 when a norm is 0)",
    "spectral_norm": "top singular value: ||W||_2 = sigma_max(W)",
    "stable_rank_fro_spec": "numerical/stable rank (Rudelson-Vershynin): ||W||_F^2 / ||W||_2^2 (0 for W = 0)",
    "effective_rank_entropy": (
        "effective rank of activations (Roy-Vetterli 2007): exp(-sum_i p_i log p_i), "
        "p_i = sigma_i / sum_j sigma_j (0 for X = 0)"
    ),
    "activation_anisotropy": (
        "mean pairwise cosine of activation rows, i != j: (||sum_i x_i/||x_i|| ||^2 - m) / (n(n-1))"
    ),
    "linear_cka": (
        "linear CKA (Kornblith et al. 2019) of centered X, Y: "
        "||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) (0 when either has no variance)"
    ),
    "representation_drift": "representation drift since the previous optimizer step: 1 - linear_cka(X_t, X_{t-1})",
}


def _f64(t) -> torch.Tensor:
    """Detached float64 copy of `t` (bfloat16/float16/float32 accepted), on its own device."""
    return torch.as_tensor(t).detach().to(torch.float64)


def _matrix(W) -> torch.Tensor:
    """float64 2-D view: >2-D tensors are flattened to (shape[0], -1); 0/1-D raise ValueError."""
    W = _f64(W)
    if W.ndim < 2:
        raise ValueError(f"expected a matrix (ndim >= 2), got shape {tuple(W.shape)}")
    return W.reshape(W.shape[0], -1)


def _same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")


def frobenius_norm(W) -> float:
    """Frobenius norm ||W||_F = sqrt(sum_ij W_ij^2) (any shape; the 2-norm of the flattened tensor)."""
    return float(torch.linalg.vector_norm(_f64(W).reshape(-1)))


def gradient_norm(g) -> float:
    """Gradient norm ||g||_2 of the flattened gradient (same formula as `frobenius_norm`)."""
    return frobenius_norm(g)


def update_norm(W, W_prev) -> float:
    """Update norm ||W - W_prev||_F between two states of the same parameter (shapes must match)."""
    W, W_prev = _f64(W), _f64(W_prev)
    _same_shape(W, W_prev)
    return float(torch.linalg.vector_norm((W - W_prev).reshape(-1)))


def relative_update(W, W_prev) -> float:
    """Relative update ||W - W_prev||_F / ||W_prev||_F.

    0-safe: returns 0.0 when ||W_prev||_F is zero (e.g. a zero-initialised LoRA B matrix), where
    the ratio is undefined; `update_norm` carries the absolute change in that case.
    """
    W, W_prev = _f64(W), _f64(W_prev)
    _same_shape(W, W_prev)
    denom = float(torch.linalg.vector_norm(W_prev.reshape(-1)))
    if denom <= _EPS:
        return 0.0
    return float(torch.linalg.vector_norm((W - W_prev).reshape(-1))) / denom


def gradient_cosine(g, g_prev) -> float:
    """Gradient coherence cos(g, g_prev) = <g, g_prev> / (||g|| ||g_prev||) on flattened tensors.

    Returns 0.0 when either norm is zero; the result is clamped to [-1, 1].
    """
    a, b = _f64(g).reshape(-1), _f64(g_prev).reshape(-1)
    if a.numel() != b.numel():
        raise ValueError(f"size mismatch: {a.numel()} vs {b.numel()}")
    na, nb = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
    if na <= _EPS or nb <= _EPS:
        return 0.0
    return max(-1.0, min(1.0, float(a @ b) / (na * nb)))


def singular_values(W) -> torch.Tensor:
    """Singular values, descending, of a float64 matrix. Wide or tall matrices go through the
    eigenvalues of the smaller Gram matrix (2-3x faster than an SVD on a CPU; in float64 the values
    agree with svdvals to ~1e-15 relative to the largest)."""
    m, n = W.shape
    if min(m, n) < 64:
        return torch.linalg.svdvals(W)
    gram = W.T @ W if m >= n else W @ W.T
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0)


def spectral_norm(W) -> float:
    """Spectral norm ||W||_2 = sigma_max(W), the top singular value (>2-D: reshaped to (d0, -1))."""
    W = _matrix(W)
    if W.numel() == 0:
        return 0.0
    return float(singular_values(W)[0])


def stable_rank_fro_spec(W) -> float:
    """Numerical ("stable") rank ||W||_F^2 / ||W||_2^2 (Rudelson & Vershynin 2007).

    Lies in [1, rank(W)] for W != 0: n for the n x n identity, 1 for a rank-1 matrix.
    Returns 0.0 for the zero matrix (its rank). Not to be confused with `effective_rank_entropy`.
    """
    return spectral_stats(W)[1]


def spectral_stats(W) -> tuple[float, float]:
    """(spectral_norm, stable_rank_fro_spec) from one decomposition: the capture needs both."""
    W = _matrix(W)
    s = singular_values(W) if W.numel() else W.new_zeros(1)
    top = float(s[0])
    if top <= _EPS:
        return top, 0.0
    return top, float((s * s).sum()) / (top * top)


COLD_START_ITERATIONS = 30  # a power iteration with no earlier subspace to start from
POWER_BLOCK = 8  # vectors iterated together: the top value is found even where the next ones are close


def power_spectral_stats(W, v0: torch.Tensor | None = None, iterations: int = 4) -> tuple[float, float, torch.Tensor]:
    """(spectral_norm, stable_rank_fro_spec, V) by block power (subspace) iteration on W^T W in float32
    on W's device: `iterations` steps of V <- orth(W^T W V) with POWER_BLOCK columns from `v0` (the
    subspace of the previous capture: weights move little between captures), or
    `COLD_START_ITERATIONS` more from a fixed start when there is none; sigma_max is then the largest
    singular value of W V (Rayleigh-Ritz). A block, not one vector: where the top singular values are
    close (init-like weights) a single vector converges slowly. Costs O(iterations x m x n x block)
    instead of a decomposition's O(m n min(m, n)); the estimate never exceeds the true value. Returns
    the new V for the next capture."""
    W = torch.as_tensor(W).detach()
    W = W.reshape(W.shape[0], -1).to(torch.float32)
    fro2 = float((W * W).sum())
    k = min(POWER_BLOCK, *W.shape)
    if v0 is None or v0.shape != (W.shape[1], k):
        gen = torch.Generator(device="cpu").manual_seed(0)
        v0 = torch.randn(W.shape[1], k, generator=gen)
        iterations += COLD_START_ITERATIONS
    V = torch.linalg.qr(v0.to(W.device, torch.float32)).Q
    for _ in range(iterations):
        V = torch.linalg.qr(W.T @ (W @ V)).Q
    top = float(torch.linalg.svdvals(W @ V)[0])
    return top, (fro2 / (top * top) if top > _EPS else 0.0), V


def effective_rank_entropy(X, center: bool = True) -> float:
    """Effective rank exp(H(p)), H(p) = -sum_i p_i log p_i, p_i = sigma_i / sum_j sigma_j.

    Roy & Vetterli (2007), "The effective rank: a measure of effective dimensionality". X is an
    activation matrix (n samples x d features). With `center=True` (default) the per-feature mean
    is subtracted first, so a shared mean direction does not count as a dimension (that is what
    `activation_anisotropy` measures); note that centering removes one dimension (the n x n
    identity has effective rank n uncentered, n - 1 centered). Returns 0.0 when all singular
    values are zero.
    """
    X = _matrix(X)
    if center:
        X = X - X.mean(dim=0, keepdim=True)
    if X.numel() == 0:
        return 0.0
    s = singular_values(X)
    total = float(s.sum())
    if total <= _EPS:
        return 0.0
    p = s / total
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def activation_anisotropy(X) -> float:
    """Mean pairwise cosine similarity of the rows of X (n x d), diagonal excluded.

    With u_i = x_i / ||x_i|| (u_i = 0 for a zero row, i.e. cosine with a zero vector counts as 0),
    s = sum_i u_i and m = number of nonzero rows:
        sum_{i != j} <u_i, u_j> = ||s||^2 - m,  anisotropy = (||s||^2 - m) / (n (n - 1)),
    computed in O(n d) without an n x n matrix. 1 for identical rows, 0 for orthogonal rows;
    0.0 when n < 2. Cf. Ethayarajh (2019) on the anisotropy of contextual representations.
    """
    X = _matrix(X)
    n = X.shape[0]
    if n < 2:
        return 0.0
    norms = torch.linalg.vector_norm(X, dim=1)
    nonzero = norms > _EPS
    U = X[nonzero] / norms[nonzero].unsqueeze(1)
    s = U.sum(dim=0)
    return float((s @ s - U.shape[0]) / (n * (n - 1)))


def linear_cka(X, Y) -> float:
    """Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited").

    X (n x d1) and Y (n x d2) hold the same n inputs; features are centered (column mean
    subtracted). CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), equivalently
    <K, L>_F / (||K||_F ||L||_F) with K = X X^T, L = Y Y^T (the cheaper form is used).
    1.0 for identical inputs; invariant to orthogonal transforms and isotropic scaling.
    Returns 0.0 when X or Y has no variance (CKA undefined).
    """
    X, Y = _matrix(X), _matrix(Y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y need the same number of rows: {X.shape[0]} vs {Y.shape[0]}")
    X = X - X.mean(dim=0, keepdim=True)
    Y = Y - Y.mean(dim=0, keepdim=True)
    n, d1, d2 = X.shape[0], X.shape[1], Y.shape[1]
    if d1 * d2 <= n * n:  # feature-space form: O(n d1 d2)
        cross = torch.linalg.matrix_norm(Y.T @ X) ** 2
        nx, ny = torch.linalg.matrix_norm(X.T @ X), torch.linalg.matrix_norm(Y.T @ Y)
    else:  # Gram form: O(n^2 (d1 + d2))
        K, L = X @ X.T, Y @ Y.T
        cross = (K * L).sum()
        nx, ny = torch.linalg.matrix_norm(K), torch.linalg.matrix_norm(L)
    denom = float(nx) * float(ny)
    if denom <= _EPS * _EPS:
        return 0.0
    return max(0.0, min(1.0, float(cross) / denom))


def representation_drift(X, X_prev) -> float:
    """Representation drift 1 - linear_cka(X, X_prev) on the fixed capture batch (0 = unchanged)."""
    return 1.0 - linear_cka(X, X_prev)
