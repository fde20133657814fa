r"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov, 2016): bounds, log p(x), AIS.

The generative model and the inference network are

.. math::
   p(x, z_1, z_2) = p(z_2)\, p(z_1 \mid z_2)\, p(x \mid z_1), \qquad
   q(z_1, z_2 \mid x) = q(z_1 \mid x)\, q(z_2 \mid z_1),

with diagonal Gaussians :math:`p(z_1 \mid z_2)`, :math:`q(z_1 \mid x)`, :math:`q(z_2 \mid z_1)`
(each an encoder-like module mapping its input to ``(mean, log_variance)``), the prior
:math:`p(z_2)` any prior module of :mod:`lvmjax.vae.priors` (N(0, I) by default) and
:math:`p(x \mid z_1)` a decoder and likelihood as in the one-layer :class:`lvmjax.vae.VAE`. Every
bound is built from the importance weight of a draw :math:`z_1 \sim q(z_1 \mid x)`,
:math:`z_2 \sim q(z_2 \mid z_1)`:

.. math::
   \log w = \log p(x \mid z_1) + \log p(z_1 \mid z_2) + \log p(z_2)
            - \log q(z_1 \mid x) - \log q(z_2 \mid z_1),

the ELBO is :math:`\frac1S \sum_s \log w_s`, the IWAE bound :math:`\log \frac1k \sum_s w_s`, and
the importance-sampled log p(x) the IWAE bound at k = 5000, in chunks. Point n's noise comes from
``jax.random.split(key, N)[n]`` (z1's exactly as the one-layer functions draw theirs), so with
z2 switched off (:math:`p(z_1 \mid z_2) = \mathcal{N}(0, I)`, :math:`q(z_2 \mid z_1) = p(z_2)`)
every number equals the one-layer model's.

:func:`burda_model` builds Burda et al.'s architecture: z1 of 100 and z2 of 50 units, two tanh
layers of 200 between x and z1 and two of 100 between z1 and z2, in both networks.
:func:`lvmjax.vae.log_likelihood_ais` and :func:`lvmjax.vae.bdmc` work on this model too (its
:meth:`HierarchicalVAE.ais_target` gives AIS the latent ``(z1, z2)``). :func:`sample_joint`
(``use_mean=True`` for the decoder's means), :func:`reconstruct` and :func:`posterior_means` give
the launcher's figures (prior samples, reconstructions, both layers' posterior means).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lvmjax import _checks
from lvmjax import sharding
from lvmjax.types import DataBatchLike, Key, LogDensity
from lvmjax.vae import ais as vae_ais
from lvmjax.vae import model as vae_model
from lvmjax.vae import steps as vae_steps
from lvmjax.vae.likelihoods import BernoulliLikelihood
from lvmjax.vae.networks import MLPDecoder, MLPEncoder
from lvmjax.vae.priors import StandardNormal, diag_gaussian_log_prob

Params = Any


class HierarchicalVAE(nn.Module):
  """Two stochastic layers: q(z1 | x) q(z2 | z1) and p(z2) p(z1 | z2) p(x | z1).

  A container like :class:`lvmjax.vae.VAE`; use this module's functions on it.
  :func:`lvmjax.vae.init` does not apply: use :func:`init`, which creates
  ``{"params": {"encoder1", "encoder2", "conditional", "decoder", ...}}``.

  Attributes:
    encoder1: q(z1 | x): ``x -> (mean, log_variance)`` of z1 (e.g. ``MLPEncoder``).
    encoder2: q(z2 | z1): ``z1 -> (mean, log_variance)`` of z2.
    conditional: p(z1 | z2): ``z2 -> (mean, log_variance)`` of z1 (an encoder-like module).
    decoder: p(x | z1): ``z1 ->`` the likelihood's parameters.
    likelihood: a likelihood module (:class:`lvmjax.vae.BernoulliLikelihood`, ...).
    prior: p(z2), a prior module with ``log_prob`` and ``sample``; None: N(0, I).
  """
  encoder1: nn.Module
  encoder2: nn.Module
  conditional: nn.Module
  decoder: nn.Module
  likelihood: nn.Module
  prior: Optional[nn.Module] = None

  def __post_init__(self):
    if self.prior is None:
      object.__setattr__(self, "prior", StandardNormal())
    super().__post_init__()

  def encode1(self, x):
    return self.encoder1(x)

  def encode2(self, z1):
    return self.encoder2(z1)

  def conditional_params(self, z2):
    return self.conditional(z2)

  def decode(self, z1, event_ndims: int):
    out = self.decoder(z1)
    return self.likelihood(out.astype(jnp.promote_types(out.dtype, jnp.float32)), event_ndims)

  def prior_log_prob(self, z2):
    return self.prior.log_prob(z2)

  def prior_sample(self, key, n, latent_dim):
    return self.prior.sample(key, n, latent_dim)

  def __call__(self, x):
    mean1, _ = self.encoder1(x)
    mean2, _ = self.encoder2(mean1)
    self.conditional(mean2)
    self.prior.log_prob(mean2)
    return self.decode(mean1, x.ndim - 1)

  @nn.nowrap
  def ais_target(self, params: Params, x: jax.Array) -> vae_ais.AISTarget:
    """:func:`ais_target` (for :func:`lvmjax.vae.log_likelihood_ais`)."""
    return ais_target(self, params, x)

  @nn.nowrap
  def sample_joint(self, params: Params, key: Key, n: int):
    """:func:`sample_joint` (for :func:`lvmjax.vae.bdmc`)."""
    return sample_joint(self, params, key, n)


def burda_model(num_features: int, *, latent_dims: Sequence[int] = (100, 50),
                hidden: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
                activation: Any = "tanh", likelihood: Optional[nn.Module] = None,
                prior: Optional[nn.Module] = None) -> HierarchicalVAE:
  """Burda et al.'s two-layer architecture (defaults): 784-200-200-100(z1)-100-100-50(z2), tanh.

  Args:
    num_features: D of x (784 for MNIST).
    latent_dims: (L1, L2).
    hidden: hidden widths between x and z1, and between z1 and z2 (the generative networks use
      them reversed).
    activation: name or callable.
    likelihood: p(x | z1)'s module; None: Bernoulli.
    prior: p(z2); None: N(0, I).
  """
  (l1, l2), (h1, h2) = latent_dims, hidden
  return HierarchicalVAE(
      encoder1=MLPEncoder(latent_dim=l1, hidden=tuple(h1), activation=activation),
      encoder2=MLPEncoder(latent_dim=l2, hidden=tuple(h2), activation=activation),
      conditional=MLPEncoder(latent_dim=l1, hidden=tuple(reversed(h2)), activation=activation),
      decoder=MLPDecoder(output_dim=num_features, hidden=tuple(reversed(h1)),
                         activation=activation),
      likelihood=likelihood or BernoulliLikelihood(), prior=prior)


def init(key: Key, model: HierarchicalVAE, example_x: DataBatchLike) -> Params:
  """The params of ``model`` from example data ``(N, D)`` (the key first, as in ``vae.init``)."""
  _checks.check_key(key)
  vae_model._check_x(example_x, "example_x")  # pylint: disable=protected-access
  return jax.jit(model.init)(key, vae_model._as_float(example_x)[:1])  # pylint: disable=protected-access


# ----------------------------------------------------------------------------------------------
# densities


def _up(a):
  return a.astype(jnp.promote_types(a.dtype, jnp.float32))


_PARTS = {"encode1": "encoder q(z1 | x)", "encode2": "encoder q(z2 | z1)",
          "conditional_params": "p(z1 | z2)", "decode": "decoder", "prior_log_prob": "prior",
          "prior_sample": "prior"}


def _apply(model, params, *args, method):
  """``model.apply`` where a shape mismatch is a ValueError naming the part (as in the VAE)."""
  return vae_model._apply(model, params, *args, method=method, what=_PARTS[method])  # pylint: disable=protected-access


def _gaussian(model, params, inputs, method):
  mean, log_variance = _apply(model, params, inputs, method=method)
  return _up(mean), _up(log_variance)


def _log_px(model, params, z1, x):
  """log p(x_n | z1_ns) for x (N, *data) and z1 (N, S, L1): (N, S); the decoder on N*S rows."""
  n, s = z1.shape[:2]
  event_ndims = x.ndim - 1
  dist = _apply(model, params, z1.reshape((n * s,) + z1.shape[2:]), event_ndims, method="decode")
  xs = jnp.broadcast_to(x[:, None], (n, s) + x.shape[1:]).reshape((n * s,) + x.shape[1:])
  return _up(dist.log_prob(xs)).reshape(n, s)


def _log_weights(model, params, keys, x, num_samples):
  """log w (N, S) of z1 ~ q(z1 | x), z2 ~ q(z2 | z1); point n draws from keys[n]."""
  mean1, log_var1 = _gaussian(model, params, x, "encode1")
  eps1 = vae_model._point_noise(keys, num_samples, mean1.shape[-1], mean1.dtype)  # pylint: disable=protected-access
  z1 = mean1[:, None] + jnp.exp(0.5 * log_var1)[:, None] * eps1
  mean2, log_var2 = _gaussian(model, params, z1, "encode2")
  keys2 = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
  eps2 = vae_model._point_noise(keys2, num_samples, mean2.shape[-1], mean2.dtype)  # pylint: disable=protected-access
  z2 = mean2 + jnp.exp(0.5 * log_var2) * eps2
  cond_mean, cond_log_var = _gaussian(model, params, z2, "conditional_params")
  log_p = (_log_px(model, params, z1, x) + diag_gaussian_log_prob(z1, cond_mean, cond_log_var)
           + _up(_apply(model, params, z2, method="prior_log_prob")))
  log_q = (diag_gaussian_log_prob(z1, mean1[:, None], log_var1[:, None])
           + diag_gaussian_log_prob(z2, mean2, log_var2))
  return log_p - log_q


def _prepare(key, x, num_samples):
  """Checks the public functions' arguments at the door; their numbers run as one jitted core."""
  _checks.check_key(key)
  vae_model._check_x(x)  # pylint: disable=protected-access
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  return vae_model._as_float(x), num_samples  # pylint: disable=protected-access


_one_program = vae_model._one_program  # pylint: disable=protected-access


def elbo(model: HierarchicalVAE, params: Params, key: Key, x: DataBatchLike,
         num_samples: int = 1) -> LogDensity:
  r"""Per-point ELBO :math:`\frac1S \sum_s \log w_s` (Monte Carlo in both layers): ``(N,)``."""
  x, num_samples = _prepare(key, x, num_samples)
  return _elbo(model, params, key, x, num_samples)


@_one_program(static_argnums=(0, 4))
def _elbo(model, params, key, x, num_samples):
  keys = jax.random.split(key, x.shape[0])
  return jnp.mean(_log_weights(model, params, keys, x, num_samples), axis=1)


def iwae_bound(model: HierarchicalVAE, params: Params, key: Key, x: DataBatchLike,
               num_samples: int) -> LogDensity:
  r"""Per-point IWAE bound :math:`\log \frac1k \sum_{s=1}^k w_s`: ``(N,)``; the ELBO at k = 1."""
  x, num_samples = _prepare(key, x, num_samples)
  return _iwae_bound(model, params, key, x, num_samples)


@_one_program(static_argnums=(0, 4))
def _iwae_bound(model, params, key, x, num_samples):
  log_w = _log_weights(model, params, jax.random.split(key, x.shape[0]), x, num_samples)
  return jax.nn.logsumexp(log_w, axis=1) - jnp.log(jnp.asarray(num_samples, log_w.dtype))


def log_likelihood(model: HierarchicalVAE, params: Params, key: Key, x: DataBatchLike,
                   num_samples: int = 5000, chunk_size: int = 500) -> LogDensity:
  r"""Importance-sampled log p(x) with q(z1 | x) q(z2 | z1) as the proposal: ``(N,)``.

  .. math:: \log \hat p(x) = \log \frac1K \sum_{s=1}^K w_s

  In chunks of ``chunk_size`` samples: chunk c of point n draws from
  ``split(split(key, N)[n], C)[c]`` (as :func:`lvmjax.vae.log_likelihood`), and the chunks'
  bounds combine as :math:`\log \sum_c m_c e^{\mathcal{L}_c} - \log K`.
  """
  x, num_samples = _prepare(key, x, num_samples)
  chunk_size = min(_checks.check_positive_int(chunk_size, "chunk_size"), num_samples)
  return _log_likelihood(model, params, key, x, num_samples, chunk_size)


@_one_program(static_argnums=(0, 4, 5))
def _log_likelihood(model, params, key, x, num_samples, chunk_size):
  keys = jax.random.split(key, x.shape[0])
  num_full, rest = divmod(num_samples, chunk_size)
  num_chunks = num_full + (rest > 0)
  chunk_keys = jax.vmap(lambda k: jax.random.split(k, num_chunks))(keys)      # (N, C)

  def chunk_sum(c, size):   # log sum_s w_s over chunk c: (N,)
    return jax.nn.logsumexp(_log_weights(model, params, chunk_keys[:, c], x, size), axis=1)

  sums = jax.lax.map(lambda c: chunk_sum(c, chunk_size), jnp.arange(num_full))   # (C_full, N)
  if rest:
    sums = jnp.concatenate([sums, chunk_sum(num_full, rest)[None]])
  return jax.nn.logsumexp(sums, axis=0) - jnp.log(jnp.asarray(num_samples, sums.dtype))


# ----------------------------------------------------------------------------------------------
# generation, AIS


def sample_joint(model: HierarchicalVAE, params: Params, key: Key, n: int, *,
                 use_mean: bool = False):
  """``(x (n, D), (z1 (n, L1), z2 (n, L2)))`` drawn from p(z2) p(z1 | z2) p(x | z1).

  With ``use_mean``, x is the mean of p(x | z1) (e.g. Bernoulli probabilities) instead of a draw,
  as :func:`lvmjax.vae.sample`'s ``use_mean``.
  """
  _checks.check_key(key)
  n = _checks.check_positive_int(n, "n")
  return _sample_joint(model, params, key, n, bool(use_mean))


@_one_program(static_argnums=(0, 3, 4))
def _sample_joint(model, params, key, n, use_mean):
  k2, k1, kx = jax.random.split(key, 3)
  z2 = _apply(model, params, k2, n, model.encoder2.latent_dim, method="prior_sample")
  mean, log_var = _gaussian(model, params, z2, "conditional_params")
  z1 = mean + jnp.exp(0.5 * log_var) * jax.random.normal(k1, mean.shape, mean.dtype)
  dist = _apply(model, params, z1, 1, method="decode")
  return (dist.mean() if use_mean else dist.sample(seed=kx)), (z1, z2)


def reconstruct(model: HierarchicalVAE, params: Params, x: DataBatchLike) -> jax.Array:
  r"""Mean of :math:`p(x \mid z_1)` at :math:`z_1` = the mean of :math:`q(z_1 \mid x)`:
  ``(N, *data_shape)``, as :func:`lvmjax.vae.reconstruct` for the one-layer model."""
  vae_model._check_x(x)  # pylint: disable=protected-access
  return _reconstruct(model, params, vae_model._as_float(x))  # pylint: disable=protected-access


@_one_program(static_argnums=(0,))
def _reconstruct(model, params, x):
  mean1, _ = _gaussian(model, params, x, "encode1")
  return _apply(model, params, mean1, x.ndim - 1, method="decode").mean()


def posterior_means(model: HierarchicalVAE, params: Params, key: Key, x: DataBatchLike,
                    num_samples: int = 100, batch_size: int = 1000
                    ) -> tuple[np.ndarray, np.ndarray]:
  r"""The posterior means of z1 and z2 of every point, on the host, in jitted batches.

  z1: :math:`\mu_1(x)`; z2: :math:`E_{q(z_2 \mid x)}[z_2] = E_{q(z_1 \mid x)}[\mu_2(z_1)]`,
  estimated with ``num_samples`` draws of z1 (batches of
  :func:`lvmjax.vae.steps.map_over_batches`).

  Returns:
    ``(m1 (N, L1), m2 (N, L2))``.
  """
  vae_model._check_x(x)  # pylint: disable=protected-access
  _checks.check_key(key)
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  batch_size = _checks.check_positive_int(batch_size, "batch_size")

  values = vae_steps.map_over_batches(
      lambda k, xb: _means_batch(model, params, k, xb, num_samples), key, x, batch_size)
  return values["z1"], values["z2"]


@_one_program(static_argnums=(0, 4))
def _means_batch(model, params, key, xb, num_samples):
  """One batch of :func:`posterior_means`; module level, so a second call reuses its program."""
  m1, lv1 = _gaussian(model, params, vae_model._as_float(xb), "encode1")  # pylint: disable=protected-access
  eps = jax.random.normal(key, (num_samples,) + m1.shape, m1.dtype)
  m2, _ = _gaussian(model, params, m1 + jnp.exp(0.5 * lv1) * eps, "encode2")
  return {"z1": m1, "z2": jnp.mean(m2, axis=0)}


def ais_target(model: HierarchicalVAE, params: Params, x: jax.Array) -> vae_ais.AISTarget:
  r"""The :class:`lvmjax.vae.ais.AISTarget` of one point x (no batch axis); latent ``(z1, z2)``.

  log-prior :math:`\log p(z_2) + \log p(z_1 \mid z_2)`, log-likelihood
  :math:`\log p(x \mid z_1)`, proposal :math:`q(z_1 \mid x)\, q(z_2 \mid z_1)`.
  """
  xb = x[None]
  l2 = model.encoder2.latent_dim

  def log_prior(z):
    z1, z2 = z
    mean, log_var = _gaussian(model, params, z2[None], "conditional_params")
    return (diag_gaussian_log_prob(z1[None], mean, log_var)
            + _up(_apply(model, params, z2[None], method="prior_log_prob")))[0]

  def log_likelihood(z):
    return _log_px(model, params, z[0][None, None], xb)[0, 0]

  def sample_prior(key):
    k2, k1 = jax.random.split(key)
    z2 = _apply(model, params, k2, 1, l2, method="prior_sample")
    mean, log_var = _gaussian(model, params, z2, "conditional_params")
    z1 = mean + jnp.exp(0.5 * log_var) * jax.random.normal(k1, mean.shape, mean.dtype)
    return z1[0], z2[0]

  mean1, log_var1 = (a[0] for a in _gaussian(model, params, xb, "encode1"))

  def initial_sample(key):
    k1, k2 = jax.random.split(key)
    z1 = mean1 + jnp.exp(0.5 * log_var1) * jax.random.normal(k1, mean1.shape, mean1.dtype)
    mean2, log_var2 = (a[0] for a in _gaussian(model, params, z1[None], "encode2"))
    z2 = mean2 + jnp.exp(0.5 * log_var2) * jax.random.normal(k2, mean2.shape, mean2.dtype)
    return z1, z2

  def initial_log_prob(z):
    z1, z2 = z
    mean2, log_var2 = (a[0] for a in _gaussian(model, params, z1[None], "encode2"))
    return diag_gaussian_log_prob(z1, mean1, log_var1) + diag_gaussian_log_prob(z2, mean2, log_var2)

  return vae_ais.AISTarget(log_prior, log_likelihood, sample_prior, initial_sample,
                           initial_log_prob)


# ----------------------------------------------------------------------------------------------
# training and evaluation


def objective(name: str, num_samples: int = 1) -> Callable[..., LogDensity]:
  """A training objective ``f(model, params, key, x) -> (N,)`` for ``vae.make_train_step``.

  Args:
    name: ``"elbo"`` (:func:`elbo` with ``num_samples``) or ``"iwae"`` (:func:`iwae_bound` with
      k = ``num_samples``).
    num_samples: S or k.
  """
  _checks.check_choice(name, "objective", ("elbo", "iwae"))
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  fn = elbo if name == "elbo" else iwae_bound

  def f(model, params, key, x):
    return fn(model, params, key, x, num_samples)

  return f


def latent_moments(model: HierarchicalVAE, params: Params, key: Key, x: DataBatchLike,
                   num_samples: int = 100, batch_size: int = 1000
                   ) -> tuple[vae_model.LatentMoments, vae_model.LatentMoments]:
  """Additive moments (:class:`lvmjax.vae.LatentMoments`) of :func:`posterior_means`' z1 and
  z2 means over ``x``."""
  means = posterior_means(model, params, key, x, num_samples, batch_size)
  return tuple(vae_model.LatentMoments(len(m), m.sum(axis=0), np.square(m).sum(axis=0))
               for m in (np.asarray(m, np.float64) for m in means))


def active_units(model: HierarchicalVAE, params: Params, key: Key, x: DataBatchLike,
                 threshold: float = 0.01, num_samples: int = 100) -> tuple[int, int]:
  r"""Active units of z1 and z2 (Burda et al.): :math:`\mathrm{Var}_x(E_q[z_u]) > 0.01`."""
  m1, m2 = latent_moments(model, params, key, x, num_samples)
  return (int(vae_model.active_units_from_moments(m1, threshold)[0]),
          int(vae_model.active_units_from_moments(m2, threshold)[0]))


def evaluate(model: HierarchicalVAE, params: Params, key: Key, x: DataBatchLike,
             batch_size: int = 100, num_samples_ll: int = 5000, iwae_k: Sequence[int] = (),
             chunk_size: int = 500, active_units_threshold: float = 0.01,
             progress: Optional[Callable[[int, int], None]] = None, *, first_batch: int = 0,
             across_processes: bool = False, autoencoder: bool = False) -> dict:
  """Test figures of the two-layer model, with :func:`lvmjax.vae.evaluate`'s arguments and keys.

  Returns:
    dict: ``elbo``, ``iwae_<k>``, ``log_likelihood`` and ``nll`` (k = ``num_samples_ll``),
    ``active_units`` (both layers), ``active_units_z1``, ``active_units_z2``, ``num_points``.
  """
  if autoencoder:
    raise ValueError("The two-layer model has no autoencoder variant; use model='vae' or 'iwae'.")
  _checks.check_key(key)
  vae_model._check_x(x)  # pylint: disable=protected-access
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  iwae_k = tuple(_checks.check_positive_int(k, "iwae_k") for k in iwae_k)
  if num_samples_ll:
    num_samples_ll = _checks.check_positive_int(num_samples_ll, "num_samples_ll")

  x = np.asarray(x)
  sums, n = vae_steps.sum_over_batches(
      lambda k, xb: _evaluate_batch(model, params, k, xb, iwae_k, num_samples_ll, chunk_size),
      key, x, batch_size, first_batch=first_batch, progress=progress)
  moments = latent_moments(model, params, jax.random.fold_in(key, -1 % 2**31), x)
  if across_processes and jax.process_count() > 1:
    sums, moments = sharding.process_sum((sums, moments))
    n = int(moments[0].count)
  results = {name: float(v) / n for name, v in sums.items()}
  a1, a2 = (int(vae_model.active_units_from_moments(m, active_units_threshold)[0])
            for m in moments)
  results.update(active_units=a1 + a2, active_units_z1=a1, active_units_z2=a2, num_points=n)
  if "log_likelihood" in results:
    results["nll"] = -results["log_likelihood"]
  return results


@_one_program(static_argnums=(0, 4, 5, 6))
def _evaluate_batch(model, params, key, xb, iwae_k, num_samples_ll, chunk_size):
  """Per-point figures of one :func:`evaluate` batch; module level, so that the evaluations
  during training (every ``eval_every`` steps) reuse one compiled program."""
  k_elbo, k_iwae, k_ll = jax.random.split(key, 3)
  out = {"elbo": elbo(model, params, k_elbo, xb, 1)}
  for kk in iwae_k:
    out[f"iwae_{kk}"] = iwae_bound(model, params, jax.random.fold_in(k_iwae, kk), xb, kk)
  if num_samples_ll:
    out["log_likelihood"] = log_likelihood(model, params, k_ll, xb, num_samples_ll, chunk_size)
  return out


__all__ = ["HierarchicalVAE", "burda_model", "init", "elbo", "iwae_bound", "log_likelihood",
           "sample_joint", "reconstruct", "posterior_means", "ais_target", "objective",
           "latent_moments", "active_units", "evaluate"]
