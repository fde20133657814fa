"""AIS and BDMC (lvmjax.vae.ais) on the linear-Gaussian VAE, whose log p(x) is exact (PPCA).

z ~ N(0, I), x | z ~ N(W z + mu, s^2 I) built from the library's linear encoder / decoder and a
fixed-scale Gaussian likelihood; the reference is scipy's multivariate normal density of
x ~ N(mu, W W^T + s^2 I). The sampler runs are shared between tests (one compile each).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from lvmjax import vae
from lvmjax.vae import ais
from tests import compile_count

D, L, S = 4, 2, 0.6
NUM_CHAINS, NUM_LEAPFROG = 16, 4
_CACHE = {}


def _ppca():
  rng = np.random.default_rng(0)
  w = 0.8 * rng.normal(size=(D, L))
  mu = rng.normal(size=D)
  model = vae.VAE(vae.LinearEncoder(L), vae.LinearDecoder(D), vae.GaussianLikelihood(scale=S))
  params = vae.init(jax.random.key(0), model, jnp.zeros((1, D)))
  params["params"]["decoder"]["output"]["kernel"] = jnp.asarray(w.T)
  params["params"]["decoder"]["output"]["bias"] = jnp.asarray(mu)
  marginal = scipy.stats.multivariate_normal(mu, w @ w.T + S ** 2 * np.eye(D))
  x = marginal.rvs(size=6, random_state=1)
  return model, params, x, marginal.logpdf(x), marginal


def _estimate(num_steps, key=1, init="prior"):
  """(N,) AIS estimates on the PPCA points; the jitted function is compiled once per setting."""
  name = (num_steps, init)
  if name not in _CACHE:
    model, params, _, _, _ = _ppca()
    _CACHE[name] = jax.jit(lambda k, x: ais.log_likelihood_ais(
        model, params, k, x, num_steps=num_steps, num_chains=NUM_CHAINS,
        num_leapfrog=NUM_LEAPFROG, init=init, step_size=0.2))
  return np.asarray(_CACHE[name](jax.random.key(key), _ppca()[2]))


def test_ais_matches_the_exact_ppca_log_likelihood(x64):
  _, _, _, exact, _ = _ppca()
  est = _estimate(1000)
  assert est.dtype == np.float64
  err = est - exact
  assert abs(np.mean(err)) < 0.05, err
  assert np.all(np.abs(err) < 0.15), err


def test_more_steps_never_worse_beyond_noise(x64):
  _, _, _, exact, _ = _ppca()
  one, many = _estimate(1), _estimate(1000)
  # T = 1 is importance sampling from the prior with 16 draws: errors of tenths of a nat
  assert np.mean(np.abs(one - exact)) > 0.1
  assert np.mean(np.abs(many - exact)) < np.mean(np.abs(one - exact)) / 3
  assert np.all(np.abs(many - exact) < np.abs(one - exact) + 0.05)


def test_chains_are_reproducible_from_the_key(x64):
  first = _estimate(1, key=5)
  np.testing.assert_array_equal(_estimate(1, key=5), first)
  assert not np.array_equal(_estimate(1, key=6), first)


def test_evaluate_ais_is_the_batched_estimate_per_point(x64):
  """evaluate_ais: batch i from fold_in(key, i), the short last batch padded and the padding
  dropped; its mean, standard error and per-point values are those of the direct calls."""
  model, params, x, _, _ = _ppca()
  key = jax.random.key(4)
  opts = dict(num_steps=10, num_chains=NUM_CHAINS, num_leapfrog=NUM_LEAPFROG, step_size=0.2)
  seen = []
  res = ais.evaluate_ais(model, params, key, x, batch_size=4, return_values=True,
                         progress=lambda done, total: seen.append((done, total)), **opts)
  direct = jax.jit(lambda k, xb: ais.log_likelihood_ais(model, params, k, xb, **opts))
  padded = np.concatenate([x[4:], np.repeat(x[-1:], 2, axis=0)])
  expected = np.concatenate([np.asarray(direct(jax.random.fold_in(key, 0), x[:4])),
                             np.asarray(direct(jax.random.fold_in(key, 1), padded))[:2]])
  assert res["values"].shape == (6,) and res["values"].dtype == np.float64
  np.testing.assert_allclose(res["values"], expected, rtol=1e-12)
  assert res["log_likelihood_ais"] == pytest.approx(np.mean(expected), rel=1e-12)
  assert res["nll_ais"] == -res["log_likelihood_ais"]
  assert res["log_likelihood_ais_sem"] == pytest.approx(np.std(expected, ddof=1) / np.sqrt(6))
  assert res["num_points"] == 6 and res["ais_num_steps"] == 10 and seen == [(4, 6), (6, 6)]
  with compile_count.count_programs() as count:  # a second evaluation reuses the program
    again = ais.evaluate_ais(model, params, jax.random.key(5), x, batch_size=4, **opts)
  assert "values" not in again and count[0] == 0
  # a schedule given as an array (not hashable) is checked and made a tuple, then runs as one
  schedule = np.linspace(0.0, 1.0, opts["num_steps"] + 1)
  linear = ais.evaluate_ais(model, params, key, x, batch_size=4, schedule=schedule, **opts)
  assert linear["log_likelihood_ais"] == pytest.approx(ais.evaluate_ais(
      model, params, key, x, batch_size=4, schedule="linear", **opts)["log_likelihood_ais"],
                                                       rel=1e-12)


@pytest.mark.parametrize("init", ["encoder", pytest.param("prior", marks=pytest.mark.slow)])
def test_bdmc_brackets_the_exact_log_likelihood(x64, init):
  """Forward and reverse AIS from the model's own latents; from the (untrained) encoder's q."""
  model, params, _, _, marginal = _ppca()
  f = jax.jit(lambda k: ais.bdmc(model, params, k, 6, num_steps=500, num_chains=NUM_CHAINS,
                                 num_leapfrog=NUM_LEAPFROG, step_size=0.2, init=init))
  res = f(jax.random.key(3))
  exact = marginal.logpdf(np.asarray(res.x))
  lower, upper = np.asarray(res.lower), np.asarray(res.upper)
  # each bound is stochastic; on average the lower is below and the upper above the truth
  assert np.mean(lower) <= np.mean(exact) + 0.02
  assert np.mean(upper) >= np.mean(exact) - 0.02
  assert np.mean(upper - lower) < 0.2
  assert np.all(np.abs(lower - exact) < 0.3) and np.all(np.abs(upper - exact) < 0.3)


@pytest.mark.slow
def test_generic_target_with_a_pytree_latent(x64):
  """A 1-D Gaussian model written with the generic interface, latent a dict of two arrays."""
  s, x = 0.7, 1.3
  prec = np.array([1.0, 4.0])  # z = {"a": scalar ~ N(0, 1), "b": scalar ~ N(0, 1/4)}, x ~ N(a + b, s^2)

  def log_prior(z):
    return (jnp.sum(scipy_norm_logpdf(z["a"], 1.0))
            + jnp.sum(scipy_norm_logpdf(z["b"], 1 / prec[1])))

  def log_likelihood(z):
    return jnp.sum(scipy_norm_logpdf(x - z["a"][0] - z["b"][0], s ** 2))

  def sample_prior(key):
    ka, kb = jax.random.split(key)
    return {"a": jax.random.normal(ka, (1,)), "b": jax.random.normal(kb, (1,)) / 2.0}

  target = ais.AISTarget(log_prior, log_likelihood, sample_prior)
  exact = scipy.stats.norm(0.0, np.sqrt(1.0 + 0.25 + s ** 2)).logpdf(x)
  run = jax.jit(lambda k: ais.ais(target, k, num_steps=300, num_chains=32, num_leapfrog=4,
                                  step_size=0.3))
  res = run(jax.random.key(0))
  assert res.positions["a"].shape == (32, 1) and res.log_weights.shape == (32,)
  assert abs(float(res.log_marginal) - exact) < 0.05
  assert np.all(np.asarray(res.acceptance) > 0.3)


def scipy_norm_logpdf(v, variance):
  return -0.5 * (v ** 2 / variance + jnp.log(2 * jnp.pi * variance))


def test_annealing_schedules():
  for name in ("sigmoid", "linear"):
    b = np.asarray(ais.annealing_schedule(50, name))
    assert b.shape == (51,) and b[0] == 0.0 and b[-1] == 1.0 and np.all(np.diff(b) > 0)


def test_bad_input_raises():
  model, params, x, _, _ = _ppca()
  key = jax.random.key(0)
  cases = [
      dict(key=0), dict(x=x[0]), dict(x=np.full((2, D), np.nan)), dict(num_steps=0),
      dict(num_chains=0), dict(num_leapfrog=1.5), dict(init="posterior"), dict(step_size=0.0),
      dict(step_size=2.0), dict(schedule="cosine"), dict(schedule=[0.0, 0.5]),
      dict(target_acceptance=1.5), dict(step_size_jitter=1.0), dict(momentum=1),
  ]
  for case in cases:
    kwargs = dict(key=key, x=x, num_steps=5)
    kwargs.update(case)
    with pytest.raises(ValueError):
      ais.log_likelihood_ais(model, params, kwargs.pop("key"), kwargs.pop("x"), **kwargs)
  with pytest.raises(ValueError, match="ais_target"):
    ais.log_likelihood_ais(object(), params, key, x, num_steps=5)
  with pytest.raises(ValueError, match="encoder could not be applied to inputs of shape"):
    ais.log_likelihood_ais(model, params, key, x[:, :-1], num_steps=5)  # not the model's D
  with pytest.raises(ValueError, match="initial proposal"):
    ais.ais(ais.AISTarget(lambda z: 0.0, lambda z: 0.0, lambda k: jnp.zeros(1)), key,
            from_initial=True, num_steps=5)
  with pytest.raises(ValueError):
    ais.bdmc(model, params, key, 0, num_steps=5)
