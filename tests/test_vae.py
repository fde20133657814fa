"""Tests for lvmjax.vae: bounds against an exact linear-Gaussian model, likelihoods, KL, checks."""
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from lvmjax import ppca, vae

D, L = 5, 2


def _jit(fn, model, **static):
  """``fn(model, params, key, x, **static)`` jitted over (params, key, x): tests stay fast."""
  return jax.jit(lambda params, key, x: fn(model, params, key, x, **static))


def _linear_vae(fa=False):
  """A VAE that *is* PPCA / FA: linear decoder, Gaussian likelihood with the noise scale."""
  likelihood = vae.GaussianLikelihood(scale=None, min_scale=0.0)
  return vae.VAE(vae.LinearEncoder(latent_dim=L), vae.LinearDecoder(output_dim=D), likelihood)


def _ppca_and_vae_params(rng, fa=False, exact_posterior=True):
  """PPCA/FA params with W^T Psi^-1 W diagonal, and VAE params encoding that model.

  With ``exact_posterior`` the encoder is the exact posterior p(z|x) (diagonal here); otherwise
  it is perturbed.
  """
  psi = rng.uniform(0.3, 1.2, size=D) if fa else np.full(D, 0.5)
  q, _ = np.linalg.qr(rng.normal(size=(D, L)))
  s = np.array([2.0, 1.2])
  weight = np.sqrt(psi)[:, None] * q * s[None, :]
  mean = rng.normal(size=D)
  m_diag = 1.0 + s ** 2                                   # M = I + W^T Psi^-1 W = diag(1 + s^2)
  enc_kernel = (weight / psi[:, None]) / m_diag[None, :]  # (D, L): Psi^-1 W M^-1
  enc_bias = -mean @ enc_kernel
  log_var = -np.log(m_diag)
  if not exact_posterior:
    enc_kernel = enc_kernel * 0.8 + 0.05
    enc_bias = enc_bias + 0.3
    log_var = log_var + 0.4
  noise = jnp.asarray(psi) if fa else jnp.asarray(psi[0])
  params_ppca = ppca.PPCAParams(jnp.asarray(weight), jnp.asarray(mean), noise)
  params = {"params": {
      "encoder": {"mean": {"kernel": jnp.asarray(enc_kernel), "bias": jnp.asarray(enc_bias)},
                  "log_variance": jnp.asarray(log_var)},
      "decoder": {"output": {"kernel": jnp.asarray(weight.T), "bias": jnp.asarray(mean)}},
      "likelihood": {"log_scale": jnp.asarray(0.5 * np.log(psi))},
  }}
  return params_ppca, params


def _data(rng, params_ppca, n=6):
  x, _ = ppca.sample(jax.random.key(int(rng.integers(1 << 30))), params_ppca, n)
  return x


def test_init_structure_matches_linear_model():
  model = _linear_vae()
  params = vae.init(jax.random.key(0), model, jnp.zeros((3, D)))
  shapes = jax.tree_util.tree_map(jnp.shape, params)
  _, ref = _ppca_and_vae_params(np.random.default_rng(0))
  assert shapes == jax.tree_util.tree_map(jnp.shape, ref)


@pytest.mark.parametrize("fa", [False, True])
def test_exact_posterior_bounds_equal_log_marginal(x64, fa):
  rng = np.random.default_rng(1)
  model = _linear_vae(fa)
  params_ppca, params = _ppca_and_vae_params(rng, fa=fa)
  x = _data(rng, params_ppca)
  exact = ppca.log_marginal(params_ppca, x)
  key = jax.random.key(0)
  # q = p(z|x): every importance weight equals p(x), so the estimators are exact per sample.
  np.testing.assert_allclose(_jit(vae.elbo, model, num_samples=3, analytic_kl=False)(
      params, key, x), exact, rtol=1e-10)
  np.testing.assert_allclose(_jit(vae.iwae_bound, model, num_samples=4)(params, key, x), exact,
                             rtol=1e-10)
  # K = 7 in chunks of 3: the masked tail must not be counted.
  np.testing.assert_allclose(vae.log_likelihood(model, params, key, x, 7, chunk_size=3), exact,
                             rtol=1e-10)
  # with the analytic KL only the expectation is exact
  est = jax.jit(vae.elbo, static_argnums=(0, 4, 5, 6))(model, params, key, x, 20000, 1.0, True)
  np.testing.assert_allclose(est, exact, atol=0.05)
  # the encoder is the exact posterior
  mean, log_var = vae.encode(model, params, x)
  post_mean, post_cov = ppca.posterior(params_ppca, x)
  np.testing.assert_allclose(mean, post_mean, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(jnp.exp(log_var[0]), jnp.diag(post_cov), rtol=1e-10)
  np.testing.assert_allclose(post_cov, jnp.diag(jnp.diag(post_cov)), atol=1e-12)


def test_bounds_are_ordered_and_converge(x64):
  rng = np.random.default_rng(2)
  model = _linear_vae()
  params_ppca, params = _ppca_and_vae_params(rng, exact_posterior=False)
  x = _data(rng, params_ppca, n=8)
  exact = np.asarray(ppca.log_marginal(params_ppca, x))
  reps = 1000
  keys = jax.random.split(jax.random.key(1), reps)

  def repeats(fn):  # mean and standard error over independent repeats, per point
    values = np.asarray(jax.jit(jax.vmap(fn))(keys))
    return values.mean(0), values.std(0) / np.sqrt(reps)

  elbo, elbo_se = repeats(lambda k: vae.elbo(model, params, k, x, 1))
  iwae5, iwae5_se = repeats(lambda k: vae.iwae_bound(model, params, k, x, 5))
  iwae50, iwae50_se = repeats(lambda k: vae.iwae_bound(model, params, k, x, 50))
  # ELBO <= IWAE_5 <= IWAE_50 <= log p(x) in expectation, up to 4 standard errors
  assert np.all(exact - elbo > 0.05), exact - elbo  # the perturbed encoder is not the posterior
  assert np.all(elbo < iwae5 + 4 * np.hypot(elbo_se, iwae5_se))
  assert np.all(iwae5 < iwae50 + 4 * np.hypot(iwae5_se, iwae50_se))
  assert np.all(iwae50 < exact + 4 * iwae50_se)
  assert np.mean(iwae5 - elbo) > 0.05 and np.mean(iwae50 - iwae5) > 0.01
  # the importance-sampled estimate converges to log p(x) as K grows
  ll = jax.jit(vae.log_likelihood, static_argnums=(0, 4, 5))
  err = [np.mean(np.abs(ll(model, params, jax.random.key(k), x, k, 500) - exact))
         for k in (10, 1000, 10000)]
  assert err[0] > err[1] > err[2] and err[2] < 0.05, err


def test_iwae_k1_equals_mc_elbo():
  model = vae.VAE(vae.MLPEncoder(3, (8,)), vae.MLPDecoder(6, (8,)), vae.BernoulliLikelihood())
  x = (np.random.default_rng(3).random((10, 6)) < 0.5).astype(np.float32)
  params = vae.init(jax.random.key(0), model, x)
  key = jax.random.key(4)
  np.testing.assert_allclose(_jit(vae.iwae_bound, model, num_samples=1)(params, key, x),
                             _jit(vae.elbo, model, analytic_kl=False)(params, key, x), rtol=1e-6)
  terms = _jit(vae.elbo_terms, model, num_samples=2, beta=0.5)(params, key, x)
  np.testing.assert_allclose(terms.elbo, terms.reconstruction - 0.5 * terms.kl, rtol=1e-6)


def test_analytic_kl_matches_monte_carlo_and_distrax(x64):
  rng = np.random.default_rng(5)
  mean = rng.normal(size=(4, 3))
  log_var = rng.normal(size=(4, 3)) * 0.5
  kl = vae.gaussian_kl(mean, log_var)
  q = distrax.MultivariateNormalDiag(mean, np.exp(0.5 * log_var))
  p = distrax.MultivariateNormalDiag(np.zeros(3), np.ones(3))
  np.testing.assert_allclose(kl, q.kl_divergence(p), rtol=1e-10)
  # through the model: the ELBO's MC KL averages to the analytic KL
  model = vae.VAE(vae.MLPEncoder(3, (8,)), vae.MLPDecoder(6, (8,)), vae.BernoulliLikelihood())
  x = (rng.random((5, 6)) < 0.5).astype(np.float64)
  params = vae.cast_params(vae.init(jax.random.key(0), model, x), jnp.float64)
  key = jax.random.key(6)
  terms = jax.jit(vae.elbo_terms, static_argnums=(0, 4, 5, 6))
  analytic = terms(model, params, key, x, 1, 1.0, True).kl
  mc = terms(model, params, key, x, 40000, 1.0, False).kl
  np.testing.assert_allclose(mc, analytic, atol=0.03)


def test_elbo_gradient_matches_finite_differences(x64):
  model = vae.VAE(vae.MLPEncoder(2, (5,)), vae.MLPDecoder(4, (5,)),
                  vae.GaussianLikelihood(scale=None))
  rng = np.random.default_rng(7)
  x = rng.normal(size=(6, 4))
  params = vae.cast_params(vae.init(jax.random.key(0), model, x), jnp.float64)
  key = jax.random.key(8)

  def check(objective, h=1e-5):
    # fixed key: the reparameterised bound is a deterministic, smooth function of the params
    vg = jax.jit(jax.value_and_grad(lambda p: jnp.mean(objective(p))))
    _, grad = vg(params)
    f = lambda p: vg(p)[0]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    direction = jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(rng.normal(size=np.shape(l))) for l in leaves])
    shifted = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * d, params, direction)
    fd = (f(shifted(h)) - f(shifted(-h))) / (2 * h)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grad),
                                                  jax.tree_util.tree_leaves(direction)))
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)
    # one coordinate: a decoder weight
    kernel = params["params"]["decoder"]["output"]["kernel"]
    e = jnp.zeros_like(kernel).at[1, 2].set(1.0)
    def bump(s):
      p = jax.tree_util.tree_map(lambda a: a, params)
      p["params"]["decoder"]["output"]["kernel"] = kernel + s * e
      return p
    np.testing.assert_allclose(grad["params"]["decoder"]["output"]["kernel"][1, 2],
                               (f(bump(h)) - f(bump(-h))) / (2 * h), rtol=1e-6)

  check(lambda p: vae.elbo(model, p, key, x, 3))
  check(lambda p: vae.iwae_bound(model, p, key, x, 4))


def test_bernoulli_likelihood_matches_scipy(x64):
  rng = np.random.default_rng(9)
  logits = rng.normal(size=(3, 7)) * 3
  x = (rng.random((3, 7)) < 0.5).astype(np.float64)
  dist = vae.BernoulliLikelihood().apply({}, jnp.asarray(logits), 1)
  expected = stats.bernoulli.logpmf(x, special.expit(logits)).sum(-1)
  np.testing.assert_allclose(dist.log_prob(x), expected, rtol=1e-10)
  np.testing.assert_allclose(dist.mean(), special.expit(logits), rtol=1e-10)


def test_softplus_and_its_derivatives(x64):
  from lvmjax.vae.likelihoods import softplus  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(3)
  x = np.concatenate([rng.normal(size=200) * 30, [-800.0, -40.0, -1e-9, 0.0, 1e-9, 40.0, 800.0]])
  for dtype, rtol in ((jnp.float32, 1e-5), (jnp.float64, 1e-13)):
    xd = jnp.asarray(x, dtype)
    xr = np.asarray(xd, np.float64)  # the rounded input, so that only the function's error counts
    # log(1 + e^x), its derivative sigmoid(x) and its second derivative sigmoid(x) sigmoid(-x)
    expected = [np.logaddexp(0.0, xr), special.expit(xr), special.expit(xr) * special.expit(-xr)]
    f = softplus
    for order in range(3):
      # float32 loses nothing to underflow above ~1e-38 (jax.nn.softplus's second derivative
      # flushes to 0 much earlier, so it is not the reference here)
      np.testing.assert_allclose(jax.vmap(f)(xd), expected[order].astype(dtype), rtol=rtol,
                                 atol=1e-37 if dtype == jnp.float32 else 0)
      f = jax.grad(f)
    np.testing.assert_allclose(softplus(xd), jax.nn.softplus(xd), rtol=rtol)
    np.testing.assert_allclose(jax.vmap(jax.grad(softplus))(xd),
                               jax.vmap(jax.grad(jax.nn.softplus))(xd), rtol=rtol)
  special_values = jnp.asarray([-np.inf, np.inf, np.nan], jnp.float32)
  np.testing.assert_array_equal(softplus(special_values), jax.nn.softplus(special_values))
  np.testing.assert_array_equal(jax.vmap(jax.grad(softplus))(special_values),
                                jax.vmap(jax.grad(jax.nn.softplus))(special_values))


@pytest.mark.parametrize("scale", [None, 0.7])
def test_gaussian_likelihood_matches_scipy(x64, scale):
  rng = np.random.default_rng(10)
  mean = rng.normal(size=(3, 4))
  x = rng.normal(size=(3, 4))
  module = vae.GaussianLikelihood(scale=scale, min_scale=0.0)
  variables = module.init(jax.random.key(0), jnp.asarray(mean), 1)
  if scale is None:
    log_scale = jnp.asarray(rng.normal(size=4) * 0.3)
    variables = {"params": {"log_scale": log_scale}}
    sd = np.exp(np.asarray(log_scale))
  else:
    assert variables == {} or not variables.get("params")
    sd = np.full(4, scale)
  dist = module.apply(variables, jnp.asarray(mean), 1)
  expected = stats.norm.logpdf(x, mean, sd[None, :]).sum(-1)
  np.testing.assert_allclose(dist.log_prob(x), expected, rtol=1e-10)


def test_autoencoder_log_likelihood_is_reconstruction_at_mean(x64):
  rng = np.random.default_rng(11)
  model = _linear_vae()
  params_ppca, params = _ppca_and_vae_params(rng)
  x = np.asarray(_data(rng, params_ppca))
  mean, _ = vae.encode(model, params, x)
  recon = np.asarray(mean) @ np.asarray(params_ppca.weight).T + np.asarray(params_ppca.mean)
  expected = stats.norm.logpdf(x, recon, np.sqrt(float(params_ppca.noise_variance))).sum(-1)
  np.testing.assert_allclose(vae.autoencoder_log_likelihood(model, params, x), expected,
                             rtol=1e-10)
  np.testing.assert_allclose(vae.reconstruct(model, params, x), recon, rtol=1e-10, atol=1e-12)


def test_conv_pair_on_images():
  model = vae.VAE(vae.ConvEncoder(4, features=(4, 8), dense=16),
                  vae.ConvDecoder(features=(8, 4)), vae.BernoulliLikelihood())
  x = (np.random.default_rng(12).random((3, 28, 28, 1)) < 0.3).astype(np.float32)
  params = vae.init(jax.random.key(0), model, x)
  key = jax.random.key(1)
  values = _jit(vae.elbo, model, num_samples=2)(params, key, x)
  assert values.shape == (3,) and np.all(np.isfinite(values)) and np.all(values < 0)
  xs, z = jax.jit(lambda p, k: vae.sample(model, p, k, 5))(params, key)
  assert xs.shape == (5, 28, 28, 1) and z.shape == (5, 4)
  assert set(np.unique(np.asarray(xs))) <= {0.0, 1.0}


def test_generation_and_inference_shapes():
  model = vae.VAE(vae.MLPEncoder(3, (8,)), vae.MLPDecoder(6, (8,)), vae.BernoulliLikelihood())
  x = (np.random.default_rng(12).random((4, 6)) < 0.3).astype(np.float32)
  params = vae.init(jax.random.key(0), model, x)
  key = jax.random.key(1)
  xs, z = vae.sample(model, params, key, 5)
  assert xs.shape == (5, 6) and z.shape == (5, 3)
  assert set(np.unique(np.asarray(xs))) <= {0.0, 1.0}
  probs, _ = vae.sample(model, params, key, 2, use_mean=True)
  assert np.all((np.asarray(probs) > 0) & (np.asarray(probs) < 1))
  line = vae.interpolate(model, params, x[0], x[1], num_steps=4)
  assert line.shape == (4, 6)
  mean, _ = vae.encode(model, params, x[:2])
  np.testing.assert_allclose(line[0], vae.decode(model, params, mean[:1]).mean()[0], rtol=1e-5)
  np.testing.assert_allclose(line[-1], vae.decode(model, params, mean[1:]).mean()[0], rtol=1e-5)
  np.testing.assert_allclose(vae.reconstruct(model, params, x[:2])[1], line[-1], rtol=1e-5)
  assert vae.sample_posterior(model, params, key, x, 6).shape == (6, 4, 3)
  assert vae.sample_given(model, params, key, z).shape == (5, 6)


def test_posterior_means_in_batches_equal_one_encoding():
  model = _linear_vae()
  _, params = _ppca_and_vae_params(np.random.default_rng(13))
  x = np.random.default_rng(15).normal(size=(7, D))
  means = vae.posterior_means(model, params, x, batch_size=3)  # batches of 3, 3 and 1
  np.testing.assert_allclose(means, vae.encode(model, params, x)[0], rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="batch_size"):
    vae.posterior_means(model, params, x, batch_size=0)


def test_active_units_counts_units_with_varying_posterior_mean():
  model = _linear_vae()
  _, params = _ppca_and_vae_params(np.random.default_rng(13))
  kernel = params["params"]["encoder"]["mean"]["kernel"]
  params["params"]["encoder"]["mean"]["kernel"] = kernel.at[:, 1].set(0.0)  # unit 1 is dead
  x = np.random.default_rng(14).normal(size=(250, D))
  count, variances = vae.active_units(model, params, x, batch_size=100)
  expected = np.var(x @ np.asarray(kernel[:, 0]))
  np.testing.assert_allclose(variances[0], expected, rtol=1e-4)
  assert float(variances[1]) == pytest.approx(0.0, abs=1e-10)
  assert int(count) == 1


def test_bad_input_raises():
  model = vae.VAE(vae.MLPEncoder(2, (4,)), vae.MLPDecoder(5, (4,)), vae.BernoulliLikelihood())
  x = np.zeros((3, 5), np.float32)
  params = vae.init(jax.random.key(0), model, x)
  key = jax.random.key(1)
  with pytest.raises(ValueError, match="batch axis"):
    vae.elbo(model, params, key, x[0])
  with pytest.raises(ValueError, match="num_samples"):
    vae.elbo(model, params, key, x, num_samples=0)
  with pytest.raises(ValueError, match="num_samples"):
    vae.iwae_bound(model, params, key, x, 0)
  with pytest.raises(ValueError, match="num_samples"):
    vae.log_likelihood(model, params, key, x, num_samples=0)
  bad = x.copy()
  bad[1, 2] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    vae.elbo(model, params, key, bad)
  with pytest.raises(ValueError, match="shape"):
    vae.elbo(model, params, key, np.zeros((3, 7), np.float32))
  with pytest.raises(ValueError, match="shape"):
    vae.decode(model, params, jnp.zeros((3, 5)))
  with pytest.raises(ValueError, match="beta"):
    vae.elbo(model, params, key, x, beta=-1.0)
  with pytest.raises(ValueError, match="key"):
    vae.elbo(model, params, None, x)
  with pytest.raises(ValueError, match="activation"):
    vae.init(key, vae.VAE(vae.MLPEncoder(2, (4,), activation="nope"), vae.MLPDecoder(5),
                          vae.BernoulliLikelihood()), x)
  with pytest.raises(ValueError, match="num_steps"):
    vae.interpolate(model, params, x[0], x[1], num_steps=1)
  with pytest.raises(ValueError, match="prior must be None"):
    vae.VAE(vae.MLPEncoder(2), vae.MLPDecoder(5), vae.BernoulliLikelihood(), prior="gaussian")


# ----------------------------------------------------------------------------------------------
# priors

import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position,wrong-import-order

# Values of the VAE before its prior became pluggable (fixed N(0, I) in the code), computed with
# that implementation (commit ab14552) in float64 on the model and data of _old_model_and_data.
_OLD_VALUES = {
    "elbo_analytic": [-5.453409868760671, -4.550503620097715, -4.908128443017058,
                      -5.132722289270611, -5.280033919323727],
    "elbo_mc": [-6.1516972151375935, -4.653948264997913, -5.049476857370597, -4.691826132358274,
                -5.657449360226398],
    "kl_mc": [2.1299076488850273, 0.5561370947126727, -0.07799109267947224, 0.7059182844753218,
              1.3225892999378237],
    "iwae4": [-5.615466078387094, -4.07558687510187, -4.0748987237309455, -4.667474557906421,
              -5.781412396872615],
    "ll7": [-6.111042532624656, -3.3444052813938496, -4.155784118841854, -4.509552976136766,
            -4.5307621421529],
    "sample_z": [[-0.5611154993011458, -0.01813919645363687, -0.1312112744365167],
                 [1.347068108736592, 0.23080657094880566, 1.3592955016650714],
                 [0.8844409176359717, -0.04262702520010446, -0.8161369638044489]],
}


def _old_model_and_data(prior=None):
  model = vae.VAE(vae.MLPEncoder(3, (8,)), vae.MLPDecoder(6, (8,)), vae.BernoulliLikelihood(),
                  prior=prior)
  x = (np.random.default_rng(20).random((5, 6)) < 0.5).astype(np.float64)
  return model, x


def test_standard_normal_prior_gives_the_fixed_prior_numbers(x64):
  model, x = _old_model_and_data()
  assert model == _old_model_and_data(vae.StandardNormal())[0]  # None means StandardNormal()
  params = vae.cast_params(vae.init(jax.random.key(0), model, x), jnp.float64)
  assert set(params["params"]) == {"encoder", "decoder"}  # no prior (nor likelihood) parameters
  assert isinstance(model.prior, vae.StandardNormal) and vae.has_analytic_kl(model)
  key = jax.random.key(21)
  got = {
      "elbo_analytic": _jit(vae.elbo, model, num_samples=3)(params, key, x),
      "elbo_mc": _jit(vae.elbo, model, num_samples=3, analytic_kl=False)(params, key, x),
      "kl_mc": _jit(vae.elbo_terms, model, num_samples=2, beta=0.5, analytic_kl=False)(
          params, key, x).kl,
      "iwae4": _jit(vae.iwae_bound, model, num_samples=4)(params, key, x),
      "ll7": vae.log_likelihood(model, params, key, x, 7, chunk_size=3),
      "sample_z": vae.sample(model, params, key, 3)[1],
  }
  for name, value in got.items():  # the same numbers up to the last bits of float64
    np.testing.assert_allclose(value, _OLD_VALUES[name], rtol=1e-13, atol=1e-15, err_msg=name)


def _gaussian_prior_params(rng, latent_dim):
  return {"mean": jnp.asarray(rng.normal(size=latent_dim)),
          "log_scale": jnp.asarray(rng.normal(size=latent_dim) * 0.4)}


def test_gaussian_prior_densities_and_kl_match_scipy_and_distrax(x64):
  rng = np.random.default_rng(30)
  prior = vae.GaussianPrior()
  variables = {"params": _gaussian_prior_params(rng, 3)}
  m, s = np.asarray(variables["params"]["mean"]), np.exp(variables["params"]["log_scale"])
  z = rng.normal(size=(4, 2, 3))
  np.testing.assert_allclose(prior.apply(variables, jnp.asarray(z), method="log_prob"),
                             stats.norm.logpdf(z, m, s).sum(-1), rtol=1e-12)
  mean, log_var = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 0.5
  expected = distrax.MultivariateNormalDiag(mean, np.exp(0.5 * log_var)).kl_divergence(
      distrax.MultivariateNormalDiag(m, s))
  np.testing.assert_allclose(prior.apply(variables, mean, log_var, method="kl"), expected,
                             rtol=1e-10)
  np.testing.assert_allclose(vae.gaussian_kl(mean, log_var, m, 2 * np.log(s)), expected,
                             rtol=1e-10)
  draws = np.asarray(prior.apply(variables, jax.random.key(1), 20000, 3, method="sample"))
  assert draws.shape == (20000, 3)
  np.testing.assert_allclose(draws.mean(0), m, atol=4 * s.max() / np.sqrt(20000))
  np.testing.assert_allclose(draws.std(0), s, rtol=0.03)


class _GaussianPriorWithoutKL(nn.Module):
  """The learnable Gaussian prior minus its closed-form KL: the ELBO must use the MC KL."""

  def setup(self):
    self.inner = vae.GaussianPrior()

  def log_prob(self, z):
    return self.inner.log_prob(z)

  def sample(self, key, n, latent_dim):
    return self.inner.sample(key, n, latent_dim)


def test_gaussian_prior_analytic_kl_is_the_expectation_of_the_monte_carlo_kl(x64):
  rng = np.random.default_rng(31)
  model = vae.VAE(vae.MLPEncoder(3, (8,)), vae.MLPDecoder(6, (8,)), vae.BernoulliLikelihood(),
                  prior=vae.GaussianPrior())
  x = (rng.random((5, 6)) < 0.5).astype(np.float64)
  params = vae.cast_params(vae.init(jax.random.key(0), model, x), jnp.float64)
  assert jax.tree.map(jnp.shape, params["params"]["prior"]) == {"mean": (3,), "log_scale": (3,)}
  params["params"]["prior"] = _gaussian_prior_params(rng, 3)
  key = jax.random.key(6)
  terms = jax.jit(vae.elbo_terms, static_argnums=(0, 4, 5, 6))
  analytic = terms(model, params, key, x, 40000, 1.0, True)
  mc = terms(model, params, key, x, 40000, 1.0, False)
  np.testing.assert_allclose(mc.kl, analytic.kl, atol=0.03)
  np.testing.assert_array_equal(mc.reconstruction, analytic.reconstruction)  # same samples
  np.testing.assert_allclose(mc.elbo, analytic.elbo, atol=0.03)
  # against distrax, through the model's encoder
  mean, log_var = vae.encode(model, params, x)
  p = params["params"]["prior"]
  np.testing.assert_allclose(analytic.kl, distrax.MultivariateNormalDiag(
      mean, jnp.exp(0.5 * log_var)).kl_divergence(distrax.MultivariateNormalDiag(
          p["mean"], jnp.exp(p["log_scale"]))), rtol=1e-10)
  # a prior without kl(): the ELBO falls back to the MC KL, whatever analytic_kl says
  no_kl = vae.VAE(model.encoder, model.decoder, model.likelihood,
                  prior=_GaussianPriorWithoutKL())
  assert not vae.has_analytic_kl(no_kl)
  params_no_kl = {"params": {**params["params"], "prior": {"inner": p}}}
  a = terms(no_kl, params_no_kl, key, x, 3, 1.0, True)
  b = terms(model, params, key, x, 3, 1.0, False)
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, rtol=1e-12)


def test_linear_vae_with_gaussian_prior_bounds_below_the_exact_marginal(x64):
  # z ~ N(m, diag s^2), x | z ~ N(W z + b, psi I): x ~ N(W m + b, W diag(s^2) W^T + psi I) exactly
  rng = np.random.default_rng(32)
  model = vae.VAE(vae.LinearEncoder(latent_dim=L), vae.LinearDecoder(output_dim=D),
                  vae.GaussianLikelihood(scale=None, min_scale=0.0), prior=vae.GaussianPrior())
  params_ppca, params = _ppca_and_vae_params(rng, exact_posterior=False)
  params["params"]["prior"] = {"mean": jnp.asarray([0.7, -0.4]),
                               "log_scale": jnp.asarray([0.3, -0.2])}
  w = np.asarray(params_ppca.weight)
  s2 = np.exp(2 * np.asarray(params["params"]["prior"]["log_scale"]))
  mu = w @ np.asarray(params["params"]["prior"]["mean"]) + np.asarray(params_ppca.mean)
  cov = w @ np.diag(s2) @ w.T + float(params_ppca.noise_variance) * np.eye(D)
  z_true = rng.normal(size=(8, L)) * np.sqrt(s2) + np.asarray(params["params"]["prior"]["mean"])
  x = z_true @ w.T + np.asarray(params_ppca.mean) + rng.normal(size=(8, D)) * np.sqrt(
      float(params_ppca.noise_variance))
  exact = stats.multivariate_normal(mu, cov).logpdf(x)
  reps = 400
  keys = jax.random.split(jax.random.key(1), reps)

  def repeats(fn):
    values = np.asarray(jax.jit(jax.vmap(fn))(keys))
    return values.mean(0), values.std(0) / np.sqrt(reps)

  elbo, elbo_se = repeats(lambda k: vae.elbo(model, params, k, x, 1))
  iwae5, iwae5_se = repeats(lambda k: vae.iwae_bound(model, params, k, x, 5))
  iwae50, iwae50_se = repeats(lambda k: vae.iwae_bound(model, params, k, x, 50))
  assert np.all(exact - elbo > 0.05), exact - elbo
  assert np.all(elbo < iwae5 + 4 * np.hypot(elbo_se, iwae5_se))
  assert np.all(iwae5 < iwae50 + 4 * np.hypot(iwae5_se, iwae50_se))
  assert np.all(iwae50 < exact + 4 * iwae50_se)
  assert np.mean(iwae5 - elbo) > 0.05 and np.mean(iwae50 - iwae5) > 0.01
  ll = jax.jit(vae.log_likelihood, static_argnums=(0, 4, 5))(model, params, jax.random.key(2),
                                                              x, 20000, 2000)
  np.testing.assert_allclose(ll, exact, atol=0.05)


class _PseudoInputPrior(vae.Prior):
  """A small VampPrior: p(z) = (1/K) sum_k q(z | u_k) at learnable pseudo-inputs u_k."""
  num_pseudo: int = 3
  data_dim: int = 6

  @nn.compact
  def __call__(self):
    u = self.param("pseudo_inputs", nn.initializers.uniform(1.0), (self.num_pseudo, self.data_dim))
    return self.encode(u)                                       # the VAE's own encoder

  def log_prob(self, z):
    mean, log_var = self()                                      # (K, L) each
    log_q = distrax.MultivariateNormalDiag(mean, jnp.exp(0.5 * log_var)).log_prob(
        z[..., None, :])                                        # (..., K)
    return jax.nn.logsumexp(log_q, axis=-1) - jnp.log(self.num_pseudo)

  def sample(self, key, n, latent_dim):
    del latent_dim
    mean, log_var = self()
    k_idx, k_eps = jax.random.split(key)
    idx = jax.random.randint(k_idx, (n,), 0, self.num_pseudo)
    return mean[idx] + jnp.exp(0.5 * log_var[idx]) * jax.random.normal(k_eps, mean[idx].shape)


def test_a_prior_reaches_the_encoder_through_the_vae(x64):
  model = vae.VAE(vae.MLPEncoder(2, (8,)), vae.MLPDecoder(6, (8,)), vae.BernoulliLikelihood(),
                  prior=_PseudoInputPrior())
  x = (np.random.default_rng(33).random((7, 6)) < 0.5).astype(np.float64)
  params = vae.cast_params(vae.init(jax.random.key(0), model, x), jnp.float64)
  assert set(params["params"]) == {"encoder", "decoder", "prior"}
  assert not vae.has_analytic_kl(model)
  # log p(z) is the mixture of the VAE's own q(z | u_k), computed here independently
  u = np.asarray(params["params"]["prior"]["pseudo_inputs"])
  mean, log_var = (np.asarray(a) for a in vae.encode(model, params, u))
  z = np.random.default_rng(34).normal(size=(4, 2))
  expected = special.logsumexp(stats.norm.logpdf(z[:, None, :], mean, np.exp(0.5 * log_var))
                               .sum(-1), axis=1) - np.log(3)
  np.testing.assert_allclose(model.apply(params, jnp.asarray(z), method="prior_log_prob"),
                             expected, rtol=1e-10)
  # gradients of the ELBO reach the pseudo-inputs and, through the prior, the encoder
  key = jax.random.key(1)
  grads = jax.jit(jax.grad(lambda p: jnp.mean(vae.elbo(model, p, key, x, 2))))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.any(np.asarray(grads["params"]["prior"]["pseudo_inputs"]) != 0)
  # every estimate works with it
  iwae = _jit(vae.iwae_bound, model, num_samples=5)(params, key, x)
  ll = vae.log_likelihood(model, params, key, x, 20, chunk_size=7)
  xs, zs = vae.sample(model, params, key, 4)
  count, _ = vae.active_units(model, params, x)
  assert iwae.shape == ll.shape == (7,) and np.all(np.isfinite(ll))
  assert xs.shape == (4, 6) and zs.shape == (4, 2) and 0 <= int(count) <= 2
  with pytest.raises(ValueError, match="VAE's prior"):
    _PseudoInputPrior().init(jax.random.key(0))


def test_a_first_call_compiles_one_program_and_unhashable_models_still_run(x64):
  """Each public bound runs its checked core as one jitted program (not one per operation, ~2 s
  of compilations for a first MLP elbo); a model that cannot be hashed (here a prior with an
  array field) runs operation by operation, with the same numbers."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from tests import compile_count  # pylint: disable=import-outside-toplevel

  class ZeroMeanPrior(nn.Module):
    """N(mean, I) with ``mean`` a NumPy array field: equal to StandardNormal, not hashable."""
    mean: Any

    def log_prob(self, z):
      return -0.5 * jnp.sum(jnp.square(z - self.mean) + jnp.log(2 * jnp.pi), axis=-1)

    def sample(self, key, n, latent_dim):
      return self.mean + jax.random.normal(key, (n, latent_dim))

  d, latent = 13, 3  # shapes no other test uses, so nothing is compiled yet
  x = (np.random.default_rng(0).random((11, d)) < 0.5).astype(np.float64)
  hashable = vae.VAE(vae.MLPEncoder(latent, (9,)), vae.MLPDecoder(d, (9,)),
                     vae.BernoulliLikelihood())
  params = vae.init(jax.random.key(0), hashable, x[:2])
  key = jax.random.key(1)
  z = np.random.default_rng(1).normal(size=(11, latent))
  for first_call in (lambda: vae.iwae_bound(hashable, params, key, x, 4),
                     lambda: vae.encode(hashable, params, x),
                     lambda: vae.reconstruct(hashable, params, x),
                     lambda: vae.sample_given(hashable, params, key, z)):
    with compile_count.count_programs() as count:
      jax.block_until_ready(first_call())
    assert count[0] <= 3, count[0]
  unhashable = vae.VAE(hashable.encoder, hashable.decoder, hashable.likelihood,
                       prior=ZeroMeanPrior(np.zeros(latent)))
  with pytest.raises(TypeError):
    hash(unhashable)
  for fn in (lambda m: vae.elbo(m, params, key, x, 2, analytic_kl=False),
             lambda m: vae.iwae_bound(m, params, key, x, 4),
             lambda m: vae.log_likelihood(m, params, key, x, 7, chunk_size=3),
             lambda m: vae.sample(m, params, key, 5)[0],
             lambda m: vae.encode(m, params, x)[1],
             lambda m: vae.reconstruct(m, params, x),
             lambda m: vae.sample_given(m, params, key, z, use_mean=True)):
    np.testing.assert_allclose(fn(unhashable), fn(hashable), rtol=1e-12)
