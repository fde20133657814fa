r"""VaDE, Variational Deep Embedding (Jiang et al., 2017): a VAE whose prior is a Gaussian mixture.

The generative model joins the library's two halves, a discrete cluster c above a continuous z:

.. math::
   p(c) = \pi_c, \qquad p(z \mid c) = \mathcal{N}(z; \mu_c, \operatorname{diag} \sigma_c^2),
   \qquad p(x \mid z) = \text{the decoder's likelihood},

with the mixture :math:`(\pi, \mu, \sigma^2)` a learnable prior, :class:`GaussianMixturePrior`,
trained with the networks. Its densities are :mod:`lvmjax.gmm`'s (``gmm.log_joint`` with
``covariance_type="diag"``) on the parameters ``gmm.unconstrained.from_unconstrained`` makes of
unconstrained arrays (softmax logits, softplus standard deviations), so any gradient step keeps a
valid mixture.

The objective is the paper's ELBO (its eq. 11 with q(c | x) of eq. 16), per point and latent
sample :math:`z_s = \tilde\mu + \tilde\sigma \odot \epsilon_s` of :math:`q(z \mid x) =
\mathcal{N}(\tilde\mu, \operatorname{diag} \tilde\sigma^2)`:

.. math::
   \mathcal{L}_s(x) = \log p(x \mid z_s)
     + \sum_c \gamma_{sc} \Big( \log \pi_c + \mathbb{E}_{q(z|x)}[\log p(z \mid c)]
       - \log \gamma_{sc} \Big) + \mathcal{H}[q(z \mid x)],
   \qquad \gamma_{sc} = p(c \mid z_s),

averaged over the S samples, with the Gaussian expectations in closed form,

.. math::
   \mathbb{E}_{q}[\log p(z \mid c)] = \log \mathcal{N}(\tilde\mu; \mu_c, \sigma_c^2)
     - \tfrac12 \sum_j \tilde\sigma_j^2 / \sigma_{cj}^2, \qquad
   \mathcal{H}[q] = \tfrac12 \sum_j (1 + \log 2\pi + \log \tilde\sigma_j^2).

This is the form of the paper and of its reference code (slim1017/VaDE, ``vae_loss``):
:math:`q(c \mid x) = \mathbb{E}_{q(z|x)}[p(c \mid z)]` is estimated by :math:`p(c \mid z)` at the
sampled z, and gradients flow through :math:`\gamma` (no stop-gradient). For any fixed
:math:`\gamma` the bracket is the ELBO of :math:`q(z \mid x)\, q(c \mid x)`, so its expectation is
below :math:`\log p(x)`. With one component it is the ELBO of the VAE with a learnable Gaussian
prior (:class:`lvmjax.vae.GaussianPrior`) and its closed-form KL.

The four tasks: generation per cluster (:func:`sample_given`), the posterior over clusters
(:func:`cluster_posterior`) and the MAP cluster (:func:`map_cluster`), learning (the ``"vade"``
objective of :func:`lvmjax.vae.make_train_step`, i.e. :func:`elbo`). The paper's initialisation:
train the same networks as an autoencoder (``objective="autoencoder"``), then fit a diagonal GMM
to the encoder means with :func:`lvmjax.gmm.fit` and start the prior there
(:func:`init_prior_from_data`). ``lvmjax.vae.train`` runs the whole recipe from a config
(``configs/vade_mnist.py``).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from lvmjax import vae
  >>> from lvmjax.vae import vade
  >>> model = vae.VAE(vae.MLPEncoder(latent_dim=2, hidden=(8,)),
  ...                 vae.MLPDecoder(output_dim=4, hidden=(8,)), vae.BernoulliLikelihood(),
  ...                 prior=vade.GaussianMixturePrior(num_components=3))
  >>> x = jnp.ones((5, 4))
  >>> params = vae.init(jax.random.key(0), model, x)
  >>> vade.elbo(model, params, jax.random.key(1), x).shape
  (5,)
  >>> vade.cluster_posterior(model, params, jax.random.key(2), x).sum(-1).round(4)
  Array([1., 1., 1., 1., 1.], dtype=float32)

References:
  Z. Jiang, Y. Zheng, H. Tan, B. Tang, H. Zhou. Variational Deep Embedding: An Unsupervised and
  Generative Approach to Clustering. IJCAI 2017.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lvmjax import _checks
from lvmjax import gmm
from lvmjax.gmm import unconstrained as gmm_unconstrained
from lvmjax.types import DataBatch, DataBatchLike, Key, LatentBatch, LogDensity
from lvmjax.vae import model as vae_model
from lvmjax.vae.priors import Prior

Params = Any
_LOG_2PI = math.log(2.0 * math.pi)
_SOFTPLUS_INV_ONE = math.log(math.e - 1.0)  # softplus(a) = 1: a standard deviation of one


class GaussianMixturePrior(Prior):
  r"""A learnable Gaussian-mixture prior with diagonal covariances, the prior of VaDE.

  .. math:: p(z) = \sum_{c=1}^K \pi_c\, \mathcal{N}(z; \mu_c, \operatorname{diag} \sigma_c^2),
     \qquad \pi = \operatorname{softmax}(\ell), \quad \sigma_c = \operatorname{softplus}(a_c)

  Its parameters, under ``params["params"]["prior"]``, are those of
  :class:`lvmjax.gmm.unconstrained.UnconstrainedGMMParams` with ``covariance_type="diag"``:
  ``logits`` (K,) at 0 (equal weights), ``means`` (K, L) drawn from N(0, 1) (distinct, so that
  the components can separate without the data-driven initialisation) and ``scale`` (K, L) at
  :math:`\operatorname{softplus}^{-1}(1)` (unit variances). :func:`init_prior_from_data` replaces
  them by a GMM fitted to the encodings, as the paper does. Every density is
  :mod:`lvmjax.gmm`'s on :meth:`mixture`. No closed-form KL to q(z | x) exists, so the plain
  ELBO of :func:`lvmjax.vae.elbo` uses the Monte Carlo KL with the marginal :math:`\log p(z)`;
  VaDE's own bound is :func:`elbo`.

  With ``learn_weights=False`` the weights are not trained: p(c) stays where the params hold it,
  1/K from the initialisation and from :func:`init_prior_from_data`, and no gradient reaches the
  logits (the uniform p(c) of e.g. Dilokthanakul et al.'s GMVAE). Equal weights keep one
  component from growing to cover two classes at double weight; the paper learns them.

  Attributes:
    num_components: K, the number of clusters.
    learn_weights: train the mixture weights (default) or hold them fixed.
  """
  num_components: int
  learn_weights: bool = True

  @nn.compact
  def __call__(self, latent_dim: int) -> gmm_unconstrained.UnconstrainedGMMParams:
    """The unconstrained parameters, created on first use (L = ``latent_dim``)."""
    k = self.num_components
    logits = self.param("logits", nn.initializers.zeros, (k,), jnp.float32)
    if not self.learn_weights:
      logits = jax.lax.stop_gradient(logits)
    means = self.param("means", nn.initializers.normal(1.0), (k, latent_dim), jnp.float32)
    scale = self.param("scale", nn.initializers.constant(_SOFTPLUS_INV_ONE), (k, latent_dim),
                       jnp.float32)
    return gmm_unconstrained.UnconstrainedGMMParams(logits, means, scale, "diag")

  def mixture(self, latent_dim: int, dtype: Any = jnp.float32) -> gmm.GMMParams:
    """The mixture as :class:`lvmjax.gmm.GMMParams` (``"diag"``), in ``dtype``."""
    u = jax.tree.map(lambda a: a.astype(dtype), self(latent_dim))
    return gmm_unconstrained.from_unconstrained(u)

  def log_joint(self, z: LatentBatch) -> jax.Array:
    r""":math:`\log p(z, c) = \log \pi_c + \log \mathcal{N}(z; \mu_c, \sigma_c^2)`, ``(..., K)``."""
    return gmm.log_joint(self.mixture(z.shape[-1], z.dtype), z)

  def log_prob(self, z: LatentBatch) -> LogDensity:
    r""":math:`\log p(z) = \log \sum_c \pi_c \mathcal{N}(z; \mu_c, \sigma_c^2)`, ``(...,)``."""
    return gmm.log_marginal(self.mixture(z.shape[-1], z.dtype), z)

  def expected_log_joint(self, mean: LatentBatch, log_variance: LatentBatch) -> jax.Array:
    r""":math:`\mathbb{E}_{\mathcal{N}(z; \tilde\mu, \tilde\sigma^2)}[\log p(z, c)]`, ``(..., K)``.

    .. math:: \log \pi_c + \log \mathcal{N}(\tilde\mu; \mu_c, \sigma_c^2)
       - \tfrac12 \sum_j \tilde\sigma_j^2 / \sigma_{cj}^2
    """
    mix = self.mixture(mean.shape[-1], mean.dtype)
    cov = jnp.expand_dims(mix.covariances, tuple(range(mean.ndim - 1)))    # (1.., K, L)
    trace = jnp.sum(jnp.exp(log_variance)[..., None, :] / cov, axis=-1)     # (..., K)
    return gmm.log_joint(mix, mean) - 0.5 * trace

  def sample(self, key: Key, n: int, latent_dim: Optional[int]) -> LatentBatch:
    """``(n, L)`` draws c ~ Cat(pi), z ~ N(mu_c, sigma_c^2) (:func:`lvmjax.gmm.sample`)."""
    if latent_dim is None:
      raise ValueError("GaussianMixturePrior.sample needs latent_dim=... (the encoder has no "
                       "latent_dim attribute).")
    dtype = jnp.promote_types(jnp.zeros(()).dtype, jnp.float32)
    z, _ = gmm.sample(self.mixture(int(latent_dim), dtype), key, n)
    return z

  def sample_given(self, key: Key, clusters: jax.Array, latent_dim: int) -> LatentBatch:
    """``(n, L)`` draws z ~ p(z | c) for the given clusters ``(n,)``."""
    dtype = jnp.promote_types(jnp.zeros(()).dtype, jnp.float32)
    return gmm.sample_given(self.mixture(int(latent_dim), dtype), key, clusters)


# ----------------------------------------------------------------------------------------------
# helpers


def _check_model(model: vae_model.VAE) -> None:
  if not isinstance(getattr(model, "prior", None), GaussianMixturePrior):
    raise ValueError(
        "VaDE needs a VAE with a Gaussian-mixture prior: vae.VAE(encoder, decoder, likelihood, "
        f"prior=vade.GaussianMixturePrior(num_components=K)); got prior "
        f"{getattr(model, 'prior', None)!r}.")


def _prior(model, params, name, *args):
  """Calls ``model.prior.<name>(*args)`` inside the model's apply (the VAE owns its prior)."""
  return vae_model._apply(model, params, *args, method=lambda m, *a: getattr(m.prior, name)(*a),  # pylint: disable=protected-access
                          what="prior")


def _latents(model, params, keys, x, num_samples, compute_dtype):
  """Encoding ``(mean, log_variance)`` (N, L) and reparameterised samples z (N, S, L)."""
  mean, log_variance = vae_model._encode(model, params, x, compute_dtype)  # pylint: disable=protected-access
  eps = vae_model._point_noise(keys, num_samples, mean.shape[-1], mean.dtype)  # pylint: disable=protected-access
  z = mean[:, None, :] + jnp.exp(0.5 * log_variance)[:, None, :] * eps
  return mean, log_variance, z


def _prepare(model, params, key, x, num_samples):
  _check_model(model)
  _checks.check_key(key)
  vae_model._check_x(x)  # pylint: disable=protected-access
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  x = vae_model._as_float(x)  # pylint: disable=protected-access
  return x, jax.random.split(key, x.shape[0]), num_samples


def _num_latents(params: Params) -> int:
  return int(np.shape(mixture_params(params).means)[-1])


# ----------------------------------------------------------------------------------------------
# public API


def mixture_params(params: Params) -> gmm.GMMParams:
  """The prior's mixture :math:`(\\pi, \\mu, \\sigma^2)` as :class:`lvmjax.gmm.GMMParams`.

  Args:
    params: the params of a VAE whose prior is a :class:`GaussianMixturePrior`.

  Returns:
    ``GMMParams(weights (K,), means (K, L), covariances (K, L), "diag")``.

  Raises:
    ValueError: ``params`` has no Gaussian-mixture prior.
  """
  try:
    p = params["params"]["prior"]
    u = gmm_unconstrained.UnconstrainedGMMParams(p["logits"], p["means"], p["scale"], "diag")
  except (KeyError, TypeError):
    raise ValueError("params has no Gaussian-mixture prior (params['params']['prior'] with "
                     "logits, means, scale): pass the params of a VAE built with "
                     "prior=vade.GaussianMixturePrior(K).") from None
  return gmm_unconstrained.from_unconstrained(u)


def set_mixture_params(params: Params, mixture: gmm.GMMParams) -> Params:
  """Returns ``params`` with the prior set to the diagonal mixture ``mixture``.

  Args:
    params: the params of a VAE whose prior is a :class:`GaussianMixturePrior`.
    mixture: a valid ``"diag"`` mixture with the prior's K and L (e.g. ``gmm.fit(...).params``).

  Returns:
    A new params pytree (the input is unchanged).

  Raises:
    ValueError: not a ``"diag"`` mixture, or shapes that differ from the prior's.
  """
  old = mixture_params(params)
  if not isinstance(mixture, gmm.GMMParams) or mixture.covariance_type != "diag":
    raise ValueError("mixture must be a gmm.GMMParams with covariance_type='diag' (fit it with "
                     "gmm.fit(..., covariance_type='diag')).")
  if np.shape(mixture.means) != np.shape(old.means):
    raise ValueError(f"mixture has means of shape {np.shape(mixture.means)}, the prior "
                     f"{np.shape(old.means)} (K, L).")
  u = gmm_unconstrained.to_unconstrained(mixture)
  prior = params["params"]["prior"]
  new_prior = {name: jnp.asarray(value, jnp.result_type(prior[name]))
               for name, value in (("logits", u.logits), ("means", u.means), ("scale", u.scale))}
  return {**params, "params": {**params["params"], "prior": new_prior}}


def init_prior_from_data(model: vae_model.VAE, params: Params, key: Key, x: DataBatchLike, *,
                         batch_size: int = 1000, **fit_kwargs) -> tuple[Params, gmm.GMMFitResult]:
  r"""The paper's initialisation of the prior: a diagonal GMM fitted to the encoder means.

  Encodes ``x`` (batch by batch) to :math:`\tilde\mu(x)`, runs
  ``gmm.fit(key, means, K, covariance_type="diag", **fit_kwargs)`` and sets the prior to the
  result (:func:`set_mixture_params`), with equal weights when the prior holds them fixed
  (``learn_weights=False``). Call it after pretraining the networks as an autoencoder.

  Args:
    model, params: the VaDE model and its params.
    key: PRNG key of the GMM fit.
    x: ``(N, *data_shape)``, the training data.
    batch_size: points encoded at a time.
    **fit_kwargs: options of :func:`lvmjax.gmm.fit` (``n_init``, ``max_iter``, ``init``, ...).

  Returns:
    ``(params, fit_result)``.
  """
  _check_model(model)
  _checks.check_key(key)
  means = vae_model.posterior_means(model, params, x, batch_size)  # checks x and batch_size
  result = gmm.fit(key, means, model.prior.num_components, covariance_type="diag", **fit_kwargs)
  mixture = result.params
  if not model.prior.learn_weights:  # the prior's weights are held equal: only means, variances
    mixture = mixture.replace(weights=jnp.full_like(mixture.weights, 1.0 / mixture.weights.size))
  return set_mixture_params(params, mixture), result


def elbo_terms(model: vae_model.VAE, params: Params, key: Key, x: DataBatchLike,
               num_samples: int = 1, beta: float = 1.0, *,
               compute_dtype: Any = None) -> vae_model.ElboTerms:
  r"""VaDE's ELBO per point (see the module docstring) and its two parts.

  ``reconstruction`` is :math:`\frac1S \sum_s \log p(x \mid z_s)` and ``kl`` the rest with its
  sign turned, :math:`\frac1S \sum_s \big[\mathbb{E}_q \log q(z|x) + \sum_c \gamma_{sc}
  (\log \gamma_{sc} - \log \pi_c - \mathbb{E}_q \log p(z|c))\big]`, so that
  ``elbo = reconstruction - beta * kl``.

  Args:
    model: a :class:`lvmjax.vae.VAE` with a :class:`GaussianMixturePrior`.
    params: its params.
    key: PRNG key (point n draws from ``split(key, N)[n]``, as in :func:`lvmjax.vae.elbo`).
    x: ``(N, *data_shape)``.
    num_samples: S >= 1 latent samples per point.
    beta: weight of the KL part (1: the ELBO).
    compute_dtype: e.g. ``jnp.bfloat16`` for the networks; densities in float32.

  Returns:
    :class:`lvmjax.vae.ElboTerms` of ``(N,)`` arrays.

  Raises:
    ValueError: a model without a Gaussian-mixture prior, bad x, num_samples < 1, beta < 0.
  """
  _checks.check_nonnegative(beta, "beta")
  x, keys, num_samples = _prepare(model, params, key, x, num_samples)
  params = vae_model.cast_params(params, compute_dtype)
  mean, log_variance, z = _latents(model, params, keys, x, num_samples, compute_dtype)
  log_px = vae_model._log_px_given_z(model, params, z, x, compute_dtype)  # pylint: disable=protected-access
  log_gamma = jax.nn.log_softmax(_prior(model, params, "log_joint", z), axis=-1)   # (N, S, K)
  expected = _prior(model, params, "expected_log_joint", mean, log_variance)       # (N, K)
  entropy = 0.5 * jnp.sum(1.0 + _LOG_2PI + log_variance, axis=-1)                  # (N,)
  bracket = jnp.sum(jnp.exp(log_gamma) * (expected[:, None, :] - log_gamma), axis=-1)  # (N, S)
  kl = -jnp.mean(bracket, axis=1) - entropy
  reconstruction = jnp.mean(log_px, axis=1)
  return vae_model.ElboTerms(reconstruction - beta * kl, reconstruction, kl)


def elbo(model: vae_model.VAE, params: Params, key: Key, x: DataBatchLike,
         num_samples: int = 1, beta: float = 1.0, *, compute_dtype: Any = None) -> LogDensity:
  """VaDE's ELBO per point, ``(N,)`` (:func:`elbo_terms`); the ``"vade"`` training objective."""
  return elbo_terms(model, params, key, x, num_samples, beta, compute_dtype=compute_dtype).elbo


def cluster_posterior(model: vae_model.VAE, params: Params, key: Key, x: DataBatchLike,
                      num_samples: int = 1) -> jax.Array:
  r"""The posterior over clusters :math:`q(c \mid x) = \mathbb{E}_{q(z|x)}[p(c \mid z)]`.

  Estimated as :math:`\frac1S \sum_s p(c \mid z_s)`, :math:`z_s \sim q(z \mid x)`
  (``gmm.posterior`` of the prior's mixture at each sample; S = 1 is the paper's estimate).

  Args:
    model, params: the VaDE model.
    key: PRNG key (point n draws from ``split(key, N)[n]``).
    x: ``(N, *data_shape)``.
    num_samples: S >= 1.

  Returns:
    ``(N, K)``; each row sums to one.
  """
  x, keys, num_samples = _prepare(model, params, key, x, num_samples)
  _, _, z = _latents(model, params, keys, x, num_samples, None)
  return jnp.mean(jax.nn.softmax(_prior(model, params, "log_joint", z), axis=-1), axis=1)


def map_cluster(model: vae_model.VAE, params: Params, key: Key, x: DataBatchLike,
                num_samples: int = 1) -> jax.Array:
  r"""The MAP cluster :math:`\arg\max_c q(c \mid x)` (:func:`cluster_posterior`), ``(N,)``."""
  return jnp.argmax(cluster_posterior(model, params, key, x, num_samples), axis=-1)


def sample_given(model: vae_model.VAE, params: Params, key: Key, clusters: jax.typing.ArrayLike,
                 *, use_mean: bool = False) -> tuple[DataBatch, LatentBatch]:
  r"""Generates from chosen clusters: :math:`z \sim p(z \mid c)`, :math:`x \sim p(x \mid z)`.

  Args:
    model, params: the VaDE model.
    key: PRNG key.
    clusters: ``(n,)`` integer clusters in ``[0, K)``.
    use_mean: return the mean of p(x | z) (e.g. Bernoulli probabilities) instead of a draw.

  Returns:
    ``(x (n, *data_shape), z (n, L))``.

  Raises:
    ValueError: clusters not 1-D or out of range, a model without a Gaussian-mixture prior.
  """
  _check_model(model)
  _checks.check_key(key)
  clusters = jnp.asarray(clusters)
  k = model.prior.num_components
  if clusters.ndim != 1 or not jnp.issubdtype(clusters.dtype, jnp.integer):
    raise ValueError(f"clusters must be a 1-D integer array, got shape {clusters.shape} and "
                     f"dtype {clusters.dtype}.")
  if clusters.size and (int(jnp.min(clusters)) < 0 or int(jnp.max(clusters)) >= k):
    raise ValueError(f"clusters must lie in [0, {k}) (K = {k} components).")
  key_z, key_x = jax.random.split(key)
  z = _prior(model, params, "sample_given", key_z, clusters, _num_latents(params))
  return vae_model.sample_given(model, params, key_x, z, use_mean=use_mean), z


def clustering_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
  r"""Unsupervised clustering accuracy: the best one-to-one matching of clusters to labels.

  .. math:: \mathrm{ACC} = \max_{m} \frac1N \sum_n \mathbb{1}[y_n = m(c_n)]

  over one-to-one maps m from clusters to labels (the Hungarian algorithm,
  ``scipy.optimize.linear_sum_assignment``, on the contingency table), as in the VaDE and DEC
  papers. Clusters left unmatched (more clusters than labels) count as errors.

  Args:
    labels: ``(N,)`` true integer labels.
    clusters: ``(N,)`` integer cluster assignments.

  Returns:
    The accuracy in [0, 1].

  Raises:
    ValueError: arrays of different lengths, empty, or not integer.
  """
  from scipy.optimize import linear_sum_assignment  # pylint: disable=g-import-not-at-top
  labels, clusters = np.asarray(labels), np.asarray(clusters)
  if labels.ndim != 1 or labels.shape != clusters.shape or labels.size == 0:
    raise ValueError(f"labels and clusters must be 1-D of the same non-zero length, got shapes "
                     f"{labels.shape} and {clusters.shape}.")
  if not (np.issubdtype(labels.dtype, np.integer) and np.issubdtype(clusters.dtype, np.integer)):
    raise ValueError("labels and clusters must be integer arrays.")
  _, y = np.unique(labels, return_inverse=True)
  _, c = np.unique(clusters, return_inverse=True)
  table = np.zeros((c.max() + 1, y.max() + 1), np.int64)
  np.add.at(table, (c.ravel(), y.ravel()), 1)
  rows, cols = linear_sum_assignment(-table)
  return float(table[rows, cols].sum()) / labels.size


__all__ = ["GaussianMixturePrior", "elbo", "elbo_terms", "cluster_posterior", "map_cluster",
           "sample_given", "mixture_params", "set_mixture_params", "init_prior_from_data",
           "clustering_accuracy"]
