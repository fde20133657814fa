"""Likelihoods p(x | z) as flax modules returning distrax distributions.

A likelihood module is called as ``likelihood(decoder_output, event_ndims)`` and returns a distrax
distribution whose event shape is the last ``event_ndims`` axes of ``decoder_output`` (the data
shape), so ``log_prob(x)`` sums over pixels / features and keeps any batch axes. Modules (rather
than plain functions) so that a learned observation scale is an ordinary parameter in the VAE's
params pytree.
"""
from __future__ import annotations

from typing import Optional

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
  r"""``log(1 + exp(x))``, with one exponential shared by the value and the derivative.

  .. math::
     \operatorname{softplus}(x) = \max(x, 0) + \log(1 + e^{-|x|}),
     \qquad \operatorname{softplus}'(x) = \sigma(x)
       = \frac{[x \ge 0] + [x < 0]\, e^{-|x|}}{1 + e^{-|x|}}

  Equal to ``jax.nn.softplus`` (to float rounding; the same at +-inf and NaN) and its gradient,
  and cheaper on CPU: ``jax.nn.softplus`` is ``logaddexp(x, 0)``, whose value guards against
  infinities and whose derivative evaluates a second exponential, and the Bernoulli
  log-likelihood of a 784-pixel batch spends a noticeable part of a small VAE's training step
  here.
  """
  return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  e = jnp.exp(-jnp.abs(x))
  value = jnp.maximum(x, 0) + jnp.log1p(e)
  sigmoid = jnp.where(x >= 0, jnp.ones_like(e), e) / (1 + e)
  return value, sigmoid * dx


class BernoulliLogits(distrax.Bernoulli):
  r"""``distrax.Bernoulli`` from logits with a one-softplus log-probability.

  .. math:: \log p(x) = x\,l - \operatorname{softplus}(l)

  Equal to distrax's own formula for x in {0, 1} and finite logits, and cheaper (distrax
  evaluates two softplus terms and two masked products), which matters in the training step.
  The softplus is :func:`softplus` (one exponential for value and gradient).
  """

  def __init__(self, logits: jax.Array):
    super().__init__(logits=logits)

  def log_prob(self, value: jax.Array) -> jax.Array:
    logits = self.logits
    return value * logits - softplus(logits)


class BernoulliLikelihood(nn.Module):
  r"""Bernoulli likelihood for binary data; the decoder output is the logits.

  .. math::
     \log p(x \mid z) = \sum_d x_d \log \sigma(l_d) + (1 - x_d) \log(1 - \sigma(l_d))
  """

  @nn.compact
  def __call__(self, logits: jax.Array, event_ndims: int) -> distrax.Distribution:
    return distrax.Independent(BernoulliLogits(logits),
                               reinterpreted_batch_ndims=event_ndims)


class GaussianLikelihood(nn.Module):
  r"""Diagonal Gaussian likelihood for real data; the decoder output is the mean.

  .. math::
     \log p(x \mid z) = \sum_d \log \mathcal{N}(x_d; \mu_d(z), s_d^2)

  Attributes:
    scale: a fixed standard deviation s (same for every feature), or ``None`` to learn one
      standard deviation per feature, stored as the parameter ``log_scale`` (data shape,
      initialised to ``init_log_scale``).
    init_log_scale: initial value of the learned ``log_scale``.
    min_scale: floor added to the learned scale so that the likelihood stays bounded.
  """
  scale: Optional[float] = None
  init_log_scale: float = 0.0
  min_scale: float = 1e-3

  @nn.compact
  def __call__(self, mean: jax.Array, event_ndims: int) -> distrax.Distribution:
    if self.scale is None:
      event_shape = mean.shape[mean.ndim - event_ndims:]
      log_scale = self.param("log_scale", nn.initializers.constant(self.init_log_scale),
                             event_shape, jnp.float32)
      scale = jnp.exp(log_scale.astype(mean.dtype)) + self.min_scale
      scale = jnp.broadcast_to(scale, mean.shape)
    else:
      if not self.scale > 0:
        raise ValueError(f"GaussianLikelihood.scale must be > 0 or None (learned), got {self.scale}.")
      scale = jnp.full(mean.shape, self.scale, mean.dtype)
    return distrax.Independent(distrax.Normal(mean, scale), reinterpreted_batch_ndims=event_ndims)
