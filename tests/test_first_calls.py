"""An eager call of a building block compiles a program or two, not one per operation.

The math layer checks its arguments at the door and runs its numbers as one jitted core, so a
first call costs one compilation (~0.1-0.3 s) instead of dozens (``gmm.posterior``: 84 programs,
~1.7 s before). Each case uses shapes no other test uses, so nothing is compiled beforehand. The
VAE's case, with its fallback for models that cannot be hashed, is in ``test_vae.py``.
"""
import jax
import numpy as np
import pytest

from lvmjax import gmm, kmeans, ppca
from lvmjax.gmm import bayesian, factor
from tests import compile_count

D, K, N = 7, 3, 19  # shapes no other test uses


def _cases():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, D)).astype(np.float32)
  g = gmm.GMMParams(np.full(K, 1 / K, np.float32), rng.normal(size=(K, D)).astype(np.float32),
                    np.stack([np.eye(D, dtype=np.float32)] * K), "full")
  p = ppca.PPCAParams(rng.normal(size=(D, 2)).astype(np.float32), np.zeros(D, np.float32),
                      np.float32(0.5))
  key = jax.random.key(0)
  resp = np.eye(K, dtype=np.float32)[np.arange(N) % K]
  b = bayesian.params_from_responsibilities(bayesian.prior(x, num_components=K), x, resp)
  f = factor.FactorParams(g.weights, g.means, rng.normal(size=(K, D, 2)).astype(np.float32),
                          np.ones((K, D), np.float32))
  return {
      "gmm.posterior": lambda: gmm.posterior(g, x),
      "gmm.log_marginal": lambda: gmm.log_marginal(g, x[:5]),
      "gmm.sample": lambda: gmm.sample(g, key, 23),
      "kmeans.predict": lambda: kmeans.predict(g.means, x),
      "ppca.log_marginal": lambda: ppca.log_marginal(p, x),
      "ppca.posterior": lambda: ppca.posterior(p, x),
      "ppca.sample": lambda: ppca.sample(p, key, 23),
      "gmm.bayesian.posterior": lambda: bayesian.posterior(b, x[:6]),
      "gmm.bayesian.score_samples": lambda: bayesian.score_samples(b, x[:8]),
      "gmm.bayesian.sample": lambda: bayesian.sample(b, key, 29),
      "gmm.factor.log_marginal": lambda: factor.log_marginal(f, x),
      "gmm.factor.latent_posterior": lambda: factor.latent_posterior(f, x),
      "gmm.factor.sample": lambda: factor.sample(f, key, 23),
  }


@pytest.mark.parametrize("name", list(_cases()))
def test_a_first_call_compiles_a_few_programs(name):
  call = _cases()[name]
  with compile_count.count_programs() as count:
    jax.block_until_ready(call())
  assert count[0] <= 3, f"{name} compiled {count[0]} programs"
