"""VaDE (lvmjax.vae.vade): its ELBO against a brute-force Monte Carlo evaluation in numpy, the
one-component case against the learnable-Gaussian-prior VAE, the four tasks, the launcher."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special, stats

from configs import vade_mnist
from lvmjax import experiment
from lvmjax import gmm
from lvmjax import vae
from lvmjax.vae import train as vae_train
from lvmjax.vae import vade
from tests import compile_count
from tests.numpy_vae import log_normal as _log_normal
from tests.numpy_vae import mlp as _mlp

L, D, K, H = 2, 6, 3, 5


def _model(k=K, latent=L, prior=None):
  return vae.VAE(vae.MLPEncoder(latent, (H,)), vae.MLPDecoder(D, (H,)), vae.BernoulliLikelihood(),
                 prior=prior or vade.GaussianMixturePrior(num_components=k))


def _mixture(rng, k=K, latent=L):
  w = rng.random(k) + 0.2
  return gmm.GMMParams(jnp.asarray(w / w.sum()), jnp.asarray(rng.normal(size=(k, latent)) * 1.5),
                       jnp.asarray(rng.random((k, latent)) + 0.3), "diag")


def _setup(seed=0, k=K, latent=L, dtype=np.float64):
  rng = np.random.default_rng(seed)
  model = _model(k, latent)
  x = (rng.random((4, D)) < 0.5).astype(dtype)
  params = vae.cast_params(vae.init(jax.random.key(seed), model, x), dtype)
  params = jax.tree.map(lambda a: a + 0.3 * rng.normal(size=a.shape), params)  # not at init
  return model, vade.set_mixture_params(params, _mixture(rng, k, latent)), x, rng


def test_elbo_equals_a_brute_force_monte_carlo_evaluation(x64):
  model, params, x, rng = _setup(0)
  key = jax.random.key(3)
  terms, gamma_lib = jax.jit(lambda p: (vade.elbo_terms(model, p, key, x, num_samples=2),
                                        vade.cluster_posterior(model, p, key, x, 2)))(params)
  mix = vade.mixture_params(params)
  w, mu, var = (np.asarray(a, np.float64) for a in (mix.weights, mix.means, mix.covariances))
  mean, log_var = _mlp(params["params"]["encoder"], x, ["mean", "log_variance"])
  sd = np.exp(0.5 * log_var)
  for n, k_n in enumerate(jax.random.split(key, len(x))):
    eps = np.asarray(jax.random.normal(k_n, (2, L), jnp.float64))  # the library's draws for point n
    values, gammas, recs = [], [], []
    for s in range(2):
      z = mean[n] + sd[n] * eps[s]
      (logits,) = _mlp(params["params"]["decoder"], z, ["output"])
      rec = np.sum(x[n] * logits - np.logaddexp(0.0, logits))          # log Bernoulli(x | z)
      log_joint = np.log(w) + _log_normal(z, mu, var)                    # (K,)
      gamma = np.exp(log_joint - special.logsumexp(log_joint))          # p(c | z_s)
      # E_{z' ~ q(z|x)} [sum_c gamma_c (log p(c) + log p(z'|c) - log gamma_c) - log q(z'|x)]
      zz = mean[n] + sd[n] * rng.normal(size=(200_000, L))
      inner = (np.log(w) + _log_normal(zz[:, None, :], mu, var) - np.log(gamma)) @ gamma
      f = inner - _log_normal(zz, mean[n], sd[n] ** 2)
      values.append(rec + f.mean())
      recs.append(rec)
      gammas.append(gamma)
      se = f.std() / np.sqrt(len(f))
    np.testing.assert_allclose(terms.reconstruction[n], np.mean(recs), rtol=1e-10)
    np.testing.assert_allclose(gamma_lib[n], np.mean(gammas, 0), rtol=1e-10)
    assert abs(float(terms.elbo[n]) - np.mean(values)) < 5 * se + 1e-9, (terms.elbo[n], values, se)
  np.testing.assert_allclose(terms.elbo, terms.reconstruction - terms.kl, rtol=1e-12)


def test_one_component_is_the_vae_with_a_learnable_gaussian_prior(x64):
  model, params, x, _ = _setup(2, k=1)
  mix = vade.mixture_params(params)
  g_model = _model(prior=vae.GaussianPrior())
  g_params = {"params": {**params["params"], "prior": {
      "mean": mix.means[0], "log_scale": 0.5 * jnp.log(mix.covariances[0])}}}
  key = jax.random.key(4)

  @jax.jit
  def both(p, gp):
    a = vade.elbo_terms(model, p, key, x, num_samples=3)
    b = vae.elbo_terms(g_model, gp, key, x, num_samples=3)  # closed-form KL
    lls = [vae.log_likelihood(m, q, key, x, 50) for m, q in ((model, p), (g_model, gp))]
    # the same gradients for the networks
    ga = jax.grad(lambda q: jnp.sum(vade.elbo(model, q, key, x)))(p)
    gb = jax.grad(lambda q: jnp.sum(vae.elbo(g_model, q, key, x)))(gp)
    return a, b, lls, ga, gb

  a, b, lls, ga, gb = both(params, g_params)
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, rtol=1e-10)
  np.testing.assert_allclose(lls[0], lls[1], rtol=1e-10)
  for name in ("encoder", "decoder"):
    for u, v in zip(jax.tree.leaves(ga["params"][name]), jax.tree.leaves(gb["params"][name])):
      np.testing.assert_allclose(u, v, rtol=1e-8, atol=1e-12)


def test_cluster_posterior_map_and_generation_per_cluster(x64):
  model, params, x, rng = _setup(3)
  post, map_c = jax.jit(lambda p: (vade.cluster_posterior(model, p, jax.random.key(0), x, 5),
                                   vade.map_cluster(model, p, jax.random.key(0), x, 5)))(params)
  assert post.shape == (len(x), K)
  np.testing.assert_allclose(post.sum(-1), 1.0, rtol=1e-12)
  assert np.all(post >= 0)
  np.testing.assert_array_equal(map_c, np.argmax(post, -1))
  # generation: z ~ p(z | c) from the chosen component, x ~ p(x | z)
  far = gmm.GMMParams(jnp.full((K,), 1.0 / K), jnp.asarray([[-20.0, 0], [0, 0], [20, 5]]),
                      jnp.full((K, L), 1e-4), "diag")
  params = vade.set_mixture_params(params, far)
  clusters = np.array([2, 0, 1, 1, 2])
  xs, z = vade.sample_given(model, params, jax.random.key(5), clusters, use_mean=True)
  assert xs.shape == (5, D)
  np.testing.assert_allclose(z, np.asarray(far.means)[clusters], atol=0.1)
  np.testing.assert_allclose(xs, vae.decode(model, params, z).mean(), rtol=1e-12)
  xb, _ = vade.sample_given(model, params, jax.random.key(5), clusters)
  assert set(np.unique(np.asarray(xb))) <= {0.0, 1.0}
  # the prior's own draws come from the mixture
  _, zs = jax.jit(lambda p: vae.sample(model, p, jax.random.key(6), 3000))(params)
  counts = np.bincount(np.argmin(np.abs(np.asarray(zs)[:, :1] - np.array([[-20.0, 0, 20]])), 1),
                       minlength=K)
  np.testing.assert_allclose(counts / 3000, 1 / K, atol=0.04)


def test_prior_log_prob_is_gmm_log_marginal_against_scipy(x64):
  model, params, _, rng = _setup(4)
  mix = vade.mixture_params(params)
  z = rng.normal(size=(7, 3, L)) * 2
  got = model.apply(params, jnp.asarray(z), method=lambda m, z: m.prior.log_prob(z))
  comps = np.stack([stats.multivariate_normal(np.asarray(mix.means[c]),
                                              np.diag(np.asarray(mix.covariances[c]))).logpdf(z)
                    for c in range(K)], -1)
  np.testing.assert_allclose(got, special.logsumexp(comps + np.log(np.asarray(mix.weights)), -1),
                             rtol=1e-10)


@pytest.mark.slow
def test_init_prior_from_data_is_gmm_fit_on_the_codes():
  model, params, x, rng = _setup(5, dtype=np.float32)
  x = (rng.random((120, D)) < 0.5).astype(np.float32)
  new, fit = vade.init_prior_from_data(model, params, jax.random.key(0), x, batch_size=50,
                                       init="random_from_data")
  ref = gmm.fit(jax.random.key(0), vae.encode(model, params, x)[0], K, covariance_type="diag",
                init="random_from_data")
  assert fit.converged
  for a, b in zip(jax.tree.leaves(vade.mixture_params(new)), jax.tree.leaves(ref.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for name in ("encoder", "decoder"):  # the networks are untouched
    for a, b in zip(jax.tree.leaves(new["params"][name]), jax.tree.leaves(params["params"][name])):
      np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_vade_objective_trains_prior_and_networks():
  model = _model()
  rng = np.random.default_rng(6)
  x = (rng.random((64, D)) < 0.3).astype(np.float32)
  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  step = vae.jit_train_step(model, opt, objective="vade")
  first = None
  for _ in range(40):
    new, metrics = step(state, x, jax.random.key(1))
    first = float(metrics["loss"]) if first is None else first
    state = new
  assert float(metrics["loss"]) < first - 0.3
  assert set(metrics) >= {"loss", "objective", "reconstruction", "kl", "grad_norm"}
  assert not np.allclose(state.params["params"]["prior"]["means"],
                         vae.init(jax.random.key(0), model, x)["params"]["prior"]["means"])


def test_fixed_weights_get_no_gradient_and_stay_equal_from_the_initialisation():
  fixed = _model(prior=vade.GaussianMixturePrior(num_components=K, learn_weights=False))
  rng = np.random.default_rng(7)
  x = (rng.random((64, D)) < 0.3).astype(np.float32)
  params, fit = vade.init_prior_from_data(fixed, vae.init(jax.random.key(0), fixed, x),
                                          jax.random.key(1), x, init="random_from_data")
  np.testing.assert_allclose(vade.mixture_params(params).weights, np.full(K, 1.0 / K), rtol=1e-6)
  learned, _ = vade.init_prior_from_data(_model(), params, jax.random.key(1), x,
                                         init="random_from_data")  # same fit, weights kept
  np.testing.assert_allclose(vade.mixture_params(learned).weights, fit.params.weights, rtol=1e-6)
  assert np.ptp(np.asarray(fit.params.weights)) > 0.01  # so the two checks above differ

  def loss(p, m):
    return -jnp.mean(vade.elbo(m, p, jax.random.key(2), x))
  grad_fixed = jax.grad(loss)(params, fixed)["params"]["prior"]
  grad_learned = jax.grad(loss)(params, _model())["params"]["prior"]
  np.testing.assert_array_equal(grad_fixed["logits"], 0.0)
  assert np.abs(np.asarray(grad_learned["logits"])).max() > 1e-4
  np.testing.assert_allclose(grad_fixed["means"], grad_learned["means"], rtol=1e-5, atol=1e-7)

  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), fixed, x, opt)
  state = vae.TrainState(state.step, params, opt.init(params))
  step = vae.jit_train_step(fixed, opt, objective="vade")
  means_before = np.array(params["params"]["prior"]["means"])  # the step donates the state
  for i in range(5):
    state, _ = step(state, x, jax.random.key(i))
  np.testing.assert_allclose(vade.mixture_params(state.params).weights, np.full(K, 1.0 / K),
                             rtol=1e-6)
  assert not np.allclose(state.params["params"]["prior"]["means"], means_before)


def test_clustering_accuracy_is_the_best_one_to_one_matching():
  y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
  c = np.array([5, 5, 1, 1, 1, 7, 7, 7, 5])
  # brute force over the 3! maps of the clusters {1, 5, 7} to the labels
  import itertools  # pylint: disable=g-import-not-at-top
  best = max(np.mean(np.array([dict(zip((1, 5, 7), perm))[ci] for ci in c]) == y)
             for perm in itertools.permutations(range(3)))
  assert vade.clustering_accuracy(y, c) == pytest.approx(best)
  assert vade.clustering_accuracy(y, y + 3) == 1.0
  assert vade.clustering_accuracy(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 2])) == 0.5


def test_bad_input_raises_value_error(x64):  # x64: _setup builds float64 parameters
  model, params, x, _ = _setup(7)
  plain = vae.VAE(vae.MLPEncoder(L, (H,)), vae.MLPDecoder(D, (H,)), vae.BernoulliLikelihood())
  plain_params = vae.init(jax.random.key(0), plain, x)
  with pytest.raises(ValueError, match="Gaussian-mixture prior"):
    vade.elbo(plain, plain_params, jax.random.key(0), x)
  with pytest.raises(ValueError, match="Gaussian-mixture prior"):
    vade.mixture_params(plain_params)
  with pytest.raises(ValueError, match=r"jax.random.key\(0\)"):
    vade.elbo(model, params, 0, x)
  with pytest.raises(ValueError, match="batch axis"):
    vade.cluster_posterior(model, params, jax.random.key(0), x[0])
  with pytest.raises(ValueError, match="num_samples"):
    vade.elbo(model, params, jax.random.key(0), x, num_samples=0)
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    vade.sample_given(model, params, jax.random.key(0), np.array([0, 3]))
  with pytest.raises(ValueError, match="1-D integer"):
    vade.sample_given(model, params, jax.random.key(0), np.array([0.5]))
  with pytest.raises(ValueError, match="diag"):
    vade.set_mixture_params(params, gmm.GMMParams(jnp.ones(3) / 3, jnp.zeros((3, L)),
                                                  jnp.ones(3), "spherical"))
  with pytest.raises(ValueError, match="same non-zero length"):
    vade.clustering_accuracy(np.zeros(3, int), np.zeros(4, int))
  config = vade_mnist.get_config("smoke")
  config.num_components = 0
  with pytest.raises(ValueError, match="num_components"):
    vae_train.train_and_evaluate(config, "/tmp/unused_vade_workdir_never_created")
  config = vade_mnist.get_config("smoke")
  config.gmm_max_iter = -1
  with pytest.raises(ValueError, match="gmm_max_iter"):
    vae_train.train_and_evaluate(config, "/tmp/unused_vade_workdir_never_created")
  with pytest.raises(ValueError, match="variant"):
    vade_mnist.get_config("smoke,nonsense")


# ----------------------------------------------------------------------------------------------
# the launcher: one smoke run (module fixture), then a resume from its middle checkpoint

_SMOKE = dict(num_steps=20, checkpoint_every=10, num_importance_samples=0)


def _smoke_config(**overrides):
  config = vade_mnist.get_config("smoke")
  for k, v in {**_SMOKE, **overrides}.items():
    config[k] = v
  return config


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("vade_smoke")
  run = vae_train.train_and_evaluate(_smoke_config(), workdir, quiet=True)
  return workdir, run


def test_smoke_config_runs_end_to_end(smoke_run):
  workdir, run = smoke_run
  results = json.loads((workdir / "results.json").read_text())
  keys = [k for k in results if "accuracy" in k]
  assert keys == ["clustering_accuracy"]
  assert 0.1 <= results["clustering_accuracy"] <= 1.0  # 10 digit classes: chance is >= 0.1
  assert results["step"] == 20 and np.isfinite(results["vade_elbo"])
  assert sum(results["cluster_sizes"]) == results["num_points"] == 400
  assert results["pretrain"]["pretrain_steps"] > 0 and results["pretrain"]["gmm_converged"]
  assert 0.1 <= results["pretrain"]["init_clustering_accuracy"] <= 1.0
  assert (workdir / "vade_cluster_samples.png").stat().st_size > 1000
  assert isinstance(run.model.prior, vade.GaussianMixturePrior)


def test_evaluate_clustering_again_compiles_nothing(smoke_run):
  """The clustering figures run one program per model and batch shape: a second call, with new
  parameters and key, compiles nothing (it compiled its batch again before)."""
  _, run = smoke_run
  rng = np.random.default_rng(0)
  x = (rng.random((30,) + run.data_shape) < 0.3).astype(np.float32)
  labels = rng.integers(0, 3, 30)
  other = jax.tree.map(lambda a: a * 1.01, run.state.params)
  for p, k in ((run.state.params, 0), (other, 1)):
    with compile_count.count_programs() as count:
      out = vae_train.evaluate_clustering(run.model, p, jax.random.key(k), x, labels, 16)
    assert sum(out["cluster_sizes"]) == 30 and 0.0 < out["clustering_accuracy"] <= 1.0
  assert count[0] == 0


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(smoke_run, tmp_path):
  workdir, run = smoke_run
  resumed_dir = tmp_path / "resumed"
  shutil.copytree(workdir, resumed_dir)
  shutil.rmtree(resumed_dir / "checkpoints" / "20")  # as if killed between steps 10 and 20
  (resumed_dir / "pretrain.json").unlink()           # a second pretraining would write it again
  again = vae_train.train_and_evaluate(_smoke_config(figures=False), resumed_dir, quiet=True)
  assert not (resumed_dir / "pretrain.json").exists()
  for a, b in zip(jax.tree.leaves(again.state.params), jax.tree.leaves(run.state.params)):
    np.testing.assert_array_equal(a, b)


def test_a_run_from_before_learn_mixture_weights_resumes(tmp_path):
  old = _smoke_config(num_steps=10, figures=False)
  del old["learn_mixture_weights"]  # a config file from before the option
  vae_train.train_and_evaluate(old, tmp_path, quiet=True)
  (tmp_path / "pretrain.json").unlink()
  run = vae_train.train_and_evaluate(_smoke_config(figures=False), tmp_path, quiet=True)
  assert int(run.state.step) == 20 and not (tmp_path / "pretrain.json").exists()  # resumed
  with pytest.raises(ValueError, match="learn_mixture_weights: checkpoint has True"):
    vae_train.train_and_evaluate(_smoke_config(learn_mixture_weights=False, num_steps=30),
                                 tmp_path, quiet=True)


@pytest.mark.slow
def test_non_finite_pretraining_loss_raises(tmp_path):
  config = _smoke_config(pretrain_learning_rate=1e30, num_train_points=100, log_every=2)
  with pytest.raises(experiment.NonFiniteLossError, match="pretraining"):
    vae_train.train_and_evaluate(config, tmp_path, quiet=True)


def test_learn_mixture_weights_config():
  config = _smoke_config()
  del config["learn_mixture_weights"]  # a typed ConfigDict refuses a non-bool; a hand-built one
  config.learn_mixture_weights = 1
  with pytest.raises(ValueError, match="learn_mixture_weights must be True"):
    vae_train.validate_config(config)
  config = _smoke_config()
  del config["fit_all"]
  config.fit_all = "false"  # a string would be truthy: refused, not read as True
  with pytest.raises(ValueError, match="fit_all must be True or False, got 'false'"):
    vae_train.validate_config(config)
  assert vade_mnist.get_config().learn_mixture_weights  # the paper learns them
  model = vae_train.build_model(_smoke_config(learn_mixture_weights=False), 64)
  assert not model.prior.learn_weights


@pytest.mark.slow
def test_prior_from_the_initialisation_alone(tmp_path):
  # gmm_max_iter=0: the prior is the k-means partition's mixture, with no EM iteration on the codes
  vae_train.train_and_evaluate(_smoke_config(gmm_max_iter=0), tmp_path, quiet=True)
  pretrain = json.loads((tmp_path / "pretrain.json").read_text())
  assert pretrain["gmm_log_likelihood"] is None and not pretrain["gmm_converged"]
  assert 0.1 <= pretrain["init_clustering_accuracy"] <= 1.0
  assert np.isfinite(json.loads((tmp_path / "results.json").read_text())["vade_elbo"])
