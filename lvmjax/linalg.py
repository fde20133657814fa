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
    (..., D, D) lower-triangular L with :math:`L L^\\top = A`.
  """
  a = jnp.asarray(a)
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
    X, shaped like b.
  """
  a, b = jnp.asarray(a), jnp.asarray(b)
  if not lapack_can_deadlock():
    return lax.linalg.triangular_solve(a, b, left_side=left_side, lower=lower,
                                       transpose_a=transpose_a)
  t, t_lower = (_mT(a), not lower) if transpose_a else (a, lower)  # op(A), its triangle
  if left_side:
    return _solve_left(t, b, t_lower)
  # X op(A) = B  <=>  op(A)^T X^T = B^T.
  return _mT(_solve_left(_mT(t), _mT(b), not t_lower))


def _mT(x: jax.Array) -> jax.Array:
  return jnp.swapaxes(x, -1, -2)


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
