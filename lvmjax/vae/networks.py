"""Encoder and decoder networks for the VAE family, as flax.linen modules.

Every encoder maps ``x`` of shape ``(*batch, *data_shape)`` to ``(mean, log_variance)`` of the
diagonal Gaussian q(z | x), each ``(*batch, latent_dim)``; every decoder maps ``z`` of shape
``(*batch, latent_dim)`` to the parameters of p(x | z) (Bernoulli logits or a Gaussian mean), of
shape ``(*batch, *data_shape)``. ``*batch`` may be empty (one point), which is how the VAE functions
call them under ``jax.vmap``. Any flax module (or ``nn.Module`` wrapping a plain function) that keeps
this contract can be plugged into :class:`lvmjax.vae.VAE`.

The MLP pair with ``hidden=(200, 200)``, ``activation="tanh"`` and ``latent_dim=50`` is the
one-stochastic-layer architecture of Burda, Grosse & Salakhutdinov (2015).
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Union[str, Callable[[jax.Array], jax.Array]]

_ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def get_activation(activation: Activation) -> Callable[[jax.Array], jax.Array]:
  """Returns the activation function named by ``activation`` (or ``activation`` if callable).

  Raises:
    ValueError: if the name is unknown.
  """
  if callable(activation):
    return activation
  if activation not in _ACTIVATIONS:
    raise ValueError(
        f"Unknown activation {activation!r}; expected a callable or one of "
        f"{', '.join(map(repr, sorted(_ACTIVATIONS)))}.")
  return _ACTIVATIONS[activation]


class MLPEncoder(nn.Module):
  """MLP encoder: ``x (..., D) -> (mean, log_variance)``, each ``(..., latent_dim)``.

  Attributes:
    latent_dim: dimension L of z.
    hidden: widths of the hidden layers, e.g. ``(200, 200)`` for Burda et al. (2015).
    activation: name (``"tanh"``, ``"relu"``, ...) or callable.
  """
  latent_dim: int
  hidden: Sequence[int] = (200, 200)
  activation: Activation = "tanh"

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    act = get_activation(self.activation)
    h = x
    for i, width in enumerate(self.hidden):
      h = act(nn.Dense(width, name=f"hidden_{i}")(h))
    mean = nn.Dense(self.latent_dim, name="mean")(h)
    log_variance = nn.Dense(self.latent_dim, name="log_variance")(h)
    return mean, log_variance


class MLPDecoder(nn.Module):
  """MLP decoder: ``z (..., L) -> (..., output_dim)`` (logits or Gaussian mean).

  Attributes:
    output_dim: dimension D of x.
    hidden: widths of the hidden layers, e.g. ``(200, 200)``.
    activation: name or callable.
  """
  output_dim: int
  hidden: Sequence[int] = (200, 200)
  activation: Activation = "tanh"

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = get_activation(self.activation)
    h = z
    for i, width in enumerate(self.hidden):
      h = act(nn.Dense(width, name=f"hidden_{i}")(h))
    return nn.Dense(self.output_dim, name="output")(h)


class ConvEncoder(nn.Module):
  """Convolutional encoder for 28x28x1 images: ``x (..., 28, 28, 1) -> (mean, log_variance)``.

  Two stride-2 3x3 convolutions (28 -> 14 -> 7), a dense layer, then the two Gaussian heads.

  Attributes:
    latent_dim: dimension L of z.
    features: channels of the two convolutions.
    dense: width of the dense layer after the convolutions.
    activation: name or callable.
  """
  latent_dim: int
  features: Sequence[int] = (32, 64)
  dense: int = 256
  activation: Activation = "relu"

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    act = get_activation(self.activation)
    h = x
    for i, f in enumerate(self.features):
      h = act(nn.Conv(f, (3, 3), strides=(2, 2), padding="SAME", name=f"conv_{i}")(h))
    h = h.reshape(h.shape[:-3] + (-1,))
    h = act(nn.Dense(self.dense, name="dense")(h))
    mean = nn.Dense(self.latent_dim, name="mean")(h)
    log_variance = nn.Dense(self.latent_dim, name="log_variance")(h)
    return mean, log_variance


class ConvDecoder(nn.Module):
  """Transposed-convolution decoder: ``z (..., L) -> (..., 28, 28, 1)`` logits or means.

  Attributes:
    features: channels after the dense layer (at 7x7) and after the first upsampling (14x14).
    activation: name or callable.
  """
  features: Sequence[int] = (64, 32)
  activation: Activation = "relu"

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = get_activation(self.activation)
    f0, f1 = self.features
    h = act(nn.Dense(7 * 7 * f0, name="dense")(z))
    h = h.reshape(h.shape[:-1] + (7, 7, f0))
    h = act(nn.ConvTranspose(f1, (3, 3), strides=(2, 2), padding="SAME", name="deconv_0")(h))
    return nn.ConvTranspose(1, (3, 3), strides=(2, 2), padding="SAME", name="deconv_1")(h)


class LinearEncoder(nn.Module):
  """Linear-Gaussian encoder: mean ``A x + b``, log-variance a free vector independent of x.

  This family contains the exact posterior of a PPCA model whose weight has orthogonal columns
  (see :mod:`lvmjax.ppca`), so with :class:`LinearDecoder` and a fixed-scale Gaussian likelihood
  the VAE is PPCA and its ELBO can reach log p(x).

  Attributes:
    latent_dim: dimension L of z.
  """
  latent_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = nn.Dense(self.latent_dim, name="mean")(x)
    log_variance = self.param("log_variance", nn.initializers.zeros, (self.latent_dim,),
                              mean.dtype)
    return mean, jnp.broadcast_to(log_variance.astype(mean.dtype), mean.shape)


class LinearDecoder(nn.Module):
  """Linear decoder ``z -> W z + mu``: the PPCA / factor-analysis mean of x given z.

  Params: ``{"output": {"kernel": W^T (L, D), "bias": mu (D,)}}``.

  Attributes:
    output_dim: dimension D of x.
  """
  output_dim: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    return nn.Dense(self.output_dim, name="output")(z)
