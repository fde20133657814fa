"""The EM extension point (lvmjax.mixture): a new mixture family defined here, in under 80 lines,
gets chunking, sample weights, restarts, resumption, streaming and device meshes from the library,
checked against a float64 direct computation."""
import dataclasses
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from lvmjax import mixture
from tests import processes


# ---- The new family: a mixture of independent Poissons (what a user writes) ------------------


class PoissonParams(NamedTuple):
  weights: jax.Array  # (K,)
  rates: jax.Array    # (K, D)


@dataclasses.dataclass(frozen=True)
class PoissonMixture(mixture.MixtureFamily):
  r"""p(x | z=k) = prod_d Poisson(x_d; lambda_kd). M-step: w_k = N_k / N, lambda_k = T_k / N_k."""
  min_rate: float = 1e-6

  def log_component(self, params, x):
    return (x @ jnp.log(params.rates).T - jnp.sum(params.rates, axis=1)[None, :]
            - jnp.sum(jax.scipy.special.gammaln(x + 1), axis=1, keepdims=True))

  def m_step(self, params, stats):
    del params
    counts = stats.counts + 10 * jnp.finfo(stats.counts.dtype).eps
    rates = jnp.maximum(stats.moments / counts[:, None], self.min_rate)
    return PoissonParams(counts / jnp.sum(counts), rates)


# ---- Data and a float64 reference written directly from the equations ------------------------


def _data(n=400, seed=0):
  rng = np.random.default_rng(seed)
  rates = np.array([[1.0, 8.0, 3.0], [9.0, 1.0, 4.0], [4.0, 4.0, 12.0]])
  z = rng.choice(3, n, p=[0.3, 0.3, 0.4])
  return rng.poisson(rates[z]).astype(np.float64)


def _reference_em(x, w, params, num_iters):
  """Direct float64 EM with scipy's Poisson log-pmf: (params, per-iteration mean log-lik)."""
  weights, rates = np.asarray(params.weights, np.float64), np.asarray(params.rates, np.float64)
  history = []
  for _ in range(num_iters):
    log_joint = np.log(weights)[None, :] + np.stack(
        [sps.poisson.logpmf(x, rates[k][None, :]).sum(axis=1) for k in range(len(weights))], 1)
    log_px = np.logaddexp.reduce(log_joint, axis=1)
    history.append(np.sum(w * log_px) / np.sum(w))
    r = w[:, None] * np.exp(log_joint - log_px[:, None])
    counts = r.sum(0) + 10 * np.finfo(np.float64).eps
    weights, rates = counts / counts.sum(), np.maximum(r.T @ x / counts[:, None], 1e-6)
  return weights, rates, np.array(history)


def _start(x):
  return PoissonParams(jnp.array([0.2, 0.3, 0.5]), jnp.asarray(x[[0, 1, 2]] + 0.5))


def test_fit_matches_direct_float64_em_iteration_by_iteration(x64):
  x = _data()
  w = np.random.default_rng(1).uniform(0.5, 2.0, len(x))
  res = mixture.fit(PoissonMixture(), jax.random.key(0), x, 3, init=_start(x), max_iter=15,
                    tol=0.0, sample_weight=w, chunk_size=64)
  weights, rates, history = _reference_em(x, w, _start(x), 15)
  assert int(res.n_iter) == 15 and res.log_likelihood.shape == (15,)
  np.testing.assert_allclose(res.log_likelihood, history, rtol=1e-12)
  np.testing.assert_allclose(res.params.weights, weights, rtol=1e-10)
  np.testing.assert_allclose(res.params.rates, rates, rtol=1e-10)
  assert np.all(np.diff(history) >= -1e-12)  # EM never decreases the likelihood


def test_e_step_statistics_match_direct_sums_and_chunking_changes_nothing(x64):
  x = _data(n=203)
  params = _start(x)
  whole = mixture.e_step(PoissonMixture(), params, x, chunk_size=1000)
  for chunk in (1, 17, 64):
    part = mixture.e_step(PoissonMixture(), params, x, chunk_size=chunk)
    for a, b in zip(jax.tree.leaves(part), jax.tree.leaves(whole)):
      np.testing.assert_allclose(a, b, rtol=1e-12)
  lj = np.log(np.asarray(params.weights)) + np.stack(
      [sps.poisson.logpmf(x, np.asarray(params.rates[k])).sum(1) for k in range(3)], 1)
  r = np.exp(lj - np.logaddexp.reduce(lj, axis=1)[:, None])
  np.testing.assert_allclose(whole.counts, r.sum(0), rtol=1e-12)
  np.testing.assert_allclose(whole.moments, r.T @ x, rtol=1e-12)
  np.testing.assert_allclose(whole.log_likelihood, np.logaddexp.reduce(lj, axis=1).sum(),
                             rtol=1e-12)


def test_integer_weights_equal_repeated_rows(x64):
  x = _data(n=120)
  reps = np.random.default_rng(2).integers(0, 4, len(x))
  a = mixture.fit(PoissonMixture(), jax.random.key(0), x, 3, init=_start(x), sample_weight=reps,
                  max_iter=20, tol=0.0, chunk_size=32)
  b = mixture.fit(PoissonMixture(), jax.random.key(0), np.repeat(x, reps, axis=0), 3,
                  init=_start(x), max_iter=20, tol=0.0, chunk_size=50)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(u, v, rtol=1e-10)


@pytest.mark.parametrize("init", mixture.INITS)
def test_restarts_are_a_vmap_and_return_the_best(x64, init):
  x = _data()
  key = jax.random.key(3)
  best = mixture.fit(PoissonMixture(), key, x, 3, init=init, n_init=4, max_iter=30)
  singles = [mixture.fit(PoissonMixture(), k, x, 3, init=init, max_iter=30)
             for k in jax.random.split(key, 4)]
  scores = [float(s.lower_bound) for s in singles]
  want = singles[int(np.argmax(scores))]
  assert len(set(np.round(scores, 6))) > 1  # the restarts differ, so choosing matters
  np.testing.assert_allclose(float(best.lower_bound), max(scores), rtol=1e-12)
  for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-8)
  np.testing.assert_allclose(np.sort(best.params.rates[:, 2]), [3.0, 4.0, 12.0], rtol=0.25)


def test_fit_in_blocks_equals_one_fit_and_eager_equals_jit():
  x = _data().astype(np.float32)
  full = mixture.fit(PoissonMixture(), jax.random.key(0), x, 3, init="random", max_iter=40,
                     tol=1e-5)
  part = mixture.fit(PoissonMixture(), jax.random.key(0), x, 3, init="random", max_iter=4,
                     tol=1e-5)
  while not bool(part.converged) and int(part.n_iter) < 40:
    part = mixture.fit(PoissonMixture(), jax.random.key(0), x, 3, init=part,
                       max_iter=int(part.n_iter) + 4, tol=1e-5)
  for a, b in zip(jax.tree.leaves(part), jax.tree.leaves(full)):
    np.testing.assert_array_equal(a, b)
  jitted = jax.jit(lambda p: mixture.run_em(
      PoissonMixture(), p, *mixture.chunk_rows(jnp.asarray(x), jnp.ones(len(x)), 100),
      tol=1e-5, max_iter=40))(_start(x))
  with jax.disable_jit():
    eager = mixture.run_em(PoissonMixture(), _start(x),
                           *mixture.chunk_rows(jnp.asarray(x), jnp.ones(len(x)), 100),
                           tol=1e-5, max_iter=40)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_streaming_equals_in_memory(x64):
  x = _data(n=333)
  w = np.random.default_rng(4).uniform(0.5, 2.0, len(x))
  mem = mixture.fit(PoissonMixture(), jax.random.key(0), x, 3, init=_start(x), sample_weight=w,
                    max_iter=50, tol=1e-8)

  def batches():  # a fresh pass over uneven batches, as from files
    for i in range(0, len(x), 70):
      yield x[i:i + 70], w[i:i + 70]

  seen = []
  res = mixture.fit_streaming(PoissonMixture(), _start(x), batches, 3, max_iter=50, tol=1e-8,
                              batch_size=70, chunk_size=16,
                              callback=lambda i, ll: seen.append((i, ll)))
  assert int(res.n_iter) == int(mem.n_iter) and bool(res.converged)
  np.testing.assert_allclose(res.log_likelihood, mem.log_likelihood, rtol=1e-12)
  for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(mem.params)):
    np.testing.assert_allclose(a, b, rtol=1e-9)
  assert [i for i, _ in seen] == list(range(int(res.n_iter)))


def _mesh_main():
  """Run in a fresh Python with 4 CPU devices: the fit on a mesh equals the one-device fit."""
  assert jax.device_count() == 4, jax.devices()
  from lvmjax import sharding  # pylint: disable=g-import-not-at-top
  out = {}
  with jax.enable_x64(True):
    x = _data(n=401)  # not a multiple of 4: padding rows must not count
    w = np.random.default_rng(5).uniform(0.5, 2.0, len(x))
    for init in ("random", "random_from_data"):
      a = mixture.fit(PoissonMixture(), jax.random.key(1), x, 3, init=init, n_init=2,
                      sample_weight=w, tol=1e-8, chunk_size=25)
      b = mixture.fit(PoissonMixture(), jax.random.key(1), x, 3, init=init, n_init=2,
                      sample_weight=w, tol=1e-8, chunk_size=25, mesh=sharding.data_mesh())
      out[init] = {"n_iter": [int(a.n_iter), int(b.n_iter)],
                   "converged": [bool(a.converged), bool(b.converged)],
                   "diff": max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
                               for u, v in zip(jax.tree.leaves(a.params) + [a.log_likelihood],
                                               jax.tree.leaves(b.params) + [b.log_likelihood]))}
  print("RESULT " + json.dumps(out))


def test_mesh_of_four_cpu_devices_equals_one_device():
  out = processes.on_cpu_devices("test_mixture", "_mesh_main", 4, timeout=300)
  for init, r in out.items():
    assert r["n_iter"][0] == r["n_iter"][1] and r["converged"] == [True, True], (init, r)
    assert r["diff"] < 1e-9, (init, r)
