"""Frozen parameters: ``fixed=`` in gmm.fit and lvmjax.mixture keeps fields bit for bit, and the
free fields are the constrained EM updates of a float64 NumPy/SciPy reference."""
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps
from scipy.special import logsumexp

from lvmjax import gmm
from lvmjax import mixture
from lvmjax import sharding
from tests import processes

SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(gmm.FIXABLE, r)]


def _data(dtype=np.float32, n=300, seed=0):
  """Three clusters far from the origin (the GMM centres its data: shifting there and back
  rounds, so a fixed mean that merely went through the shift would not come back bit for bit)."""
  rng = np.random.default_rng(seed)
  centres = np.array([[100.0, -50.0, 20.0], [103.0, -47.0, 20.0], [100.0, -45.0, 25.0]])
  z = rng.choice(3, n, p=[0.2, 0.3, 0.5])
  return (centres[z] + rng.normal(size=(n, 3)) @ np.diag([1.0, 0.7, 1.3])).astype(dtype)


def _init(x, cov_type, dtype):
  """Starting values off the fitted ones (all fields move when free): three rows as means,
  the data's covariance (or its diagonal, or its mean variance) for every component."""
  del x
  x = _data(np.float64)
  cov = np.cov(x.T)
  covs = {"full": np.stack([cov] * 3), "tied": cov, "diag": np.stack([np.diag(cov)] * 3),
          "spherical": np.full(3, np.mean(np.diag(cov)))}[cov_type]
  return gmm.GMMParams(jnp.asarray([0.5, 0.25, 0.25], dtype), jnp.asarray(x[:3], dtype),
                       jnp.asarray(covs, dtype), cov_type)


def _assert_fixed(result, init, fixed):
  for name in gmm.FIXABLE:
    a, b = np.asarray(getattr(result.params, name)), np.asarray(getattr(init, name))
    if name in fixed:
      assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), name
    else:
      assert not np.allclose(a, b), f"{name} is free but did not move"


@pytest.mark.parametrize("fixed", [
    s if s in [("weights",), ("means",), ("covariances",), ("means", "covariances")]
    else pytest.param(s, marks=pytest.mark.slow) for s in SUBSETS], ids="+".join)
def test_fixed_fields_bit_for_bit_full(fixed):
  """Float32, data far from the origin; the log-likelihood never decreases."""
  x = _data()
  init = _init(x, "full", jnp.float32)
  result = gmm.fit(jax.random.key(0), x, 3, "full", init=init, max_iter=15, fixed=fixed)
  _assert_fixed(result, init, fixed)
  assert np.all(np.diff(np.asarray(result.log_likelihood)) > -1e-4), fixed


@pytest.mark.slow
@pytest.mark.parametrize("cov_type", ["tied", "diag", "spherical"])
def test_fixed_fields_bit_for_bit_other_types(cov_type):
  x = _data()
  init = _init(x, cov_type, jnp.float32)
  for fixed in [("means",), ("weights", "covariances")]:
    result = gmm.fit(jax.random.key(0), x, 3, cov_type, init=init, max_iter=10, fixed=fixed)
    _assert_fixed(result, init, fixed)


def _reference_em(x, init, fixed, num_iters, reg_covar):
  """Float64 EM with scipy's densities; fixed fields held, covariances about the means in use
  (the fixed ones when means are fixed). Returns (weights, means, covs, history)."""
  cov_type = init.covariance_type
  k, d = init.means.shape
  w = np.asarray(init.weights, np.float64)
  mu = np.asarray(init.means, np.float64)
  raw = np.asarray(init.covariances, np.float64)
  full = {"full": lambda c: c, "tied": lambda c: np.broadcast_to(c, (k, d, d)),
          "diag": lambda c: np.stack([np.diag(v) for v in c]),
          "spherical": lambda c: np.stack([v * np.eye(d) for v in c])}[cov_type]
  history = []
  for _ in range(num_iters):
    covs = full(raw)
    lj = np.log(w)[None] + np.stack([sps.multivariate_normal(mu[j], covs[j]).logpdf(x)
                                     for j in range(k)], axis=1)
    lp = logsumexp(lj, axis=1)
    history.append(lp.mean())
    r = np.exp(lj - lp[:, None])
    nk = r.sum(0)
    new_w = nk / nk.sum()
    new_mu = (r.T @ x) / nk[:, None]
    centre = mu if "means" in fixed else new_mu
    diff = x[None] - centre[:, None]  # (K, N, D)
    s = np.einsum("kn,knd,kne->kde", r.T, diff, diff)
    new_raw = {"full": s / nk[:, None, None] + reg_covar * np.eye(d),
               "tied": s.sum(0) / nk.sum() + reg_covar * np.eye(d),
               "diag": np.einsum("kdd->kd", s) / nk[:, None] + reg_covar,
               "spherical": (np.einsum("kdd->kd", s) / nk[:, None]).mean(1) + reg_covar}[cov_type]
    w = w if "weights" in fixed else new_w
    mu = mu if "means" in fixed else new_mu
    raw = raw if "covariances" in fixed else new_raw
  return w, mu, raw, np.array(history)


@pytest.mark.parametrize("cov_type,fixed", [
    ("full", ("means", "covariances")), ("tied", ("means",)),
    ("spherical", ("means", "weights")),
    pytest.param("full", ("means",), marks=pytest.mark.slow),
    pytest.param("full", ("weights",), marks=pytest.mark.slow),
    pytest.param("diag", ("covariances",), marks=pytest.mark.slow)])
def test_free_fields_equal_float64_reference(x64, cov_type, fixed):
  """E.g. with means and covariances fixed, each weight update is the mean responsibility."""
  x = _data(np.float64, n=200)
  init = _init(x, cov_type, jnp.float64)
  result = gmm.fit(jax.random.key(0), x, 3, cov_type, init=init, max_iter=6, tol=0.0,
                   reg_covar=1e-6, fixed=fixed)
  w, mu, cov, history = _reference_em(x, init, fixed, 6, 1e-6)
  np.testing.assert_allclose(result.log_likelihood, history, rtol=1e-9)
  np.testing.assert_allclose(result.params.weights, w, rtol=1e-8)
  np.testing.assert_allclose(result.params.means, mu, rtol=1e-8)
  np.testing.assert_allclose(result.params.covariances, cov, rtol=1e-7, atol=1e-10)
  _assert_fixed(result, init, fixed)


def test_fixed_on_a_mesh_equals_one_device_and_resumes():
  """In-process mesh (the devices of this process) and resuming from a result keep the fields."""
  x = _data()
  init = _init(x, "full", jnp.float32)
  fixed = ("means",)
  mesh = gmm.fit(jax.random.key(0), x, 3, init=init, max_iter=8, tol=0.0, fixed=fixed,
                 chunk_size=50, mesh=sharding.data_mesh())
  _assert_fixed(mesh, init, fixed)
  half = gmm.fit(jax.random.key(0), x, 3, init=init, max_iter=4, tol=0.0, fixed=fixed,
                 chunk_size=50)
  resumed = gmm.fit(jax.random.key(0), x, 3, init=half, max_iter=8, tol=0.0, fixed=fixed,
                    chunk_size=50)
  assert int(resumed.n_iter) == 8
  _assert_fixed(resumed, init, fixed)
  for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(mesh.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(resumed.log_likelihood, mesh.log_likelihood, rtol=1e-5)


def test_generic_family_named_init_and_streaming(x64):
  """lvmjax.mixture with any family: a named init freezes the initialisation's values; the
  streamed fit keeps them too and equals the in-memory one."""
  x = _data(np.float64, n=240)
  family = gmm.em.GaussianFamily("diag", 1e-6)
  start = mixture.fit(family, jax.random.key(1), x, 3, init="random_from_data", max_iter=0)
  named = mixture.fit(family, jax.random.key(1), x, 3, init="random_from_data", max_iter=5,
                      fixed=("covariances",))
  np.testing.assert_allclose(named.params.covariances, start.params.covariances, rtol=1e-12)
  assert not np.allclose(named.params.means, start.params.means)
  init = start.params
  in_memory = mixture.fit(family, jax.random.key(1), x, 3, init=init, max_iter=5, tol=0.0,
                          fixed=("weights", "means"))
  batches = lambda: ((x[i:i + 80], None) for i in range(0, len(x), 80))
  streamed = mixture.fit_streaming(family, init, batches, 3, max_iter=5, tol=0.0, batch_size=80,
                                   fixed=("weights", "means"))
  for name in ("weights", "means"):
    assert np.array_equal(getattr(streamed.params, name), getattr(init, name))
  np.testing.assert_allclose(streamed.params.covariances, in_memory.params.covariances,
                             rtol=1e-10)


def test_bad_fixed_is_a_value_error():
  x = _data()
  init = _init(x, "diag", jnp.float32)
  with pytest.raises(ValueError, match="'weights', 'means', 'covariances'"):
    gmm.fit(jax.random.key(0), x, 3, "diag", init=init, fixed=("mean",))
  with pytest.raises(ValueError, match="init must hold them"):
    gmm.fit(jax.random.key(0), x, 3, "diag", fixed=("means",))
  with pytest.raises(ValueError, match="tuple of parameter field names"):
    gmm.fit(jax.random.key(0), x, 3, "diag", init=init, fixed=(1,))
  with pytest.raises(ValueError, match="not fields of the parameters"):
    mixture.fit(gmm.em.GaussianFamily("diag"), jax.random.key(0), x, 3, init=init,
                fixed=("rates",))


def _mesh_main():
  """Run in a fresh Python with 2 CPU devices: the fixed fields come back bit for bit and the fit
  equals the one-device fit."""
  assert jax.device_count() == 2, jax.devices()
  out = {}
  x = _data(n=301)  # not a multiple of 2: padding rows must not count
  for cov_type in ("full", "diag"):
    init = _init(x, cov_type, jnp.float32)
    a = gmm.fit(jax.random.key(0), x, 3, cov_type, init=init, max_iter=8, tol=0.0,
                fixed=("means", "weights"), chunk_size=50)
    b = gmm.fit(jax.random.key(0), x, 3, cov_type, init=init, max_iter=8, tol=0.0,
                fixed=("means", "weights"), chunk_size=50, mesh=sharding.data_mesh())
    out[cov_type] = {
        "bitwise": [bool(np.array_equal(np.asarray(getattr(b.params, f)),
                                        np.asarray(getattr(init, f)))) for f in ("means", "weights")],
        "diff": float(np.max(np.abs(np.asarray(a.params.covariances)
                                    - np.asarray(b.params.covariances))))}
  print("RESULT " + json.dumps(out))


@pytest.mark.slow
def test_fixed_on_a_two_device_cpu_mesh():
  out = processes.on_cpu_devices("test_gmm_fixed", "_mesh_main", 2, timeout=300)
  for cov_type, r in out.items():
    assert r["bitwise"] == [True, True], (cov_type, r)
    assert r["diff"] < 1e-3, (cov_type, r)
