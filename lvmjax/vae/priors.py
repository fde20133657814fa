r"""Priors p(z) of the VAE: the protocol a prior follows, the standard normal, a learnable Gaussian.

A prior is a flax module given to the model as ``VAE(encoder, decoder, likelihood, prior=...)``.
It becomes the VAE's submodule ``prior``, so its parameters (if any) live in the model's params
pytree under ``params["params"]["prior"]`` and are trained by the same ``train_step`` as the
networks. The VAE calls it inside its own ``apply`` with these methods:

* ``log_prob(z) -> (...)``: :math:`\log p(z)` for ``z (..., L)``, summed over the last axis;
* ``sample(key, n, latent_dim) -> (n, L)``: draws :math:`z \sim p(z)`; ``latent_dim`` is L as
  the model knows it (the encoder's ``latent_dim``, or the ``latent_dim=`` given to
  :func:`lvmjax.vae.sample`; None when neither is known), for priors whose size is not in their
  parameters;
* ``kl(mean, log_variance) -> (...)``, **optional**: the closed form
  :math:`\mathrm{KL}(\mathcal{N}(\mu, \operatorname{diag} e^{\log\sigma^2}) \,\|\, p)` for
  ``(..., L)`` arguments. Without it the ELBO uses the Monte Carlo KL
  :math:`\frac1S\sum_s \log q(z_s \mid x) - \log p(z_s)` on its own samples.

``log_prob`` is also what :func:`lvmjax.vae.iwae_bound` and :func:`lvmjax.vae.log_likelihood` use,
so every bound and estimate works for every prior. The VAE initialises the prior's parameters by
calling ``log_prob`` on the encoder's mean, so parameters created there (``self.param`` in an
``@nn.compact`` method, shapes from ``z.shape[-1]``) exist after :func:`lvmjax.vae.init`.

A prior that needs the model's encoder (the VampPrior's :math:`q(z \mid u_k)` at learnable
pseudo-inputs :math:`u_k`) calls :meth:`Prior.encode`: the VAE owns its prior, so that runs the
VAE's own encoder with the VAE's own parameters, and gradients reach both.

Subclassing :class:`Prior` is optional: any flax module with these methods works. The package
docstring (:mod:`lvmjax.vae`) shows a whole new prior in a dozen lines.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lvmjax import _checks
from lvmjax import gmm
from lvmjax.types import DataBatchLike, Key, LatentBatch, LogDensity

_LOG_2PI = math.log(2.0 * math.pi)


def diag_gaussian_log_prob(z: LatentBatch, mean: LatentBatch,
                           log_variance: LatentBatch) -> LogDensity:
  r"""(...,) :math:`\log \mathcal{N}(z; \mu, \operatorname{diag} \sigma^2)
  = -\tfrac12 \sum_j \left((z_j - \mu_j)^2 / \sigma_j^2 + \log \sigma_j^2 + \log 2\pi\right)`,
  for arrays broadcasting to ``(..., L)`` (``log_variance`` is :math:`\log \sigma^2`)."""
  return jnp.sum(-0.5 * (jnp.square(z - mean) * jnp.exp(-log_variance) + log_variance + _LOG_2PI),
                 axis=-1)


def gaussian_kl(mean: LatentBatch, log_variance: LatentBatch, prior_mean: Optional[LatentBatch] = None,
                prior_log_variance: Optional[LatentBatch] = None) -> LogDensity:
  r"""Closed-form KL between diagonal Gaussians, summed over the last axis.

  With ``prior_mean`` and ``prior_log_variance`` None, the KL to the standard normal:

  .. math::
     \mathrm{KL}(\mathcal{N}(\mu, \sigma^2) \,\|\, \mathcal{N}(0, I))
       = \tfrac12 \sum_j \left(\sigma_j^2 + \mu_j^2 - 1 - \log \sigma_j^2\right)

  and otherwise the KL to :math:`\mathcal{N}(m, \operatorname{diag} s^2)`:

  .. math::
     \tfrac12 \sum_j \left(\log s_j^2 - \log \sigma_j^2
       + \frac{\sigma_j^2 + (\mu_j - m_j)^2}{s_j^2} - 1\right)

  Args:
    mean: :math:`\mu`, ``(..., L)``.
    log_variance: :math:`\log \sigma^2`, ``(..., L)``.
    prior_mean: :math:`m`, broadcastable to ``(..., L)``; None: 0 (and then
      ``prior_log_variance`` must be None too: the standard normal).
    prior_log_variance: :math:`\log s^2`, broadcastable to ``(..., L)``; None: 0.

  Returns:
    ``(...,)`` KL in nats.
  """
  mean = jnp.asarray(mean)
  log_variance = jnp.asarray(log_variance)
  if prior_mean is None and prior_log_variance is None:
    return 0.5 * jnp.sum(jnp.exp(log_variance) + jnp.square(mean) - 1.0 - log_variance, axis=-1)
  prior_mean = jnp.zeros((), mean.dtype) if prior_mean is None else jnp.asarray(prior_mean)
  prior_log_variance = (jnp.zeros((), mean.dtype) if prior_log_variance is None
                        else jnp.asarray(prior_log_variance))
  return 0.5 * jnp.sum(
      prior_log_variance - log_variance
      + (jnp.exp(log_variance) + jnp.square(mean - prior_mean)) * jnp.exp(-prior_log_variance)
      - 1.0, axis=-1)


class Prior(nn.Module):
  """Base class of VAE priors: documents the protocol and gives :meth:`encode`.

  Subclasses define ``log_prob(z)``, ``sample(key, n, latent_dim)`` and, where they have one, the
  closed-form ``kl(mean, log_variance)`` (see the module docstring). Subclassing is optional: the
  VAE only calls these methods.
  """

  def encode(self, x: DataBatchLike) -> tuple[LatentBatch, LatentBatch]:
    """q(z | x) of the VAE that owns this prior: ``(mean, log_variance)``, each ``(N, L)``.

    For priors built on the encoder (the VampPrior's pseudo-inputs); it runs the VAE's own encoder
    with the VAE's own parameters.

    Raises:
      ValueError: the prior is not used as a VAE's ``prior``.
    """
    owner = self.parent
    if owner is None or not hasattr(owner, "encoder"):
      raise ValueError("Prior.encode needs the prior to be a VAE's prior: use it as "
                       "vae.VAE(encoder, decoder, likelihood, prior=...) and call the lvmjax.vae "
                       "functions on that model.")
    return owner.encode(x)


def _latent_dim(latent_dim: Optional[int]) -> int:
  if latent_dim is None:
    raise ValueError("This prior needs the latent dimension to sample: pass latent_dim=... "
                     "(the encoder has no latent_dim attribute).")
  return int(latent_dim)


class StandardNormal(Prior):
  r"""The standard normal prior :math:`p(z) = \mathcal{N}(0, I)`; no parameters.

  What ``VAE(..., prior=None)`` uses: the same numbers as the VAE had before priors were
  pluggable, bit for bit.
  """

  def log_prob(self, z: LatentBatch) -> LogDensity:
    r""":math:`\log \mathcal{N}(z; 0, I)`, ``(...,)`` for ``z (..., L)``."""
    return distrax.MultivariateNormalDiag(jnp.zeros_like(z), jnp.ones_like(z)).log_prob(z)

  def sample(self, key: Key, n: int, latent_dim: Optional[int]) -> LatentBatch:
    """``(n, L)`` standard normal draws (float32, or float64 when x64 is on)."""
    return jax.random.normal(key, (n, _latent_dim(latent_dim)),
                             jnp.promote_types(jnp.zeros(()).dtype, jnp.float32))

  def kl(self, mean: LatentBatch, log_variance: LatentBatch) -> LogDensity:
    """:func:`gaussian_kl` to N(0, I)."""
    return gaussian_kl(mean, log_variance)


class GaussianPrior(Prior):
  r"""A learnable diagonal Gaussian prior :math:`p(z) = \mathcal{N}(m, \operatorname{diag} s^2)`.

  Its parameters ``mean`` (L,) and ``log_scale`` (L,) (:math:`\log s`) live in the model's params
  under ``params["params"]["prior"]``; they start at 0, i.e. at N(0, I), and are trained with the
  networks. Its KL to the diagonal-Gaussian posterior is closed-form:

  .. math::
     \mathrm{KL} = \sum_j \log s_j - \tfrac12 \log \sigma_j^2
       + \frac{\sigma_j^2 + (\mu_j - m_j)^2}{2 s_j^2} - \tfrac12

  Examples:
    >>> from lvmjax import vae
    >>> model = vae.VAE(vae.MLPEncoder(latent_dim=2, hidden=(8,)),
    ...                 vae.MLPDecoder(output_dim=4, hidden=(8,)), vae.BernoulliLikelihood(),
    ...                 prior=vae.GaussianPrior())
    >>> params = vae.init(jax.random.key(0), model, jnp.zeros((1, 4)))
    >>> jax.tree.map(jnp.shape, params["params"]["prior"])
    {'log_scale': (2,), 'mean': (2,)}
  """

  @nn.compact
  def __call__(self, latent_dim: int) -> tuple[jax.Array, jax.Array]:
    """The parameters ``(mean (L,), log_scale (L,))``, created at zeros on first use."""
    mean = self.param("mean", nn.initializers.zeros, (latent_dim,), jnp.float32)
    log_scale = self.param("log_scale", nn.initializers.zeros, (latent_dim,), jnp.float32)
    return mean, log_scale

  def _params(self, latent_dim: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    # params cast down (bfloat16 compute) are evaluated in the latents' float32 or float64
    mean, log_scale = self(latent_dim)
    return mean.astype(dtype), log_scale.astype(dtype)

  def log_prob(self, z: LatentBatch) -> LogDensity:
    r""":math:`\log \mathcal{N}(z; m, \operatorname{diag} s^2)`, ``(...,)`` for ``z (..., L)``."""
    mean, log_scale = self._params(z.shape[-1], z.dtype)
    u = (z - mean) * jnp.exp(-log_scale)
    return jnp.sum(-0.5 * jnp.square(u) - log_scale - 0.5 * _LOG_2PI, axis=-1)

  def sample(self, key: Key, n: int, latent_dim: Optional[int]) -> LatentBatch:
    r""":math:`z = m + s \odot \epsilon`, :math:`\epsilon \sim \mathcal{N}(0, I)`: ``(n, L)``."""
    dtype = jnp.promote_types(jnp.zeros(()).dtype, jnp.float32)
    mean, log_scale = self._params(_latent_dim(latent_dim), dtype)
    return mean + jnp.exp(log_scale) * jax.random.normal(key, (n, mean.shape[0]), dtype)

  def kl(self, mean: LatentBatch, log_variance: LatentBatch) -> LogDensity:
    """:func:`gaussian_kl` to N(m, diag s^2)."""
    prior_mean, log_scale = self._params(mean.shape[-1], mean.dtype)
    return gaussian_kl(mean, log_variance, prior_mean, 2.0 * log_scale)


class VampPrior(Prior):
  r"""The VampPrior (Tomczak & Welling, 2018): the aggregate posterior at learnable pseudo-inputs.

  .. math:: p(z) = \frac1K \sum_{k=1}^K q(z \mid u_k)
     = \frac1K \sum_k \mathcal{N}(z; \mu(u_k), \operatorname{diag} \sigma^2(u_k))

  with :math:`q(z \mid u)` the owning VAE's own encoder (:meth:`Prior.encode`), so gradients reach
  both the pseudo-inputs and the encoder. The pseudo-inputs ``pseudo_inputs`` ``(K, *data_shape)``
  live in ``params["params"]["prior"]``, drawn at :func:`lvmjax.vae.init` from
  N(``pseudo_input_mean``, ``pseudo_input_std`` squared) (the paper's 0.05 and 0.01 for
  MNIST) and, with ``pseudo_input_range=(lo, hi)``, clipped to it where they are used (the paper's
  hard-tanh to [0, 1]). The density is :func:`lvmjax.gmm.log_marginal` of the equal-weight
  diagonal mixture :meth:`mixture`. There is no closed-form KL: the ELBO uses the Monte Carlo KL
  :math:`\log q(z \mid x) - \log p(z)`, and the importance-sampled log-likelihood, the IWAE
  bound and the evaluation use :meth:`log_prob` as for every prior.

  Attributes:
    num_pseudo_inputs: K (500 in the paper).
    data_shape: the shape of one input, e.g. ``(784,)`` or ``(28, 28, 1)``.
    pseudo_input_mean, pseudo_input_std: the initial distribution of the pseudo-inputs.
    pseudo_input_range: ``(lo, hi)`` to clip the pseudo-inputs to, or None.

  Examples:
    >>> from lvmjax import vae
    >>> model = vae.VAE(vae.MLPEncoder(latent_dim=2, hidden=(8,)),
    ...                 vae.MLPDecoder(output_dim=4, hidden=(8,)), vae.BernoulliLikelihood(),
    ...                 prior=vae.VampPrior(num_pseudo_inputs=3, data_shape=(4,)))
    >>> params = vae.init(jax.random.key(0), model, jnp.zeros((1, 4)))
    >>> params["params"]["prior"]["pseudo_inputs"].shape
    (3, 4)

  References:
    J. M. Tomczak, M. Welling. VAE with a VampPrior. AISTATS 2018.
  """
  num_pseudo_inputs: int
  data_shape: Sequence[int]
  pseudo_input_mean: float = 0.05
  pseudo_input_std: float = 0.01
  pseudo_input_range: Optional[tuple[float, float]] = (0.0, 1.0)

  @nn.compact
  def __call__(self) -> jax.Array:
    """The pseudo-inputs ``(K, *data_shape)`` as the encoder sees them (clipped, if asked)."""
    k = int(self.num_pseudo_inputs)
    if k < 1:
      raise ValueError(f"VampPrior needs num_pseudo_inputs >= 1, got {k}.")
    mean, std = float(self.pseudo_input_mean), float(self.pseudo_input_std)
    u = self.param("pseudo_inputs",
                   lambda key, shape, dtype: mean + std * jax.random.normal(key, shape, dtype),
                   (k,) + tuple(int(d) for d in self.data_shape), jnp.float32)
    if self.pseudo_input_range is not None:
      lo, hi = self.pseudo_input_range
      u = jnp.clip(u, lo, hi)
    return u

  def mixture(self, dtype: Any = jnp.float32) -> gmm.GMMParams:
    r"""The equal-weight mixture :math:`(1/K, \mu(u_k), \sigma^2(u_k))` as ``"diag"`` GMMParams."""
    mean, log_variance = self.encode(self())
    mean = mean.astype(dtype)
    k = mean.shape[0]
    return gmm.GMMParams(jnp.full((k,), 1.0 / k, dtype), mean,
                         jnp.exp(log_variance.astype(dtype)), "diag")

  def log_prob(self, z: LatentBatch) -> LogDensity:
    r""":math:`\log \frac1K \sum_k \mathcal{N}(z; \mu(u_k), \sigma^2(u_k))`, ``(...,)``."""
    return gmm.log_marginal(self.mixture(z.dtype), z)

  def sample(self, key: Key, n: int, latent_dim: Optional[int]) -> LatentBatch:
    """``(n, L)`` draws: a pseudo-input k uniformly, then z ~ q(z | u_k)."""
    del latent_dim  # the encoder's
    dtype = jnp.promote_types(jnp.zeros(()).dtype, jnp.float32)
    z, _ = gmm.sample(self.mixture(dtype), key, n)
    return z


def pseudo_inputs_from_data(model: Any, params: Any, key: Key, x: DataBatchLike) -> Any:
  r"""The VampPrior's "data" initialisation: its K pseudo-inputs become K training points.

  Tomczak & Welling (2018) compare the pseudo-inputs drawn from N(0.05, 0.01\ :sup:`2`) (what
  :func:`lvmjax.vae.init` does) with pseudo-inputs started at random training points ("VampPrior
  data"). Here K distinct rows of ``x`` are drawn without replacement with ``key`` and put in
  ``params["params"]["prior"]["pseudo_inputs"]`` in its dtype; the other params are unchanged.

  Args:
    model: a :class:`lvmjax.vae.VAE` whose ``prior`` is a :class:`VampPrior`.
    params: its params (from :func:`lvmjax.vae.init`).
    key: PRNG key of the draw.
    x: ``(N, *data_shape)`` training data, N >= K; NumPy or JAX, any real dtype.

  Returns:
    The params with the new pseudo-inputs.

  Raises:
    ValueError: the model has no VampPrior, or ``x`` has the wrong shape or fewer than K rows.
  """
  prior = getattr(model, "prior", None)
  if not isinstance(prior, VampPrior):
    raise ValueError("pseudo_inputs_from_data needs a VAE whose prior is a VampPrior, got prior "
                     f"{type(prior).__name__}.")
  _checks.check_key(key)
  old = params["params"]["prior"]["pseudo_inputs"]
  k = int(prior.num_pseudo_inputs)
  data_shape = tuple(int(d) for d in prior.data_shape)
  if not hasattr(x, "shape"):
    x = np.asarray(x)
  shape = tuple(x.shape)
  if shape[1:] != data_shape:
    raise ValueError(f"x has shape {shape}; the VampPrior's pseudo-inputs have data_shape "
                     f"{data_shape}, so x must be (N, {', '.join(map(str, data_shape))}).")
  if shape[0] < k:
    raise ValueError(f"x has {shape[0]} rows, fewer than the {k} pseudo-inputs to start from "
                     "them; pass more data or lower num_pseudo_inputs.")
  rows = np.asarray(jax.random.choice(key, shape[0], (k,), replace=False))
  new = jnp.asarray(x[rows], old.dtype)  # only the K rows leave x (no copy of the whole data)
  prior_params = {**params["params"]["prior"], "pseudo_inputs": new}
  return {**params, "params": {**params["params"], "prior": prior_params}}


__all__ = ["Prior", "StandardNormal", "GaussianPrior", "VampPrior", "gaussian_kl",
           "diag_gaussian_log_prob", "pseudo_inputs_from_data"]
