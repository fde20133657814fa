"""Fits on a mesh of several CPU devices of one process finish and equal the one-device fit.

With jaxlib < 0.12 a batched Cholesky or triangular solve inside such a mesh deadlocked XLA:CPU's
thread pool (see :mod:`lvmjax.linalg`): ``gmm.fit(..., mesh=...)`` with full covariances hung at
D = 32, K = 8; D = 56, K = 4; D = 64, K = 4 and with ``n_init`` restarts. Each case runs in a
subprocess (``tests/cpu_mesh_worker.py``) with a timeout, so a hang fails the test instead of
stalling the suite. The default run holds one case that hung before the fix; the sizes of the
issue on 2 and 4 devices, the E-step, gradients in a user's ``shard_map``, K-means, the VAE and
two processes joined by ``jax.distributed`` are ``slow``.

Below: the loop versions in :mod:`lvmjax.linalg` (used inside such meshes) against LAPACK, in
this process, in float64.
"""
import itertools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvmjax import linalg
from tests import processes

STALL = 600  # seconds without a finished case: deadlocked (a case takes 10-150 s, loaded)


def _run(commands, tmp_path):
  """Runs ``tests/cpu_mesh_worker.py`` with each argument list, side by side, with JAX's CPU
  thread pool as the machine gives it (no ``PJRT_NPROC``, which would hide the deadlock); fails
  when a case makes no progress for STALL seconds."""
  env = processes.environment(drop=("XLA_FLAGS", "PJRT_NPROC"))
  processes.run_together([[sys.executable, "-m", "tests.cpu_mesh_worker", *c] for c in commands],
                         tmp_path, timeout=None, stall=STALL, env=env)


def _devices(tmp_path, num_devices, cases):
  out = tmp_path / "result.json"
  _run([["devices", str(num_devices), str(out), *cases]], tmp_path)
  res = json.loads(out.read_text())
  assert res["num_devices"] == num_devices
  return res


def _check_gmm(case, tol=1e-10):
  assert case["n_iter"] == [6, 6], case
  assert case["params"] < tol and case["lower_bound"] < tol, case


def test_full_covariance_fit_that_hung_before_finishes_and_equals_one_device(tmp_path):
  res = _devices(tmp_path, 2, ["gmm:full:32:8:1"])
  _check_gmm(res["gmm:full:32:8:1"])


_SIZES = ["gmm:full:32:8:1", "gmm:full:56:4:1", "gmm:full:64:4:1", "gmm:full:64:4:3",
          "gmm:tied:64:4:3"]


@pytest.mark.slow
@pytest.mark.parametrize("num_devices", [2, 4])
def test_sizes_that_hung_on_cpu_meshes(tmp_path, num_devices):
  res = _devices(tmp_path, num_devices, _SIZES + ["estep:64:4", "grad:64:4", "kmeans", "vae"])
  for case in _SIZES:
    _check_gmm(res[case])
  assert res["estep:64:4"]["stats"] < 1e-9, res
  assert res["grad:64:4"]["grad"] < 1e-9, res
  assert res["kmeans"]["centroids"] < 1e-10 and res["kmeans"]["labels_equal"], res
  assert res["kmeans"]["n_iter"][0] == res["kmeans"]["n_iter"][1], res
  # float32: the devices add their parts of the gradient in another order than one device.
  np.testing.assert_allclose(res["vae"]["loss_parallel"], res["vae"]["loss_single"], rtol=2e-6)
  assert res["vae"]["param_diff"] < 1e-5, res


@pytest.mark.slow
def test_two_processes_with_two_cpu_devices_each_at_64_features(tmp_path):
  port = processes.free_port()
  out = tmp_path / "result.json"
  _run([["process", str(i), "2", str(port), str(out)] for i in range(2)], tmp_path)
  res = json.loads(out.read_text())
  assert res["process_count"] == 2 and res["device_count"] == 4
  _check_gmm(res)


# --------------------------------------------------------------------------------------------
# The loop versions against LAPACK.


def _spd(shape, seed=0):
  m = np.random.default_rng(seed).normal(size=shape)
  return m @ np.swapaxes(m, -1, -2) + 0.5 * np.eye(shape[-1])


def test_cholesky_by_columns_equals_lapack(x64):
  a = _spd((3, 4, 7, 7))
  ref = jnp.linalg.cholesky(a)
  np.testing.assert_allclose(linalg._cholesky_by_columns(a), ref, rtol=1e-12, atol=1e-12)  # pylint: disable=protected-access
  # Not positive definite: NaNs in the lower triangle, zeros above, as LAPACK's.
  bad = a.copy()
  bad[1, 2] = -np.eye(7)
  got = np.asarray(linalg._cholesky_by_columns(bad))  # pylint: disable=protected-access
  np.testing.assert_array_equal(np.isnan(got), np.isnan(np.asarray(jnp.linalg.cholesky(bad))))
  assert np.isnan(got[1, 2][np.tril_indices(7)]).all() and not np.isnan(got[0, 0]).any()
  # Gradients (the loop is differentiable) and jit.
  loss = lambda f: lambda a: jnp.sum(jnp.sin(f(a)))  # pylint: disable=unnecessary-lambda-assignment
  np.testing.assert_allclose(jax.grad(loss(linalg._cholesky_by_columns))(a),  # pylint: disable=protected-access
                             jax.grad(loss(jnp.linalg.cholesky))(a), rtol=1e-9, atol=1e-11)
  np.testing.assert_allclose(jax.jit(linalg._cholesky_by_columns)(a), ref, rtol=1e-12,  # pylint: disable=protected-access
                             atol=1e-12)


@pytest.mark.parametrize("left_side,lower,transpose_a,m",
                         list(itertools.product([True, False], [True, False], [True, False],
                                                [3, 11])))
def test_triangular_solve_loop_equals_lapack(x64, monkeypatch, left_side, lower, transpose_a, m):
  rng = np.random.default_rng(1)
  chol = np.asarray(jnp.linalg.cholesky(_spd((2, 5, 6, 6))))
  noise = rng.normal(size=(6, 6))  # the other triangle must not be read
  a = chol + np.triu(noise, 1) if lower else np.swapaxes(chol, -1, -2) + np.tril(noise, -1)
  b = rng.normal(size=(2, 5, 6, m) if left_side else (2, 5, m, 6))
  kw = dict(left_side=left_side, lower=lower, transpose_a=transpose_a)
  ref = jax.lax.linalg.triangular_solve(a, b, **kw)
  np.testing.assert_allclose(linalg.triangular_solve(a, b, **kw), ref, rtol=1e-12)
  monkeypatch.setattr(linalg, "lapack_can_deadlock", lambda: True)  # the loop path
  np.testing.assert_allclose(linalg.triangular_solve(a, b, **kw), ref, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(jax.vmap(lambda a, b: linalg.triangular_solve(a, b, **kw))(a, b),
                             ref, rtol=1e-10, atol=1e-12)


def test_lapack_is_used_outside_a_cpu_mesh():
  assert not linalg.lapack_can_deadlock()
  d = linalg.SMALL_D + 2  # smaller matrices take the unrolled code (tests/test_linalg.py)
  jaxpr = str(jax.make_jaxpr(linalg.cholesky)(np.eye(d)[None].repeat(4, 0)))
  assert "cholesky" in jaxpr and "while" not in jaxpr
