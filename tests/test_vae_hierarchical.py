"""The two-stochastic-layer VAE (lvmjax.vae.hierarchical): reduction to one layer, the order of the
bounds, a linear-Gaussian chain whose log p(x) is exact (scipy), AIS on it, and the launcher."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from lvmjax import vae
from lvmjax.vae import hierarchical
from tests import compile_count

D, L1, L2 = 5, 3, 2


def _zero(tree):
  return jax.tree.map(jnp.zeros_like, tree)


def _linear_top():
  """A two-layer model with linear z2 networks, its params, float64 binary data, and the
  one-layer VAE with the same encoder and decoder networks: ``(model, params, x, one)``."""
  model = hierarchical.HierarchicalVAE(
      vae.MLPEncoder(L1, (8,)), vae.LinearEncoder(L2), vae.LinearEncoder(L1),
      vae.MLPDecoder(D, (8,)), vae.BernoulliLikelihood())
  x = (jax.random.uniform(jax.random.key(0), (7, D)) < 0.4).astype(jnp.float64)
  params = hierarchical.init(jax.random.key(1), model, x)
  one = vae.VAE(vae.MLPEncoder(L1, (8,)), vae.MLPDecoder(D, (8,)), vae.BernoulliLikelihood())
  return model, params, x, one


def test_with_z2_switched_off_every_bound_is_the_one_layer_formula(x64):
  """p(z1 | z2) = N(0, I) whatever z2, q(z2 | z1) = p(z2): log w is the one-layer weight."""
  model, params, x, one = _linear_top()
  p = params["params"]
  p["encoder2"], p["conditional"] = _zero(p["encoder2"]), _zero(p["conditional"])
  one_params = {"params": {"encoder": p["encoder1"], "decoder": p["decoder"]}}
  key = jax.random.key(2)
  np.testing.assert_allclose(hierarchical.elbo(model, params, key, x, 3),
                             vae.elbo(one, one_params, key, x, 3, analytic_kl=False), rtol=1e-12)
  np.testing.assert_allclose(hierarchical.iwae_bound(model, params, key, x, 5),
                             vae.iwae_bound(one, one_params, key, x, 5), rtol=1e-12)
  np.testing.assert_allclose(hierarchical.log_likelihood(model, params, key, x, 50, chunk_size=20),
                             vae.log_likelihood(one, one_params, key, x, 50, chunk_size=20),
                             rtol=1e-12)


def test_reconstruct_samples_and_posterior_means_are_the_layers_means(x64):
  """reconstruct: the decoder's mean at the mean of q(z1 | x) (the one-layer model's reconstruct
  on the same networks); sample_joint(use_mean): the decoder's mean at the drawn z1; the z2
  posterior mean E_q(z1|x)[A z1 + b] of a linear q(z2 | z1) is A mu1(x) + b."""
  model, params, x, one = _linear_top()
  p = params["params"]
  one_params = {"params": {"encoder": p["encoder1"], "decoder": p["decoder"]}}
  np.testing.assert_allclose(hierarchical.reconstruct(model, params, x),
                             vae.reconstruct(one, one_params, x), rtol=1e-12)
  xs, (z1, _) = hierarchical.sample_joint(model, params, jax.random.key(2), 6, use_mean=True)
  np.testing.assert_allclose(xs, vae.sample_given(one, one_params, jax.random.key(3), z1,
                                                  use_mean=True), rtol=1e-12)
  assert np.all((xs > 0) & (xs < 1)) and not np.all(np.isin(xs, (0.0, 1.0)))
  m1, m2 = hierarchical.posterior_means(model, params, jax.random.key(4), x, num_samples=20000,
                                        batch_size=3)
  mu1 = np.asarray(vae.encode(one, one_params, x)[0])
  np.testing.assert_allclose(m1, mu1, rtol=1e-12)
  a, b = (np.asarray(p["encoder2"]["mean"][n]) for n in ("kernel", "bias"))
  np.testing.assert_allclose(m2, mu1 @ a + b, atol=0.03)
  moments = hierarchical.latent_moments(model, params, jax.random.key(4), x, 20000, 3)
  np.testing.assert_allclose(moments[1].total, m2.sum(axis=0), rtol=1e-12)
  assert moments[0].count == 7


def _burda_small():
  model = hierarchical.burda_model(D, latent_dims=(L1, L2), hidden=((16,), (8,)))
  x = (jax.random.uniform(jax.random.key(3), (200, D)) < 0.3).astype(jnp.float32)
  return model, hierarchical.init(jax.random.key(4), model, x), x


def test_bounds_are_ordered_on_average():
  model, params, x = _burda_small()
  key = jax.random.key(5)
  e = float(jnp.mean(hierarchical.elbo(model, params, jax.random.fold_in(key, 0), x)))
  i5 = float(jnp.mean(hierarchical.iwae_bound(model, params, jax.random.fold_in(key, 1), x, 5)))
  i50 = float(jnp.mean(hierarchical.iwae_bound(model, params, jax.random.fold_in(key, 2), x, 50)))
  ll = float(jnp.mean(hierarchical.log_likelihood(model, params, jax.random.fold_in(key, 3), x,
                                                  1000)))
  assert e < i5 < i50 < ll


def test_a_first_call_compiles_a_few_programs():
  """Each public function runs its checked core as one jitted program, not one per operation."""
  model = hierarchical.burda_model(11, latent_dims=(4, 3), hidden=((7,), (6,)))  # shapes of its own
  x = (np.random.default_rng(0).random((9, 11)) < 0.4).astype(np.float32)
  params = hierarchical.init(jax.random.key(0), model, x)
  key = jax.random.key(1)
  for name, call in (("elbo", lambda: hierarchical.elbo(model, params, key, x, 2)),
                     ("iwae_bound", lambda: hierarchical.iwae_bound(model, params, key, x, 3)),
                     ("log_likelihood", lambda: hierarchical.log_likelihood(
                         model, params, key, x, 10, chunk_size=4)),
                     ("sample_joint", lambda: hierarchical.sample_joint(model, params, key, 5)),
                     ("reconstruct", lambda: hierarchical.reconstruct(model, params, x))):
    with compile_count.count_programs() as count:
      jax.block_until_ready(call())
    assert count[0] <= 3, f"{name} compiled {count[0]} programs"


def test_evaluating_again_compiles_nothing():
  """The evaluations during training (every eval_every steps) reuse one program: a second
  evaluate or posterior_means with new parameters and key compiles nothing (it compiled two
  programs per call before)."""
  model, params, x = _burda_small()
  other = jax.tree.map(lambda a: a * 1.01, params)
  for p, k in ((params, 0), (other, 1)):
    with compile_count.count_programs() as count:
      figures = hierarchical.evaluate(model, p, jax.random.key(k), x, 64, num_samples_ll=20,
                                      iwae_k=(5,))
      hierarchical.posterior_means(model, p, jax.random.key(k), x[:50], num_samples=3)
    assert np.isfinite(figures["nll"]) and figures["num_points"] == len(x)
  assert count[0] == 0


def _linear_chain():
  """z2 ~ N(0, I), z1 | z2 ~ N(B z2 + c, diag v1), x | z1 ~ N(W z1 + mu, s^2 I), with q the exact
  conditional means and (inflated) diagonal variances, and scipy's density of x."""
  rng = np.random.default_rng(0)
  b, c, v1 = rng.normal(size=(L1, L2)), rng.normal(size=L1), np.exp(rng.normal(size=L1) * 0.3)
  w, mu, s = rng.normal(size=(D, L1)) * 0.7, rng.normal(size=D), 0.8
  sigma1 = b @ b.T + np.diag(v1)
  marginal = scipy.stats.multivariate_normal(w @ c + mu, w @ sigma1 @ w.T + s ** 2 * np.eye(D))
  prec = np.linalg.inv(sigma1) + w.T @ w / s ** 2          # z1 | x
  cov = np.linalg.inv(prec)
  a = cov @ w.T / s ** 2
  a0 = cov @ (np.linalg.solve(sigma1, c) - w.T @ mu / s ** 2)
  cov2 = np.linalg.inv(np.eye(L2) + b.T @ np.diag(1 / v1) @ b)   # z2 | z1
  a2 = cov2 @ b.T @ np.diag(1 / v1)
  model = hierarchical.HierarchicalVAE(
      vae.LinearEncoder(L1), vae.LinearEncoder(L2), vae.LinearEncoder(L1), vae.LinearDecoder(D),
      vae.GaussianLikelihood(scale=s))
  params = hierarchical.init(jax.random.key(0), model, jnp.zeros((1, D)))
  p = params["params"]
  f = lambda v: jnp.asarray(v, jnp.float64)  # pylint: disable=unnecessary-lambda-assignment
  p["encoder1"] = {"mean": {"kernel": f(a.T), "bias": f(a0)},
                   "log_variance": f(np.log(1.5 * np.diag(cov)))}
  p["encoder2"] = {"mean": {"kernel": f(a2.T), "bias": f(-a2 @ c)},
                   "log_variance": f(np.log(1.5 * np.diag(cov2)))}
  p["conditional"] = {"mean": {"kernel": f(b.T), "bias": f(c)}, "log_variance": f(np.log(v1))}
  p["decoder"] = {"output": {"kernel": f(w.T), "bias": f(mu)}}
  x = marginal.rvs(size=5, random_state=1)
  return model, params, x, marginal.logpdf(x)


def test_linear_gaussian_chain_matches_scipy(x64):
  model, params, x, exact = _linear_chain()
  key = jax.random.key(6)
  ll = np.asarray(hierarchical.log_likelihood(model, params, key, x, 5000))
  elbo = np.asarray(hierarchical.elbo(model, params, key, x, 100))
  assert ll.dtype == np.float64
  np.testing.assert_allclose(ll, exact, atol=0.03)
  assert np.all(elbo < exact)


def test_ais_and_bdmc_on_the_linear_gaussian_chain(x64):
  model, params, x, exact = _linear_chain()
  run = jax.jit(lambda k, x: vae.log_likelihood_ais(model, params, k, x, num_steps=300,
                                                    num_chains=8, num_leapfrog=4,
                                                    step_size=0.2))
  est = np.asarray(run(jax.random.key(7), x))
  assert abs(np.mean(est - exact)) < 0.05 and np.all(np.abs(est - exact) < 0.15), est - exact
  # a target's latent is the pytree (z1, z2); its densities are the model's
  target = model.ais_target(params, jnp.asarray(x[0]))
  z = target.sample_prior(jax.random.key(8))
  assert [np.shape(a) for a in z] == [(L1,), (L2,)]


@pytest.mark.slow
def test_bdmc_on_the_linear_gaussian_chain(x64):
  model, params, _, _ = _linear_chain()
  res = jax.jit(lambda k: vae.bdmc(model, params, k, 4, num_steps=300, num_chains=8,
                                   num_leapfrog=4, step_size=0.2))(jax.random.key(9))
  assert res.lower.shape == res.upper.shape == (4,)
  assert float(jnp.mean(res.upper - res.lower)) < 0.3


def test_sampling_active_units_and_bad_input():
  model, params, x = _burda_small()
  xs, (z1, z2) = hierarchical.sample_joint(model, params, jax.random.key(0), 6)
  assert xs.shape == (6, D) and z1.shape == (6, L1) and z2.shape == (6, L2)
  a1, a2 = hierarchical.active_units(model, params, jax.random.key(1), x, threshold=0.0)
  assert (a1, a2) == (L1, L2)
  a1, a2 = hierarchical.active_units(model, params, jax.random.key(1), x, threshold=1e9)
  assert (a1, a2) == (0, 0)
  with pytest.raises(ValueError):
    hierarchical.elbo(model, params, 0, x)
  with pytest.raises(ValueError):
    hierarchical.iwae_bound(model, params, jax.random.key(0), x[0], 5)
  with pytest.raises(ValueError):
    hierarchical.iwae_bound(model, params, jax.random.key(0), x, 0)
  with pytest.raises(ValueError):
    hierarchical.objective("ae")
  wrong_d = r"encoder q\(z1 \| x\) could not be applied to inputs of shape"
  with pytest.raises(ValueError, match=wrong_d):
    hierarchical.elbo(model, params, jax.random.key(0), x[:, :-1])
  with pytest.raises(ValueError, match=wrong_d):
    vae.log_likelihood_ais(model, params, jax.random.key(0), x[:, :-1], num_steps=5)


def test_two_layer_config_trains_through_the_launcher(tmp_path):
  from configs import vae2_binarized_mnist  # pylint: disable=import-outside-toplevel
  from lvmjax.vae import train  # pylint: disable=import-outside-toplevel
  config = vae2_binarized_mnist.get_config("iwae,smoke")
  config.dataset, config.dynamic_binarization = "digits", True
  run = train.train_and_evaluate(config, tmp_path, quiet=True)
  assert isinstance(run.model, hierarchical.HierarchicalVAE)
  results = json.loads((tmp_path / "results.json").read_text())
  for name in ("elbo", "iwae_5", "log_likelihood", "active_units_z1", "active_units_z2"):
    assert name in results and np.isfinite(results[name])
  assert results["elbo"] <= results["iwae_5"] + 0.5
  for name in ("samples", "reconstructions", "latent_space", "latent_space_z1",
               "training_curves"):
    assert (tmp_path / f"vae_{name}.png").stat().st_size > 1000, name
  config.stochastic_layers = 3
  with pytest.raises(ValueError, match="stochastic_layers"):
    train.validate_config(config)
