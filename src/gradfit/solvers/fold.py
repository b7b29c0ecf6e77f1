"""Folding the rows of a least-squares problem, block by block, into R and Qᵀr of J = QR.

A streamed Levenberg–Marquardt step needs, of all the rows of the Jacobian J and
the residuals r, only the small triangle R of J = QR, z = Qᵀr and the cost rᵀr.
Two ways to add them up over blocks of rows:

- ``HouseholderFold``: a tall-skinny QR, each block stacked under R so far and
  factored again. Exact for any J, rank-deficient ones included, but LAPACK's QR
  of a tall thin matrix is slow.
- ``GramFold``: sums of the Gram matrix of [J R₀⁻¹ | r] (one matrix product per
  block, several times faster), where R₀ is the R of an earlier pass or of a
  sample of the rows. Summing JᵀJ itself would square J's condition number; the
  preconditioned J R₀⁻¹ is close to orthonormal, so its Gram matrix is close to
  the identity and its Cholesky factor is exact to rounding (preconditioned
  Cholesky QR). ``result`` checks that: when the Gram matrix is too far from the
  identity (condition number above MAX_CONDITION), it gives no answer, and the
  caller redoes the pass with a better R₀ or with a HouseholderFold.
"""

from __future__ import annotations

import math

import torch

MAX_CONDITION = 1e4  # of the preconditioned Gram matrix: its Cholesky factor is then exact to ~1e-12
BLOCK_ROWS = 1 << 16  # rows multiplied at a time: the work arrays stay in the CPU's cache


class HouseholderFold:
    """R, Qᵀr and rᵀr of all rows added so far, by a tall-skinny Householder QR."""

    def __init__(self, k: int):
        self.k = k
        self.r_factor = torch.zeros((0, k), dtype=torch.float64)
        self.z = torch.zeros(0, dtype=torch.float64)
        self.cost = 0.0

    def add(self, jac: torch.Tensor, r: torch.Tensor) -> None:
        # [R; J_b] = Q R' and z' = Qᵀ[z; r_b]: one QR of the augmented [R z; J_b r_b] gives both
        stacked = torch.cat([torch.cat([self.r_factor, self.z[:, None]], 1), torch.cat([jac, r[:, None]], 1)])
        top = torch.linalg.qr(stacked, mode="r")[1][: self.k + 1]
        self.r_factor, self.z = top[: self.k, : self.k], top[: self.k, self.k]
        self.cost += float(r @ r)

    def add_linear(self, rows: torch.Tensor, params: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Rows [A | y] of a model linear in its parameters: J = A, r = A @ params - y (times the weights)."""
        k = self.k
        jac, r = rows[:, :k], rows[:, :k] @ params - rows[:, k]
        if weights is not None:
            jac, r = jac * weights[:, None], r * weights
        self.add(jac, r)

    def cost_so_far(self) -> float:
        return self.cost

    def result(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        k = self.k
        r_factor, z = self.r_factor, self.z
        if r_factor.shape[0] < k:  # fewer rows than parameters: zero rows complete the triangle
            pad = k - r_factor.shape[0]
            r_factor = torch.cat([r_factor, torch.zeros((pad, k), dtype=torch.float64)])
            z = torch.cat([z, torch.zeros(pad, dtype=torch.float64)])
        return self.cost, r_factor, z


class GramFold:
    """Sums of [J R₀⁻¹ | r]ᵀ [J R₀⁻¹ | r] over blocks of rows; R and Qᵀr from its Cholesky factor."""

    def __init__(self, preconditioner: torch.Tensor):
        self.k = k = preconditioner.shape[0]
        self.r0 = preconditioner
        self.r0_inv = torch.linalg.solve_triangular(preconditioner, torch.eye(k, dtype=torch.float64), upper=True)
        self.gram = torch.zeros((k + 1, k + 1), dtype=torch.float64)
        self._out = None  # the block [J R₀⁻¹ | r], reused from block to block
        self._map = None  # [R₀⁻¹ | p] for a linear model: its block is design @ map - [0 | y]

    def _block(self, n: int) -> torch.Tensor:
        if self._out is None or self._out.shape[0] < n:
            self._out = torch.empty((n, self.k + 1), dtype=torch.float64)
        return self._out[:n]

    def add(self, jac: torch.Tensor, r: torch.Tensor) -> None:
        block = self._block(len(r))
        block[:, : self.k] = jac @ self.r0_inv
        block[:, self.k] = r
        self.gram += block.T @ block

    def add_linear(self, rows: torch.Tensor, params: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Rows [A | y] of a model linear in its parameters: J = A, r = A @ params - y (times the weights)."""
        if self._map is None or self._map[1] is not params:
            k = self.k
            m = torch.zeros((k + 1, k + 1), dtype=torch.float64)
            m[:k, :k], m[:k, k], m[k, k] = self.r0_inv, params, -1.0
            self._map = (m, params)
        block = self._block(len(rows))
        torch.mm(rows, self._map[0], out=block)  # one product: [A | y] @ [[R₀⁻¹, p], [0, -1]] = [J R₀⁻¹ | r]
        if weights is not None:
            block *= weights[:, None]
        self.gram += block.T @ block

    def cost_so_far(self) -> float:
        return float(self.gram[self.k, self.k])

    def result(self) -> tuple[float, torch.Tensor, torch.Tensor] | None:
        """(rᵀr, R, Qᵀr); None when the preconditioned Gram matrix is too ill-conditioned to trust."""
        k, g = self.k, self.gram
        cost = float(g[k, k])
        if not torch.isfinite(g).all():  # the model overflowed somewhere: no step can land here
            return math.inf, torch.zeros((k, k), dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
        small = g[:k, :k]
        eig = torch.linalg.eigvalsh(small)
        if not eig[0] > 0 or float(eig[-1] / eig[0]) > MAX_CONDITION:
            return None
        upper = torch.linalg.cholesky(small).T  # J R₀⁻¹ = Q upper
        z = torch.linalg.solve_triangular(upper.T, g[:k, k:], upper=False)[:, 0]  # Qᵀr = upper⁻ᵀ (J R₀⁻¹)ᵀ r
        return cost, upper @ self.r0, z

    def refined(self) -> torch.Tensor | None:
        """A better preconditioner from this pass's sums (Cholesky QR's second round), or None if there is none."""
        k = self.k
        small = self.gram[:k, :k]
        if not torch.isfinite(small).all():
            return None
        factor, info = torch.linalg.cholesky_ex(small)
        return factor.T @ self.r0 if int(info) == 0 else None


def usable(r_factor: torch.Tensor) -> bool:
    """Whether R can precondition: invertible, and not so ill-conditioned that R⁻¹ is mostly rounding."""
    s = torch.linalg.svdvals(r_factor)
    return bool(s[-1] > 0) and bool(s[0] / s[-1] < 1e12)
