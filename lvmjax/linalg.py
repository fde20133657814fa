r"""Batched Cholesky factorisations and triangular solves that cannot deadlock a CPU mesh.

jaxlib's CPU LAPACK kernels before 0.12 (``jaxlib/cpu/lapack_kernels.cc``, removed upstream by
"Don't try to parallelize LAPACK kernels in opensource builds") split a batched Cholesky
(``potrf``) or triangular solve (``trsm``) into chunks, schedule the chunks on XLA:CPU's shared
worker pool and block until they finish. The pool has max(cores, devices) threads. Inside a
``shard_map`` over several CPU devices of one process, the ``psum`` keeps the devices in step, so
every device reaches the batched call at the same moment, every pool thread blocks waiting for
chunks, and no thread is left to run them: ``gmm.fit(..., mesh=...)`` with full covariances hung
(with 2 threads from D = 32, K = 8 on, and for every K >= 2 from D = 59 on).

:func:`cholesky` and :func:`triangular_solve` are the LAPACK calls everywhere except where that
can happen: traced inside a ``shard_map`` over more than one device of a process with several CPU
devices, with jaxlib < 0.12. There they are computed by a loop over the D columns of plain
``jnp`` operations (no LAPACK call; the same O(D³) arithmetic per matrix; differentiable and
vmappable like the LAPACK versions), so the batched speed of the one-device path is untouched.

Small matrices (D <= :data:`SMALL_D`) never call LAPACK at all: their factorisation and
substitution are unrolled over the static D into elementwise ``jnp`` operations on the whole
batch. LAPACK runs one call per matrix, whose overhead swamps the O(D³) arithmetic of a 2x2 or
3x3 matrix: on a batch of 6,000 (10,000 fits of K=3, D=2 under ``jax.vmap``), the unrolled
Cholesky was 4-5x faster than ``jnp.linalg.cholesky`` for D = 2 and 3 and no slower from 3
matrices on; from D = 8 on, LAPACK wins on small batches and the unrolled graph grows as D³.
"""
from __future__ import annotations

import math
import re

import jax
from jax import lax
import jax.numpy as jnp
import jaxlib

from jax.typing import ArrayLike

#: jaxlib releases from this one on run a batch of LAPACK problems on the calling thread.
_SERIAL_LAPACK_FROM = (0, 12)

#: Matrices of at most this size are factorised and solved by unrolled elementwise code.
SMALL_D = 4


def _version(text: str) -> tuple[int, ...]:
  return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def lapack_can_deadlock() -> bool:
  """True where a batched LAPACK call now being traced could deadlock XLA:CPU's thread pool.

  That is: jaxlib < 0.12, inside a ``shard_map`` whose manual axes span more than one device,
  on a CPU mesh, in a process that holds several CPU devices (one device per process cannot
  run out of pool threads). Evaluated at trace time.
  """
  if _version(jaxlib.__version__) >= _SERIAL_LAPACK_FROM:
    return False
  mesh = jax.sharding.get_abstract_mesh()
  manual = tuple(getattr(mesh, "manual_axes", ()))
  if not manual or math.prod(mesh.shape[a] for a in manual) <= 1:
    return False
  device = getattr(mesh, "abstract_device", None)
  platform = getattr(device, "platform", None) or jax.default_backend()
  return platform == "cpu" and len(jax.local_devices(backend="cpu")) > 1


def cholesky(a: ArrayLike) -> jax.Array:
  """Lower Cholesky factors of a batch of symmetric positive definite matrices.

  As :func:`jax.numpy.linalg.cholesky`: the input is symmetrised, :math:`(A + A^\\top) / 2`,
  and a matrix that is not positive definite gives a factor of NaNs.

  Args:
    a: (..., D, D) symmetric matrices.

  Returns:
    (..., D, D) lower-triangular L with :math:`L L^\\top = A`. For D <= :data:`SMALL_D`
    unrolled elementwise code, else LAPACK (or the column loop inside a CPU mesh).
  """
  a = _inexact(a)
  if 0 < a.shape[-1] <= SMALL_D:  # (0 x 0 matrices: jnp handles them)
    return _cholesky_unrolled(a)
  if not lapack_can_deadlock():
    return jnp.linalg.cholesky(a)
  return _cholesky_by_columns(a)


def triangular_solve(a: ArrayLike, b: ArrayLike, *, left_side: bool = False,
                     lower: bool = False, transpose_a: bool = False) -> jax.Array:
  r"""Solves :math:`\mathrm{op}(A) X = B` (``left_side``) or :math:`X \mathrm{op}(A) = B`.

  As :func:`jax.lax.linalg.triangular_solve` for real matrices: only the ``lower`` (or upper)
  triangle of A is read, and :math:`\mathrm{op}(A)` is :math:`A^\top` with ``transpose_a``.

  Args:
    a: (..., D, D) triangular matrices.
    b: (..., D, M) right-hand sides with ``left_side``, (..., M, D) without; the same batch
      shape as a.
    left_side: solve :math:`\mathrm{op}(A) X = B` instead of :math:`X \mathrm{op}(A) = B`.
    lower: A is lower triangular (else upper).
    transpose_a: use :math:`A^\top` for :math:`\mathrm{op}(A)`.

  Returns:
    X, shaped like b. For D <= :data:`SMALL_D` by unrolled substitution (elementwise over the
    batch and the right-hand sides), else LAPACK (or the row loop inside a CPU mesh).
  """
  a, b = jnp.asarray(a), jnp.asarray(b)
  t_lower = lower != transpose_a  # the triangle of op(A)
  if 0 < a.shape[-1] <= SMALL_D:
    dtype = jnp.result_type(a.dtype, b.dtype, float)
    a, b = a.astype(dtype), b.astype(dtype)
    if left_side:
      return _solve_unrolled(a, b, t_lower, transpose_a)
    # X op(A) = B  <=>  op(A)^T X^T = B^T.
    return _mT(_solve_unrolled(a, _mT(b), not t_lower, not transpose_a))
  if not lapack_can_deadlock():
    return lax.linalg.triangular_solve(a, b, left_side=left_side, lower=lower,
                                       transpose_a=transpose_a)
  t = _mT(a) if transpose_a else a  # op(A)
  if left_side:
    return _solve_left(t, b, t_lower)
  # X op(A) = B  <=>  op(A)^T X^T = B^T.
  return _mT(_solve_left(_mT(t), _mT(b), not t_lower))


def matmul(a: ArrayLike, b: ArrayLike, *, precision: lax.PrecisionLike = None) -> jax.Array:
  r"""``a @ b`` (batched as :func:`jax.numpy.matmul`); a contraction over at most
  :data:`SMALL_D` entries is unrolled into elementwise multiply-adds,
  :math:`\sum_p a_{\cdot p}\, b_{p \cdot}` in order.

  An XLA:CPU dot of a tiny contraction (e.g. (200, 2) x (2, 3) per fit of 10,000 vmapped small
  GMM fits) costs a library call per matrix; elementwise it fuses with its neighbours. Both are
  float arithmetic of the input dtype (``precision`` applies to the dot only).

  Args:
    a: (..., M, P).
    b: (..., P, N).
    precision: passed to :func:`jax.numpy.matmul` for a large P.

  Returns:
    (..., M, N).
  """
  a, b = jnp.asarray(a), jnp.asarray(b)
  p = a.shape[-1]
  if p > SMALL_D or a.ndim < 2 or b.ndim < 2:
    return jnp.matmul(a, b, precision=precision)
  dtype = jnp.result_type(a.dtype, b.dtype)
  out = a[..., :, 0, None].astype(dtype) * b[..., None, 0, :]
  for i in range(1, p):
    out = out + a[..., :, i, None] * b[..., None, i, :]
  return out


def sum_small(a: ArrayLike, axis: int = -1, *, max_terms: int = 8) -> jax.Array:
  r"""``jnp.sum(a, axis)``; over an axis of at most ``max_terms`` entries as a chain of adds.

  XLA:CPU (jaxlib 0.10) hands reductions to YNNPACK fusions, which are slow on a tiny reduced
  axis: under ``jax.vmap`` of 2,000 K-means fits of K=3, D=2, the squared distances
  :math:`\sum_d (x_d - c_d)^2` as a reduction took 25 ms per Lloyd iteration, as adds a few.

  Args:
    a: array.
    axis: the axis to sum over (static).
    max_terms: the longest axis summed by adds.

  Returns:
    ``a`` summed over ``axis``.
  """
  a = jnp.asarray(a)
  n = a.shape[axis]
  if n > max_terms or n == 0:
    return jnp.sum(a, axis=axis)
  parts = [lax.index_in_dim(a, i, axis, keepdims=False) for i in range(n)]
  out = parts[0]
  for part in parts[1:]:
    out = out + part
  return out


def logsumexp_small(a: ArrayLike, axis: int = -1, *, max_terms: int = 8) -> jax.Array:
  r""":func:`jax.nn.logsumexp` over ``axis``, :math:`m + \log \sum_i e^{a_i - m}` with
  :math:`m = \max_i a_i` (0 where that is not finite); over an axis of at most ``max_terms``
  entries by elementwise maxima and adds (see :func:`sum_small`), e.g. over the K components of
  a small mixture.

  Args:
    a: array.
    axis: the axis to reduce (static).
    max_terms: the longest axis done elementwise.

  Returns:
    ``a`` log-sum-exp'ed over ``axis``.
  """
  a = jnp.asarray(a)
  n = a.shape[axis]
  if n > max_terms or n == 0:
    return jax.nn.logsumexp(a, axis=axis)
  parts = [lax.index_in_dim(a, i, axis, keepdims=False) for i in range(n)]
  m = parts[0]
  for part in parts[1:]:
    m = jnp.maximum(m, part)
  m = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0))
  total = jnp.exp(parts[0] - m)
  for part in parts[1:]:
    total = total + jnp.exp(part - m)
  return jnp.log(total) + m


def _mT(x: jax.Array) -> jax.Array:
  return jnp.swapaxes(x, -1, -2)


def _inexact(a: ArrayLike) -> jax.Array:
  a = jnp.asarray(a)
  return a.astype(jnp.result_type(a.dtype, float))


def _cholesky_unrolled(a: jax.Array) -> jax.Array:
  r"""Cholesky for a small static D, unrolled into elementwise operations on the batch: for
  j = 0..D-1, :math:`L_{jj} = \sqrt{A_{jj} - \sum_{k<j} L_{jk}^2}` and
  :math:`L_{ij} = (\bar A_{ij} - \sum_{k<j} L_{ik} L_{jk}) / L_{jj}` for i > j, with
  :math:`\bar A = (A + A^\top)/2`. A failed factorisation (some pivot :math:`\le 0`) gives NaNs
  in the whole lower triangle and zeros above, as LAPACK's does in
  :func:`jax.numpy.linalg.cholesky`."""
  d = a.shape[-1]
  entry = [[a[..., i, j] for j in range(d)] for i in range(d)]
  low = [[None] * d for _ in range(d)]
  ok = None
  for j in range(d):
    s = entry[j][j]
    for k in range(j):
      s = s - low[j][k] * low[j][k]
    ok = s > 0 if ok is None else ok & (s > 0)
    low[j][j] = jnp.sqrt(jnp.where(s > 0, s, jnp.nan))
    for i in range(j + 1, d):
      t = 0.5 * (entry[i][j] + entry[j][i])
      for k in range(j):
        t = t - low[i][k] * low[j][k]
      low[i][j] = t / low[j][j]
  zero = jnp.zeros_like(entry[0][0])
  nan = jnp.where(ok, zero, jnp.nan)  # + nan: the whole lower triangle of a failed matrix
  return jnp.stack([jnp.stack([low[i][j] + nan if j <= i else zero for j in range(d)], -1)
                    for i in range(d)], -2)


def _solve_unrolled(a: jax.Array, b: jax.Array, t_lower: bool, transpose_a: bool) -> jax.Array:
  r"""X with :math:`T X = B`, :math:`T = \mathrm{op}(A)` triangular (lower if ``t_lower``), for a
  small static D: substitution unrolled over the D rows, each row elementwise over the batch and
  the M right-hand sides of b (..., D, M). Reads only T's triangle."""
  d = a.shape[-1]

  def t(i, k):  # T[..., i, k] as (..., 1), broadcasting over the right-hand sides
    return (a[..., k, i] if transpose_a else a[..., i, k])[..., None]

  rows = [None] * d
  order = range(d) if t_lower else range(d - 1, -1, -1)
  for i in order:
    s = b[..., i, :]
    for k in (range(i) if t_lower else range(i + 1, d)):
      s = s - t(i, k) * rows[k]
    rows[i] = s / t(i, i)
  batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
  return jnp.broadcast_to(jnp.stack(rows, -2), batch + b.shape[-2:])


def _cholesky_by_columns(a: jax.Array) -> jax.Array:
  r"""Cholesky by columns without LAPACK: for j = 0..D-1,
  :math:`s = A_{:, j} - L L_{j, :}^\top` (columns < j of L filled), :math:`L_{jj} = \sqrt{s_j}`,
  :math:`L_{ij} = s_i / L_{jj}` for i > j. A failed factorisation (some :math:`s_j \le 0`) gives
  NaNs in the whole lower triangle, as LAPACK's does in :func:`jax.numpy.linalg.cholesky`."""
  a = 0.5 * (a + _mT(a))
  d = a.shape[-1]
  idx = jnp.arange(d)

  def column(j, l):
    s = a[..., :, j] - jnp.einsum("...ik,...k->...i", l, l[..., j, :])  # (..., D)
    diag = jnp.sqrt(jnp.where(s[..., j] > 0, s[..., j], jnp.nan))
    col = jnp.where(idx > j, s / diag[..., None], jnp.where(idx == j, diag[..., None], 0))
    return l.at[..., :, j].set(col)

  l = lax.fori_loop(0, d, column, jnp.zeros_like(a))
  failed = jnp.any(jnp.isnan(jnp.diagonal(l, axis1=-2, axis2=-1)), axis=-1)
  return jnp.where(failed[..., None, None] & (idx[:, None] >= idx[None, :]), jnp.nan, l)


def _solve_left(t: jax.Array, b: jax.Array, lower: bool) -> jax.Array:
  """X with T X = B for triangular T (..., D, D), reading only its lower (or upper) triangle.

  Forward substitution over the D rows; with more right-hand sides than D (many data rows), T's
  inverse is found that way and multiplies B, so the loop never sweeps a large B D times.
  """
  t, b = jnp.asarray(t), jnp.asarray(b)
  if not lower:  # reversing rows and columns turns an upper triangle into a lower one
    return _solve_left(t[..., ::-1, ::-1], b[..., ::-1, :], True)[..., ::-1, :]
  d, m = b.shape[-2], b.shape[-1]
  if m > d:
    eye = jnp.broadcast_to(jnp.eye(d, dtype=t.dtype), t.shape)
    return _solve_left(t, eye, True) @ b
  idx = jnp.arange(d)
  t = jnp.where(idx[:, None] >= idx[None, :], t, 0)  # the lower triangle alone

  def row(j, x):
    rest = jnp.einsum("...k,...km->...m", t[..., j, :], x)  # rows >= j of x are still 0
    return x.at[..., j, :].set((b[..., j, :] - rest) / t[..., j, j][..., None])

  dtype = jnp.result_type(t.dtype, b.dtype)
  return lax.fori_loop(0, d, row, jnp.zeros(jnp.broadcast_shapes(t.shape[:-2], b.shape[:-2])
                                            + (d, m), dtype))
