"""Variational autoencoders, the IWAE bound and the deterministic autoencoder.

A model is a :class:`VAE` module (encoder, decoder, likelihood, prior); every computation is a pure
function of ``(model, params, [key,] x)`` returning one value per point, vmapped over the batch
and over latent samples, composing with a user's ``jit``/``vmap``/``grad`` (called eagerly, the
bounds, log-likelihood, encoding, reconstruction, sampling and interpolation check their arguments
and run as one jitted program, which a user's ``jit`` inlines).
Key order: the model and its params first, then the key, then the data or the sample count;
``init`` and ``create_train_state``, which make the params, take the key first (as ``fit`` and
flax's ``model.init`` do).

Public API:

Model and networks
  ``VAE(encoder, decoder, likelihood, prior=None)``; ``init(key, model, example_x) -> params``
  encoders ``MLPEncoder(latent_dim, hidden, activation)``, ``ConvEncoder(latent_dim)`` (28x28x1),
  ``LinearEncoder(latent_dim)``; decoders ``MLPDecoder(output_dim, hidden, activation)``,
  ``ConvDecoder()``, ``LinearDecoder(output_dim)``; any flax module with the same contract works.
  likelihoods ``BernoulliLikelihood()``, ``GaussianLikelihood(scale=None|float)`` (distrax).
  priors (:mod:`lvmjax.vae.priors`) ``StandardNormal()`` (the default, N(0, I)),
  ``GaussianPrior()`` (learnable N(m, diag s^2)), ``VampPrior(num_pseudo_inputs, data_shape)``
  (Tomczak & Welling, 2018; ``pseudo_inputs_from_data(model, params, key, x)`` starts its
  pseudo-inputs at training points), ``GaussianMixturePrior(num_components)`` (VaDE's,
  :mod:`lvmjax.vae.vade`), base class ``Prior``; ``has_analytic_kl(model)``.

VaDE (:mod:`lvmjax.vae.vade`, Jiang et al., 2017): clustering with a Gaussian-mixture prior
  ``vade.elbo``, ``vade.cluster_posterior``, ``vade.map_cluster``, ``vade.sample_given`` (per
  cluster), ``vade.init_prior_from_data`` (a diagonal ``gmm.fit`` on the encodings), the
  ``"vade"`` objective, ``vade.clustering_accuracy``.

Bounds and estimates (each ``(N,)``), for every prior
  ``elbo(model, params, key, x, num_samples=1, beta=1.0, analytic_kl=True)`` (the prior's
  closed-form KL where it has one, else the Monte Carlo KL),
  ``elbo_terms(...) -> ElboTerms(elbo, reconstruction, kl)``,
  ``iwae_bound(model, params, key, x, num_samples)``,
  ``log_likelihood(model, params, key, x, num_samples=5000, chunk_size=500)``,
  ``autoencoder_log_likelihood(model, params, x)``,
  ``gaussian_kl(mean, log_variance, prior_mean=None, prior_log_variance=None)``.

Annealed importance sampling (:mod:`lvmjax.vae.ais`, blackjax's HMC)
  ``log_likelihood_ais(model, params, key, x, num_steps=1000, num_chains=16, num_leapfrog=10,
  init="prior"|"encoder") -> (N,)``; ``bdmc(model, params, key, num_points, ...) -> (lower,
  upper, x)`` on data simulated from the model; the generic ``ais.AISTarget``, ``ais.ais``,
  ``ais.reverse_ais`` for any model.

Two stochastic layers (:mod:`lvmjax.vae.hierarchical`, Burda et al. 2016)
  ``hierarchical.burda_model(num_features)``, ``hierarchical.elbo``, ``iwae_bound``,
  ``log_likelihood``, ``active_units`` (per layer), ``evaluate``; AIS and BDMC work on it.

Inference and generation
  ``encode(model, params, x) -> (mean, log_variance)``, ``decode(model, params, z) -> distrax
  distribution``, ``reconstruct(model, params, x)``, ``sample_posterior(model, params, key, x, k)``,
  ``sample(model, params, key, n) -> (x, z)`` (z from the prior), ``sample_given(model, params,
  key, z)``, ``interpolate(model, params, x1, x2, num_steps)``,
  ``posterior_means(model, params, x) -> (N, L)`` encoder means in batches,
  ``active_units(model, params, x, threshold=0.01) -> (count, variances)``, from the additive
  ``posterior_mean_moments(model, params, x) -> LatentMoments`` by ``active_units_from_moments``.

Training and evaluation (:mod:`lvmjax.vae.steps`; ``vae.training``, ``vae.parallel`` re-export it)
  ``TrainState(step, params, opt_state)``, ``create_train_state(key, model, example_x, optimizer)``,
  ``make_train_step(model, optimizer, objective="elbo", num_samples=1, beta=1.0,
  compute_dtype=jnp.float32) -> train_step(state, x, key) -> (state, metrics)``; ``objective`` is a
  name of the registry ``OBJECTIVES`` (``"elbo"``, ``"iwae"``, ``"autoencoder"``; add your own) or
  a callable ``objective(model, params, key, x) -> (N,)`` to maximise. ``jit_train_step(...)``,
  ``make_multi_train_step(model, optimizer, unroll=1, **step_kwargs)
  -> multi_train_step(state, xs, key, indices=None) -> (state, stacked metrics)`` (S steps in one
  ``lax.scan``, equal to S one-step calls), ``jit_multi_train_step(...)``,
  ``make_parallel_train_step(model, optimizer, mesh)`` with ``replicate`` and ``shard_batch``
  (data-parallel), and the one evaluation ``evaluate(model, params, key, x, batch_size,
  num_samples_ll=5000, iwae_k=(), autoencoder=False) -> dict``.

Write your own prior: a flax module with ``log_prob(z) -> (...)`` for ``z (..., L)``,
``sample(key, n, latent_dim) -> (n, L)`` and, where it has one, the closed-form
``kl(mean, log_variance) -> (...)`` to the diagonal-Gaussian posterior (without it the ELBO uses
the Monte Carlo KL). Its parameters (``self.param`` in an ``@nn.compact`` method, e.g.
``__call__``, created by ``log_prob`` at :func:`init`) live in ``params["params"]["prior"]`` and
train with the networks; a prior built on the encoder (a VampPrior) subclasses :class:`Prior` and
calls ``self.encode(u)``, the owning VAE's encoder with its parameters::

  class LaplacePrior(vae.Prior):
    @nn.compact
    def __call__(self, latent_dim):
      return self.param("log_scale", nn.initializers.zeros, (latent_dim,))

    def log_prob(self, z):
      log_b = self(z.shape[-1])
      return jnp.sum(-jnp.abs(z) * jnp.exp(-log_b) - log_b - jnp.log(2.0), axis=-1)

    def sample(self, key, n, latent_dim):
      return jax.random.laplace(key, (n, latent_dim)) * jnp.exp(self(latent_dim))

  model = vae.VAE(encoder, decoder, likelihood, prior=LaplacePrior())

Examples:
  >>> import jax, jax.numpy as jnp, optax
  >>> from lvmjax import vae
  >>> model = vae.VAE(vae.MLPEncoder(latent_dim=2, hidden=(32,)),
  ...                 vae.MLPDecoder(output_dim=8, hidden=(32,)), vae.BernoulliLikelihood())
  >>> x = (jax.random.uniform(jax.random.key(0), (64, 8)) < 0.5).astype(jnp.float32)
  >>> opt = optax.adam(1e-3)
  >>> state = vae.create_train_state(jax.random.key(1), model, x, opt)
  >>> step = vae.jit_train_step(model, opt, objective="iwae", num_samples=5)
  >>> state, metrics = step(state, x, jax.random.key(2))
  >>> vae.log_likelihood(model, state.params, jax.random.key(3), x, num_samples=100).shape
  (64,)
"""
from lvmjax.vae.likelihoods import BernoulliLikelihood, GaussianLikelihood
from lvmjax.vae.model import (VAE, ElboTerms, LatentMoments, active_units,
                              active_units_from_moments, autoencoder_log_likelihood, cast_params,
                              decode, elbo, elbo_terms, encode, has_analytic_kl, init,
                              interpolate, iwae_bound, log_likelihood, posterior_mean_moments,
                              posterior_means, reconstruct, sample, sample_given,
                              sample_posterior)
from lvmjax.vae.networks import (ConvDecoder, ConvEncoder, LinearDecoder, LinearEncoder,
                                 MLPDecoder, MLPEncoder, get_activation)
from lvmjax.vae.priors import (GaussianPrior, Prior, StandardNormal, VampPrior, gaussian_kl,
                               pseudo_inputs_from_data)
from lvmjax.vae import vade  # pylint: disable=g-bad-import-order
from lvmjax.vae.vade import GaussianMixturePrior
from lvmjax.vae.steps import (OBJECTIVES, Objective, TrainState, create_train_state, evaluate,
                              jit_multi_train_step, jit_train_step, make_multi_train_step,
                              make_train_step)
from lvmjax.vae import ais, hierarchical  # pylint: disable=g-bad-import-order
from lvmjax.vae.ais import bdmc, log_likelihood_ais

__all__ = [
    "VAE", "ElboTerms", "init", "encode", "decode", "reconstruct", "sample", "sample_given",
    "sample_posterior", "interpolate", "active_units", "elbo", "elbo_terms", "iwae_bound",
    "log_likelihood", "autoencoder_log_likelihood", "gaussian_kl", "cast_params",
    "has_analytic_kl", "LatentMoments", "posterior_means", "posterior_mean_moments",
    "active_units_from_moments",
    "Prior", "StandardNormal", "GaussianPrior", "VampPrior", "GaussianMixturePrior",
    "pseudo_inputs_from_data",
    "BernoulliLikelihood", "GaussianLikelihood", "MLPEncoder", "MLPDecoder", "ConvEncoder",
    "ConvDecoder", "LinearEncoder", "LinearDecoder", "get_activation", "TrainState",
    "create_train_state", "make_train_step", "jit_train_step", "make_multi_train_step",
    "jit_multi_train_step", "evaluate", "OBJECTIVES", "Objective",
    "log_likelihood_ais", "bdmc",
]
