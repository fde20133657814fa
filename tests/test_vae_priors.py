"""The VampPrior and the evaluation for every prior: log p(x), the IWAE bound and active units
with the VampPrior and VaDE's Gaussian-mixture prior, against numpy references (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from configs import vae_digits
from configs import vae_vamp_binarized_mnist
from lvmjax import gmm
from lvmjax import vae
from lvmjax.vae import train as vae_train
from lvmjax.vae import vade
from tests.numpy_vae import log_normal as _log_normal
from tests.numpy_vae import mlp as _mlp

D, H, K = 5, 4, 3


def _vamp_model(latent=2):
  return vae.VAE(vae.MLPEncoder(latent, (H,)), vae.MLPDecoder(D, (H,)), vae.BernoulliLikelihood(),
                 prior=vae.VampPrior(num_pseudo_inputs=K, data_shape=(D,)))


def _params(model, seed, x):
  rng = np.random.default_rng(seed)
  params = vae.cast_params(vae.init(jax.random.key(seed), model, x), jnp.float64)
  return jax.tree.map(lambda a: a + 0.5 * rng.normal(size=a.shape), params), rng


def _vamp_components(params):
  """numpy: the encoder at the clipped pseudo-inputs, (K, L) means and variances."""
  u = np.clip(np.asarray(params["params"]["prior"]["pseudo_inputs"]), 0.0, 1.0)
  mean, log_var = _mlp(params["params"]["encoder"], u, ["mean", "log_variance"])
  return mean, np.exp(log_var)


def test_vamp_prior_log_prob_is_the_mean_of_the_encoder_gaussians(x64):
  model = _vamp_model()
  x = np.zeros((1, D))
  params, rng = _params(model, 0, x)
  init = vae.init(jax.random.key(0), model, x)["params"]["prior"]["pseudo_inputs"]
  assert init.shape == (K, D) and abs(float(jnp.mean(init)) - 0.05) < 0.02
  z = rng.normal(size=(6, 4, 2)) * 2
  got = jax.jit(lambda p, z: model.apply(p, z, method="prior_log_prob"))(params, jnp.asarray(z))
  mean, var = _vamp_components(params)
  expected = special.logsumexp(_log_normal(z[..., None, :], mean, var), axis=-1) - np.log(K)
  np.testing.assert_allclose(got, expected, rtol=1e-10)
  # the pseudo-inputs outside [0, 1] are clipped (the paper's hard-tanh) where they are used
  assert np.any(np.asarray(params["params"]["prior"]["pseudo_inputs"]) < 0)


@pytest.mark.slow
def test_vamp_prior_samples_come_from_the_encoder_gaussians(x64):
  model = _vamp_model()
  params, _ = _params(model, 1, np.zeros((1, D)))
  _, z = jax.jit(lambda p: vae.sample(model, p, jax.random.key(2), 20000))(params)
  mean, var = _vamp_components(params)
  np.testing.assert_allclose(np.mean(z, 0), mean.mean(0), atol=0.05)
  np.testing.assert_allclose(np.mean(np.square(z), 0), (var + mean ** 2).mean(0), rtol=0.05)


@pytest.mark.slow
def test_gradients_reach_the_pseudo_inputs_and_the_encoder_through_the_prior(x64):
  model = _vamp_model()
  x = (np.random.default_rng(3).random((8, D)) < 0.5).astype(np.float64)
  params, _ = _params(model, 3, x)
  params["params"]["prior"]["pseudo_inputs"] = jnp.full((K, D), 0.4)  # inside [0, 1]
  z = jnp.ones((3, 2))

  @jax.jit
  def both(p):
    return (jax.grad(lambda q: jnp.sum(vae.elbo(model, q, jax.random.key(0), x)))(p),
            # the prior's log-density alone moves the encoder too (q(z | u_k) is the encoder's)
            jax.grad(lambda q: jnp.sum(model.apply(q, z, method="prior_log_prob")))(p))

  grads, g = both(params)
  assert np.all(np.abs(np.asarray(grads["params"]["prior"]["pseudo_inputs"])).sum(-1) > 0)
  assert float(jnp.abs(g["params"]["encoder"]["mean"]["kernel"]).sum()) > 0


def _mixture_model():
  model = vae.VAE(vae.MLPEncoder(1, (H,)), vae.MLPDecoder(D, (H,)), vae.BernoulliLikelihood(),
                  prior=vade.GaussianMixturePrior(num_components=K))
  return model


@pytest.mark.parametrize("prior", ["vamp", pytest.param("mixture", marks=pytest.mark.slow)])
def test_log_likelihood_iwae_and_active_units_for_every_prior(prior, x64):
  """log p(x) by quadrature over a 1-D latent, the independent reference."""
  model = _vamp_model(latent=1) if prior == "vamp" else _mixture_model()
  x = (np.random.default_rng(4).random((3, D)) < 0.5).astype(np.float64)
  params, _ = _params(model, 4, x)
  if prior == "vamp":
    mean, var = _vamp_components(params)
    weights = np.full(K, 1.0 / K)
  else:
    params = vade.set_mixture_params(params, gmm.GMMParams(
        jnp.asarray([0.2, 0.5, 0.3]), jnp.asarray([[-2.0], [0.5], [2.5]]),
        jnp.asarray([[0.3], [0.6], [0.2]]), "diag"))
    weights, mean, var = (np.asarray(a) for a in (jax.tree.leaves(vade.mixture_params(params))))
  grid = np.linspace(-15, 15, 60001)[:, None]
  log_prior = special.logsumexp(_log_normal(grid[:, None, :], mean, var) + np.log(weights), -1)
  (logits,) = _mlp(params["params"]["decoder"], grid, ["output"])
  log_px_z = x @ logits.T - np.logaddexp(0.0, logits).sum(-1)          # (N, grid)
  exact = special.logsumexp(log_px_z + log_prior, axis=-1) + np.log(grid[1, 0] - grid[0, 0])
  key = jax.random.key(1)

  @jax.jit
  def bounds(p):
    return (vae.log_likelihood(model, p, jax.random.key(0), x, num_samples=20000),
            vae.iwae_bound(model, p, key, x, 1), vae.elbo(model, p, key, x, analytic_kl=False),
            vae.elbo(model, p, key, x, num_samples=4000), vae.iwae_bound(model, p, key, x, 200),
            vade.elbo(model, p, key, x, num_samples=4000) if prior == "mixture" else None)

  ll, iwae1, elbo1, elbo, iwae, vade_elbo = bounds(params)
  np.testing.assert_allclose(ll, exact, atol=0.03)
  np.testing.assert_allclose(iwae1, elbo1, rtol=1e-12)                  # the same draws
  assert np.all(np.asarray(elbo) <= np.asarray(iwae) + 0.02)
  assert np.all(np.asarray(iwae) <= exact + 0.02)
  if vade_elbo is not None:  # VaDE's own bound is below log p(x) too
    assert np.all(np.asarray(vade_elbo) <= exact + 0.02)
  count, variances = vae.active_units(model, params, x)
  mean_x = _mlp(params["params"]["encoder"], x, ["mean"])[0]
  np.testing.assert_allclose(variances, mean_x.var(0), rtol=1e-10)
  assert int(count) == int(np.sum(mean_x.var(0) > 0.01))


@pytest.mark.slow
def test_evaluate_works_unchanged_with_the_vamp_prior(x64):
  model = _vamp_model()
  x = (np.random.default_rng(5).random((6, D)) < 0.5).astype(np.float64)
  params, _ = _params(model, 5, x)
  results = vae.evaluate(model, params, jax.random.key(0), x, batch_size=3, num_samples_ll=50,
                         iwae_k=(5,))
  ll = vae.log_likelihood(model, params, jax.random.key(0), x[:3], 50)
  assert np.isfinite(results["log_likelihood"]) and results["num_points"] == 6
  assert results["elbo"] <= results["iwae_5"] + 0.5 and np.isfinite(float(ll.mean()))


def test_pseudo_inputs_from_data_are_distinct_training_points():
  model = _vamp_model()
  x = np.random.default_rng(0).random((12, D))
  params = vae.init(jax.random.key(0), model, x[:1])
  got = vae.pseudo_inputs_from_data(model, params, jax.random.key(1), x)
  u = np.asarray(got["params"]["prior"]["pseudo_inputs"])
  rows = [int(np.flatnonzero(np.all(np.isclose(x, r), axis=1))[0]) for r in u.astype(np.float64)]
  assert len(set(rows)) == K and u.dtype == np.float32
  np.testing.assert_array_equal(u, x[rows].astype(np.float32))
  again = vae.pseudo_inputs_from_data(model, params, jax.random.key(1), x)
  np.testing.assert_array_equal(again["params"]["prior"]["pseudo_inputs"], u)
  other = vae.pseudo_inputs_from_data(model, params, jax.random.key(2), jnp.asarray(x))
  assert not np.array_equal(other["params"]["prior"]["pseudo_inputs"], u)
  for name in ("encoder", "decoder"):  # nothing else changes
    jax.tree.map(np.testing.assert_array_equal, got["params"][name], params["params"][name])
  # the launcher's validated option, and the errors at the door
  config = vae_vamp_binarized_mnist.get_config()
  assert config.pseudo_input_init == "random"
  config.pseudo_input_init = "kmeans"
  with pytest.raises(ValueError, match="pseudo_input_init"):
    vae_train.validate_config(config)
  with pytest.raises(ValueError, match="VampPrior"):
    vae.pseudo_inputs_from_data(vae.VAE(vae.MLPEncoder(2, (H,)), vae.MLPDecoder(D, (H,)),
                                        vae.BernoulliLikelihood()), params, jax.random.key(1), x)
  with pytest.raises(ValueError, match="data_shape"):
    vae.pseudo_inputs_from_data(model, params, jax.random.key(1), x[:, :3])
  with pytest.raises(ValueError, match="fewer than the 3"):
    vae.pseudo_inputs_from_data(model, params, jax.random.key(1), x[:2])


def test_vamp_config_is_burdas_architecture_with_the_vamp_prior():
  config = vae_vamp_binarized_mnist.get_config()
  model = vae_train.build_model(config, 784)
  assert isinstance(model.prior, vae.VampPrior)
  assert model.prior.num_pseudo_inputs == 500 and tuple(model.prior.data_shape) == (784,)
  assert tuple(model.encoder.hidden) == (200, 200) and model.encoder.latent_dim == 50
  assert config.dataset == "binarized_mnist" and config.num_importance_samples == 5000
  for name, cls in (("gaussian", vae.GaussianPrior), ("mixture", vade.GaussianMixturePrior)):
    config.prior = name
    config.num_components = 4
    assert isinstance(vae_train.build_model(config, 784).prior, cls)
  config.prior = "laplace"
  with pytest.raises(ValueError, match="prior"):
    vae_train.validate_config(config)
  config.prior, config.num_pseudo_inputs = "vamp", 0
  with pytest.raises(ValueError, match="num_pseudo_inputs"):
    vae_train.validate_config(config)


@pytest.mark.slow
def test_launcher_trains_a_vamp_prior_vae_end_to_end(tmp_path):
  config = vae_digits.get_config("smoke")
  config.prior, config.num_pseudo_inputs = "vamp", 10
  run = vae_train.train_and_evaluate(config, tmp_path, quiet=True)
  assert isinstance(run.model.prior, vae.VampPrior)
  assert np.isfinite(run.results["log_likelihood"])
  assert run.state.params["params"]["prior"]["pseudo_inputs"].shape == (10, 64)


def test_launcher_starts_the_pseudo_inputs_at_training_points(tmp_path):
  config = vae_digits.get_config("smoke")
  config.prior, config.num_pseudo_inputs, config.pseudo_input_init = "vamp", 10, "data"
  config.num_steps, config.learning_rate, config.num_importance_samples = 2, 1e-9, 0
  config.figures = False
  run = vae_train.train_and_evaluate(config, tmp_path, quiet=True)
  u = np.asarray(run.state.params["params"]["prior"]["pseudo_inputs"], np.float64)
  train_x = np.asarray(vae_train.load_data(config).train.x, np.float64)
  nearest = np.min(np.abs(u[:, None, :] - train_x[None]).max(-1), axis=1)
  assert np.all(nearest < 1e-5), nearest  # two steps at lr 1e-9 leave them where they started
