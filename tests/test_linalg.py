"""The small-D path of :mod:`lvmjax.linalg` (unrolled Cholesky and triangular solves, no LAPACK)
against NumPy/SciPy in float64: every D up to ``SMALL_D``, batched, under ``jit``, ``vmap`` and
``grad``, failed factorisations, every side/triangle/transpose of the solve, and dtypes kept.
(The loop versions used inside CPU meshes are tested in tests/test_cpu_mesh.py.)"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from lvmjax import linalg

SMALL = list(range(1, linalg.SMALL_D + 1))


def _spd(shape, seed=0):
  m = np.random.default_rng(seed).normal(size=shape)
  return m @ np.swapaxes(m, -1, -2) + 0.5 * np.eye(shape[-1])


def _lapack_free(fn, *args):
  jaxpr = str(jax.make_jaxpr(fn)(*args))
  assert "cholesky" not in jaxpr and "triangular_solve" not in jaxpr and "while" not in jaxpr


@pytest.mark.parametrize("d", SMALL)
def test_cholesky_small_equals_numpy(x64, d):
  a = _spd((3, 5, d, d), seed=d)
  ref = np.linalg.cholesky(a)
  got = linalg.cholesky(a)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-14)
  np.testing.assert_allclose(jax.jit(linalg.cholesky)(a), ref, rtol=1e-13, atol=1e-14)
  np.testing.assert_allclose(jax.vmap(linalg.cholesky)(a), ref, rtol=1e-13, atol=1e-14)
  np.testing.assert_allclose(linalg.cholesky(a[0, 0]), ref[0, 0], rtol=1e-13, atol=1e-14)
  # Only the symmetric part counts, as in jnp.linalg.cholesky.
  skew = np.tril(np.random.default_rng(1).normal(size=(d, d)), -1)
  np.testing.assert_allclose(linalg.cholesky(a + skew - skew.T), ref, rtol=1e-13, atol=1e-14)
  _lapack_free(linalg.cholesky, a)


@pytest.mark.parametrize("d", [d for d in SMALL if d > 1])
def test_cholesky_small_failure_is_nan_like_lapack(x64, d):
  a = _spd((4, d, d), seed=2)
  a[1] = -np.eye(d)
  a[2, -1, -1] = -5.0  # fails at the last pivot only
  got = np.asarray(linalg.cholesky(a))
  lapack = np.asarray(jnp.linalg.cholesky(a))
  np.testing.assert_array_equal(np.isnan(got), np.isnan(lapack))
  low = np.tril_indices(d)
  assert np.isnan(got[1][low]).all() and np.isnan(got[2][low]).all()
  assert not np.isnan(got[[0, 3]]).any() and (got[1][np.triu_indices(d, 1)] == 0).all()
  np.testing.assert_allclose(got[[0, 3]], np.linalg.cholesky(a[[0, 3]]), rtol=1e-13)


@pytest.mark.parametrize("d", SMALL)
def test_cholesky_small_gradient_equals_lapack(x64, d):
  a = _spd((2, d, d), seed=3)
  loss = lambda f: lambda a: jnp.sum(jnp.sin(f(a)))  # pylint: disable=unnecessary-lambda-assignment
  np.testing.assert_allclose(jax.grad(loss(linalg.cholesky))(a),
                             jax.grad(loss(jnp.linalg.cholesky))(a), rtol=1e-10, atol=1e-12)


def test_small_path_keeps_float32():
  a = _spd((6, 2, 2)).astype(np.float32)
  chol = linalg.cholesky(a)
  assert chol.dtype == jnp.float32
  np.testing.assert_allclose(chol, np.linalg.cholesky(a.astype(np.float64)), rtol=2e-6,
                             atol=2e-6)
  x = linalg.triangular_solve(chol, np.ones((6, 2, 5), np.float32), left_side=True, lower=True)
  assert x.dtype == jnp.float32


@pytest.mark.parametrize("d,left_side,lower,transpose_a", [
    (d, *flags) for d, flags in itertools.product(
        SMALL, itertools.product([True, False], [True, False], [True, False]))])
def test_triangular_solve_small_equals_scipy(x64, d, left_side, lower, transpose_a):
  rng = np.random.default_rng(d)
  chol = np.linalg.cholesky(_spd((2, 3, d, d), seed=d))
  noise = rng.normal(size=(d, d))  # the other triangle must not be read
  a = chol + np.triu(noise, 1) if lower else np.swapaxes(chol, -1, -2) + np.tril(noise, -1)
  m = 7
  b = rng.normal(size=(2, 3, d, m) if left_side else (2, 3, m, d))
  kw = dict(left_side=left_side, lower=lower, transpose_a=transpose_a)
  ref = np.empty_like(b)
  for i, j in itertools.product(range(2), range(3)):
    tri = np.tril(a[i, j]) if lower else np.triu(a[i, j])
    if left_side:  # op(A) X = B
      ref[i, j] = scipy.linalg.solve_triangular(tri, b[i, j], lower=lower, trans=int(transpose_a))
    else:  # X op(A) = B  <=>  op(A)^T X^T = B^T
      ref[i, j] = scipy.linalg.solve_triangular(tri, b[i, j].T, lower=lower,
                                                trans=int(not transpose_a)).T
  np.testing.assert_allclose(linalg.triangular_solve(a, b, **kw), ref, rtol=1e-11, atol=1e-12)
  np.testing.assert_allclose(jax.vmap(lambda a, b: linalg.triangular_solve(a, b, **kw))(a, b),
                             ref, rtol=1e-11, atol=1e-12)
  np.testing.assert_allclose(jax.jit(lambda a, b: linalg.triangular_solve(a, b, **kw))(a, b),
                             ref, rtol=1e-11, atol=1e-12)
  _lapack_free(lambda a, b: linalg.triangular_solve(a, b, **kw), a, b)
  # Gradients equal those of LAPACK's solve.
  loss = lambda f: lambda a, b: jnp.sum(jnp.sin(f(a, b, **kw)))  # pylint: disable=unnecessary-lambda-assignment
  for got, want in zip(jax.grad(loss(linalg.triangular_solve), (0, 1))(a, b),
                       jax.grad(loss(jax.lax.linalg.triangular_solve), (0, 1))(a, b)):
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
