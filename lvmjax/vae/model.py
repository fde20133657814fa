r"""The VAE model description and its pure functions: ELBO, IWAE bound, log p(x), generation.

A model is a :class:`VAE` flax module holding an encoder, a decoder and a likelihood module. It is
only a *description*: every computation is a pure function of ``(model, params, key, x)`` that
returns one value per data point, e.g.

.. math::
   \mathrm{ELBO}(x) = \mathbb{E}_{q(z|x)}[\log p(x \mid z)] - \beta\,\mathrm{KL}(q(z \mid x) \,\|\, p(z)),
   \qquad q(z \mid x) = \mathcal{N}(\mu(x), \mathrm{diag}\,\sigma^2(x)),

with the prior p(z) the model's ``prior`` module (:mod:`lvmjax.vae.priors`; N(0, I) by default).

Each function is the one-point formula applied to every point and latent sample: the networks run
on the whole ``(N, S)`` batch at once (the decoder on the N * S latents as one batch axis), which is
what ``jax.vmap`` of the one-point formula computes, written batched because XLA:CPU runs the plain
matrix products faster. Point n's noise comes from its own key ``jax.random.split(key, N)[n]``.
The functions compose with a user's own ``jit``, ``vmap`` and ``grad``: called eagerly, they check
their arguments, then run their numbers as one jitted program, which a user's ``jit`` inlines.
``x`` always has a leading batch axis: ``(N, *data_shape)``, e.g. ``(N, 784)`` for an MLP and
``(N, 28, 28, 1)`` for the conv pair.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import distrax
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lvmjax import _checks
from lvmjax.types import DataBatch, DataBatchLike, Key, LatentBatch, Latents, LogDensity
from lvmjax.vae.priors import StandardNormal

Params = Any
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class VAE(nn.Module):
  """A variational autoencoder: encoder q(z|x), decoder p(x|z), likelihood and prior p(z).

  The module is a container; use the functions of :mod:`lvmjax.vae` on it. ``model.init(key, x)``
  (or :func:`init`) runs the encoder, then the decoder and the prior's ``log_prob`` on the encoder
  mean, so it creates every parameter: ``{"params": {"encoder": ..., "decoder": ...,
  "likelihood": ..., "prior": ...}}`` (no ``"prior"`` entry for a prior without parameters, such
  as the default standard normal).

  Attributes:
    encoder: module mapping ``x`` to ``(mean, log_variance)`` of q(z | x).
    decoder: module mapping ``z`` to the likelihood's parameters (logits, mean).
    likelihood: a likelihood module (:class:`BernoulliLikelihood`, :class:`GaussianLikelihood`),
      called as ``likelihood(decoder_output, event_ndims)``.
    prior: a prior module with ``log_prob(z)``, ``sample(key, n, latent_dim)`` and optionally
      ``kl(mean, log_variance)`` (:mod:`lvmjax.vae.priors`); None (the default) is
      :class:`StandardNormal`, N(0, I), with the numbers of the VAE before priors were pluggable.

  Examples:
    >>> from lvmjax import vae
    >>> model = vae.VAE(vae.MLPEncoder(latent_dim=2, hidden=(16,)),
    ...                 vae.MLPDecoder(output_dim=4, hidden=(16,)), vae.BernoulliLikelihood())
    >>> params = vae.init(jax.random.key(0), model, jnp.zeros((1, 4)))
    >>> vae.elbo(model, params, jax.random.key(1), jnp.ones((3, 4))).shape
    (3,)
  """
  encoder: nn.Module
  decoder: nn.Module
  likelihood: nn.Module
  prior: Optional[nn.Module] = None

  def __post_init__(self):
    if self.prior is None:  # before flax registers the submodules
      object.__setattr__(self, "prior", StandardNormal())
    elif not (isinstance(self.prior, nn.Module) and callable(getattr(self.prior, "log_prob", None))
              and callable(getattr(self.prior, "sample", None))):
      raise ValueError(
          f"prior must be None (the standard normal) or a flax module with log_prob(z) and "
          f"sample(key, n, latent_dim) methods, e.g. vae.GaussianPrior(); got {self.prior!r}.")
    super().__post_init__()

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.encoder(x)

  def prior_log_prob(self, z: jax.Array) -> jax.Array:
    """log p(z) of the prior, ``(...,)`` for ``z (..., L)``, at least float32."""
    return _upcast(self.prior.log_prob(z))

  def prior_sample(self, key: jax.Array, n: int, latent_dim: Optional[int]) -> jax.Array:
    """``(n, L)`` draws from the prior."""
    return self.prior.sample(key, n, latent_dim)

  def prior_kl(self, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """The prior's closed-form KL(q || p), ``(...,)``; only for priors with a ``kl`` method."""
    return _upcast(self.prior.kl(mean, log_variance))

  def decode(self, z: jax.Array, event_ndims: Optional[int] = None) -> distrax.Distribution:
    out = _upcast(self.decoder(z))
    if event_ndims is None:
      event_ndims = out.ndim - (z.ndim - 1)
    return self.likelihood(out, event_ndims)

  def __call__(self, x: jax.Array) -> distrax.Distribution:
    mean, _ = self.encoder(x)
    mean = _upcast(mean)
    dist = self.decode(mean)
    self.prior.log_prob(mean)  # creates the prior's parameters, if it has any
    return dist


class ElboTerms(NamedTuple):
  """Per-point ELBO and its two parts (each ``(N,)``): ``elbo = reconstruction - beta * kl``."""
  elbo: jax.Array
  reconstruction: jax.Array
  kl: jax.Array


# ----------------------------------------------------------------------------------------------
# helpers


def _upcast(x: jax.Array) -> jax.Array:
  """Casts low-precision floats (bfloat16, float16) up to float32; float64 stays float64."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def cast_params(params: Params, dtype: Any) -> Params:
  """Casts the floating leaves of ``params`` to ``dtype`` (``None``: unchanged)."""
  if dtype is None:
    return params
  return jax.tree_util.tree_map(
      lambda p: p.astype(dtype) if jnp.issubdtype(jnp.result_type(p), jnp.floating) else p,
      params)


def _one_program(static_argnums: tuple[int, ...]) -> Callable[[Callable], Callable]:
  """Runs a public function's checked core as one jitted program per call.

  Called eagerly, JAX compiles every operation on its own (a first ``vae.elbo`` of an MLP VAE:
  ~2 s of small compilations); jitted, the core compiles once per model, shape and option. Under
  a caller's ``jit``, ``vmap`` or ``grad`` the inner ``jit`` is inlined. The model (argument 0)
  and the Python options in ``static_argnums`` are static; a model that cannot be hashed (a user
  module with an array field) runs operation by operation, as before.
  """
  def wrap(fn):
    jitted = jax.jit(fn, static_argnums=static_argnums)

    @functools.wraps(fn)
    def call(*args):
      try:
        hash(args[0])
      except TypeError:
        return fn(*args)
      return jitted(*args)
    return call
  return wrap


def _float_dtype(dtype: Any) -> Any:
  """The float dtype data of ``dtype`` is computed in (float32, or float64 if x64 and given)."""
  if jnp.issubdtype(dtype, jnp.floating):
    return jnp.promote_types(dtype, jnp.float32)
  return jnp.float32


def _check_x(x: Any, name: str = "x") -> None:
  ndim = np.ndim(x)
  if ndim < 2:
    raise ValueError(
        f"{name} must have a leading batch axis, shape (num_points, *data_shape); got shape "
        f"{np.shape(x)}. For a single point use x[None].")
  _checks.check_data(x, name, ndim=ndim)


def has_analytic_kl(model: VAE) -> bool:
  """Whether the model's prior has a closed-form ``kl(mean, log_variance)``."""
  return callable(getattr(model.prior, "kl", None))


def _as_float(x: Any, compute_dtype: Any = None) -> jax.Array:
  x = jnp.asarray(x)
  x = x.astype(_float_dtype(x.dtype))
  return x if compute_dtype is None else x.astype(compute_dtype)


def _apply(model: VAE, params: Params, *args, method: str, what: str):
  try:
    return model.apply(params, *args, method=method)
  except (TypeError, ValueError, flax.errors.FlaxError) as e:
    shapes = [np.shape(a) for a in args if hasattr(a, "shape")]
    raise ValueError(
        f"The model's {what} could not be applied to inputs of shape {shapes}: "
        f"{e}. Check that x / z match the shapes the model was initialised with.") from e


def _encode(model, params, x, compute_dtype):
  """q(z|x) for a batch x (N, *data_shape): (mean, log_variance), each (N, L), >= float32."""
  mean, log_variance = _apply(model, params, x if compute_dtype is None else
                              x.astype(compute_dtype), method="encode", what="encoder")
  return _upcast(mean), _upcast(log_variance)


def _log_px_given_z(model, params, z, x, compute_dtype):
  """log p(x_n | z_ns) for x (N, *data_shape) and z (N, S, L): (N, S).

  The decoder runs on the N * S latents at once, as one batch axis (the vmap of the one-point
  formula, written batched because XLA:CPU runs plain 2-d matrix products faster than vmapped or
  3-d ones; flattening (N, S) is free, a bitcast).
  """
  n, s = z.shape[:2]
  zc = z if compute_dtype is None else z.astype(compute_dtype)
  zc = zc.reshape((n * s,) + z.shape[2:])
  data_ndim = x.ndim - 1
  dist = _apply(model, params, zc, data_ndim, method="decode", what="decoder")
  if tuple(dist.event_shape) != tuple(x.shape[1:]):
    raise ValueError(
        f"The decoder produces data of shape {tuple(dist.event_shape)} but x has per-point shape "
        f"{tuple(x.shape[1:])}; set the decoder's output shape to match the data.")
  value = jnp.broadcast_to(x[:, None], (n, s) + x.shape[1:]).reshape((n * s,) + x.shape[1:])
  if jnp.issubdtype(dist.dtype, jnp.floating):
    value = value.astype(dist.dtype)
  return dist.log_prob(value).reshape(n, s)


def _prior_log_prob(model, params, z):
  """log p(z) of the model's prior for z (..., L): (...)."""
  return _apply(model, params, z, method="prior_log_prob", what="prior")


def _log_q(eps, log_variance):
  """log q(z_ns | x_n) of the reparameterised z = mean + sigma * eps: (N, S)."""
  return jnp.sum(-0.5 * jnp.square(eps) - 0.5 * log_variance[:, None, :] - _HALF_LOG_2PI, axis=-1)


def _point_noise(keys, num_samples, latent_dim, dtype):
  """Standard normal noise (N, S, L), point n's from its own key keys[n]."""
  return jax.vmap(lambda k: jax.random.normal(k, (num_samples, latent_dim), dtype))(keys)


def _log_weights(model, params, keys, x, num_samples, compute_dtype, encoding=None):
  """Importance log-weights log p(x_n, z_ns) - log q(z_ns | x_n): (N, S)."""
  mean, log_variance = encoding or _encode(model, params, x, compute_dtype)
  eps = _point_noise(keys, num_samples, mean.shape[-1], mean.dtype)
  z = mean[:, None, :] + jnp.exp(0.5 * log_variance)[:, None, :] * eps
  log_px = _log_px_given_z(model, params, z, x, compute_dtype)
  return log_px + _prior_log_prob(model, params, z) - _log_q(eps, log_variance)


def _elbo_terms(model, params, keys, x, num_samples, beta, analytic_kl, compute_dtype):
  mean, log_variance = _encode(model, params, x, compute_dtype)
  eps = _point_noise(keys, num_samples, mean.shape[-1], mean.dtype)
  z = mean[:, None, :] + jnp.exp(0.5 * log_variance)[:, None, :] * eps
  reconstruction = jnp.mean(_log_px_given_z(model, params, z, x, compute_dtype), axis=1)
  if analytic_kl and has_analytic_kl(model):
    kl = _apply(model, params, mean, log_variance, method="prior_kl", what="prior")
  else:
    kl = jnp.mean(_log_q(eps, log_variance) - _prior_log_prob(model, params, z), axis=1)
  return ElboTerms(reconstruction - beta * kl, reconstruction, kl)


# ----------------------------------------------------------------------------------------------
# public API


def init(key: Key, model: VAE, example_x: DataBatchLike) -> Params:
  """Initialises the parameters of ``model`` from a batch of example data.

  Like ``model.init(key, x)`` and like the fits, which have no params yet, it takes the key first.

  Args:
    key: PRNG key for the initial weights.
    model: a :class:`VAE`.
    example_x: ``(N, *data_shape)``; only its shape and dtype matter.

  Returns:
    The params pytree ``{"params": {...}}``.
  """
  _checks.check_key(key)
  _check_x(example_x, "example_x")
  x = _as_float(example_x)[:1]
  try:  # jitted: eager initialisers compile op by op, which is slow on CPU
    return jax.jit(model.init)(key, x)
  except flax.errors.FlaxError as e:
    raise ValueError(f"Could not initialise the model on data of shape {x.shape[1:]}: {e}") from e


def encode(model: VAE, params: Params, x: DataBatchLike) -> tuple[Latents, Latents]:
  """Mean and log-variance of q(z | x), each ``(N, L)``."""
  _check_x(x)
  return _encode_one(model, params, _as_float(x))


@_one_program(static_argnums=(0,))
def _encode_one(model, params, x):
  return _encode(model, params, x, None)


def decode(model: VAE, params: Params, z: Latents) -> distrax.Distribution:
  """p(x | z) for a batch ``z (N, L)``: a distrax distribution with batch shape ``(N,)``.

  Use ``.mean()`` for the expected image (Bernoulli probabilities, Gaussian mean), ``.mode()`` or
  ``.sample(seed=key)``.
  """
  _check_z(z)
  return _apply(model, params, _as_float(z), method="decode", what="decoder")


def _check_z(z: Any) -> None:
  if np.ndim(z) != 2:
    raise ValueError(f"z must have shape (num_points, latent_dim), got {np.shape(z)}.")
  _checks.check_data(z, "z", ndim=2)


def reconstruct(model: VAE, params: Params, x: DataBatchLike) -> DataBatch:
  """Mean of p(x | z) at z = the encoder mean: ``(N, *data_shape)``."""
  _check_x(x)
  return _reconstruct(model, params, _as_float(x))


@_one_program(static_argnums=(0,))
def _reconstruct(model, params, x):
  mean, _ = _encode(model, params, x, None)
  return _apply(model, params, mean, method="decode", what="decoder").mean()


def sample_posterior(model: VAE, params: Params, key: Key, x: DataBatchLike,
                     num_samples: int) -> LatentBatch:
  """Draws z ~ q(z | x): ``(num_samples, N, L)``."""
  _checks.check_key(key)
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  mean, log_variance = encode(model, params, x)
  eps = jax.random.normal(key, (num_samples,) + mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * log_variance) * eps


def sample(model: VAE, params: Params, key: Key, n: int, *, latent_dim: Optional[int] = None,
           use_mean: bool = False) -> tuple[DataBatch, Latents]:
  """Generates from the model: z ~ p(z) (the model's prior), x ~ p(x | z).

  Args:
    model: the :class:`VAE`.
    params: its params.
    key: PRNG key.
    n: number of samples.
    latent_dim: L; read from the encoder when it is an ``MLPEncoder``/``ConvEncoder``/
      ``LinearEncoder`` (any module with a ``latent_dim`` attribute), else required by priors
      that cannot tell L from their parameters (the standard normal).
    use_mean: return the mean of p(x | z) (e.g. Bernoulli probabilities) instead of a draw.

  Returns:
    ``(x (n, *data_shape), z (n, L))``.
  """
  _checks.check_key(key)
  n = _checks.check_positive_int(n, "n")
  if latent_dim is None:
    latent_dim = getattr(model.encoder, "latent_dim", None)
  else:
    latent_dim = _checks.check_positive_int(latent_dim, "latent_dim")
  return _sample(model, params, key, n, latent_dim, use_mean)


@_one_program(static_argnums=(0, 3, 4, 5))
def _sample(model, params, key, n, latent_dim, use_mean):
  key_z, key_x = jax.random.split(key)
  z = model.apply(params, key_z, n, latent_dim, method="prior_sample")
  return sample_given(model, params, key_x, z, use_mean=use_mean), z


def sample_given(model: VAE, params: Params, key: Key, z: Latents, *,
                 use_mean: bool = False) -> DataBatch:
  """Generates x ~ p(x | z) for chosen latents ``z (N, L)``: ``(N, *data_shape)``."""
  _checks.check_key(key)
  _check_z(z)
  return _sample_given(model, params, key, _as_float(z), bool(use_mean))


@_one_program(static_argnums=(0, 4))
def _sample_given(model, params, key, z, use_mean):
  dist = _apply(model, params, z, method="decode", what="decoder")
  return dist.mean() if use_mean else dist.sample(seed=key)


def interpolate(model: VAE, params: Params, x1: jax.typing.ArrayLike, x2: jax.typing.ArrayLike,
                num_steps: int = 10) -> DataBatch:
  r"""Decoded straight line between the encodings of two points.

  .. math:: z_t = (1 - t)\,\mu(x_1) + t\,\mu(x_2), \quad t = 0, \tfrac{1}{n-1}, \dots, 1

  Args:
    model, params: the VAE.
    x1, x2: single points of the data shape (no batch axis).
    num_steps: number of points on the line (>= 2).

  Returns:
    ``(num_steps, *data_shape)``: the mean of p(x | z_t).
  """
  num_steps = _checks.check_positive_int(num_steps, "num_steps", minimum=2)
  x1, x2 = jnp.asarray(x1), jnp.asarray(x2)
  if x1.shape != x2.shape:
    raise ValueError(f"x1 and x2 must have the same shape, got {x1.shape} and {x2.shape}.")
  return _interpolate(model, params, x1, x2, num_steps)


@_one_program(static_argnums=(0, 4))
def _interpolate(model, params, x1, x2, num_steps):
  mean, _ = encode(model, params, jnp.stack([x1, x2]))
  t = jnp.linspace(0.0, 1.0, num_steps, dtype=mean.dtype)[:, None]
  z = (1.0 - t) * mean[0] + t * mean[1]
  return decode(model, params, z).mean()


def elbo_terms(model: VAE, params: Params, key: Key, x: DataBatchLike,
               num_samples: int = 1, beta: float = 1.0, analytic_kl: bool = True, *,
               compute_dtype: Any = None) -> ElboTerms:
  r"""Per-point ELBO, reconstruction term and KL term (see :func:`elbo`).

  Returns:
    :class:`ElboTerms` of ``(N,)`` arrays.
  """
  _checks.check_key(key)
  _check_x(x)
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  _checks.check_nonnegative(beta, "beta")
  return _elbo_terms_of_key(model, params, key, _as_float(x), num_samples, beta, bool(analytic_kl),
                            compute_dtype)


@_one_program(static_argnums=(0, 4, 6, 7))
def _elbo_terms_of_key(model, params, key, x, num_samples, beta, analytic_kl, compute_dtype):
  keys = jax.random.split(key, x.shape[0])
  return _elbo_terms(model, cast_params(params, compute_dtype), keys, x, num_samples, beta,
                     analytic_kl, compute_dtype)


def elbo(model: VAE, params: Params, key: Key, x: DataBatchLike,
         num_samples: int = 1, beta: float = 1.0, analytic_kl: bool = True, *,
         compute_dtype: Any = None) -> LogDensity:
  r"""Per-point evidence lower bound, reparameterised.

  .. math::
     \mathrm{ELBO}_\beta(x) = \frac1S \sum_{s=1}^S \log p(x \mid z_s)
        - \beta\,\mathrm{KL}(q(z \mid x) \,\|\, p(z)),
     \qquad z_s = \mu(x) + \sigma(x) \odot \epsilon_s,\ \epsilon_s \sim \mathcal{N}(0, I)

  The KL is the prior's closed form where it has one (``prior.kl``: the standard normal, the
  learnable Gaussian), else, or with ``analytic_kl=False``, the Monte-Carlo estimate
  :math:`\frac1S \sum_s \log q(z_s \mid x) - \log p(z_s)` on the same samples.

  Args:
    model: the :class:`VAE`.
    params: its params pytree.
    key: PRNG key (one sub-key per point is split from it).
    x: ``(N, *data_shape)``.
    num_samples: S >= 1 latent samples per point.
    beta: weight of the KL term (1 is the ELBO; beta-VAE otherwise).
    analytic_kl: the prior's closed-form KL where it has one (True) or the Monte-Carlo KL
      (False).
    compute_dtype: e.g. ``jnp.bfloat16``: params and activations are cast to it, log-probs are
      computed in float32.

  Returns:
    ``(N,)`` ELBO per point, in nats.

  Raises:
    ValueError: x without a batch axis, not finite, or not matching the model; num_samples < 1.
  """
  return elbo_terms(model, params, key, x, num_samples, beta, analytic_kl,
                    compute_dtype=compute_dtype).elbo


def iwae_bound(model: VAE, params: Params, key: Key, x: DataBatchLike,
               num_samples: int, *, compute_dtype: Any = None) -> LogDensity:
  r"""Per-point importance-weighted bound of Burda et al. (2015); equals the ELBO at k = 1.

  .. math::
     \mathcal{L}_k(x) = \log \frac1k \sum_{s=1}^k \frac{p(x, z_s)}{q(z_s \mid x)},
     \qquad z_s \sim q(z \mid x)

  Args:
    model, params: the VAE.
    key: PRNG key.
    x: ``(N, *data_shape)``.
    num_samples: k >= 1.
    compute_dtype: as in :func:`elbo`.

  Returns:
    ``(N,)`` bound per point. ELBO <= L_k <= L_{k+1} <= log p(x) in expectation.
  """
  _checks.check_key(key)
  _check_x(x)
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  return _iwae_bound(model, params, key, _as_float(x), num_samples, compute_dtype)


@_one_program(static_argnums=(0, 4, 5))
def _iwae_bound(model, params, key, x, num_samples, compute_dtype):
  keys = jax.random.split(key, x.shape[0])
  log_w = _log_weights(model, cast_params(params, compute_dtype), keys, x, num_samples,
                       compute_dtype)
  return jax.nn.logsumexp(log_w, axis=1) - jnp.log(jnp.asarray(num_samples, log_w.dtype))


def log_likelihood(model: VAE, params: Params, key: Key, x: DataBatchLike,
                   num_samples: int = 5000, chunk_size: int = 500) -> LogDensity:
  r"""Importance-sampled estimate of log p(x) per point, with q(z | x) as the proposal.

  .. math::
     \log \hat p(x) = \log \frac1K \sum_{s=1}^K \frac{p(x \mid z_s)\, p(z_s)}{q(z_s \mid x)}

  This is the IWAE bound at k = K, computed in chunks of ``chunk_size`` samples (``lax.scan``
  with a running log-sum-exp), so memory is O(N * chunk_size) however large K is. It is the
  standard test log-likelihood of Burda et al. (2015) at K = 5000.

  Args:
    model, params: the VAE.
    key: PRNG key.
    x: ``(N, *data_shape)``.
    num_samples: K >= 1 importance samples.
    chunk_size: samples per chunk (>= 1); the last chunk is masked when it does not divide K.

  Returns:
    ``(N,)`` estimates of log p(x) (biased low, consistent as K grows).
  """
  _checks.check_key(key)
  _check_x(x)
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  chunk_size = min(_checks.check_positive_int(chunk_size, "chunk_size"), num_samples)
  return _log_likelihood(model, params, key, _as_float(x), num_samples, chunk_size)


@_one_program(static_argnums=(0, 4, 5))
def _log_likelihood(model, params, key, x, num_samples, chunk_size):
  num_chunks = -(-num_samples // chunk_size)
  # point n, chunk c draws from split(split(key, N)[n], C)[c]
  chunk_keys = jax.vmap(lambda k: jax.random.split(k, num_chunks))(
      jax.random.split(key, x.shape[0]))                                # (N, C)
  encoding = _encode(model, params, x, None)
  dtype = encoding[0].dtype

  def body(carry, inputs):
    running_max, running_sum = carry
    i, keys = inputs
    log_w = _log_weights(model, params, keys, x, chunk_size, None, encoding)   # (N, chunk)
    valid = i * chunk_size + jnp.arange(chunk_size) < num_samples
    log_w = jnp.where(valid[None, :], log_w, -jnp.inf)
    new_max = jnp.maximum(running_max, jnp.max(log_w, axis=1))
    running_sum = (running_sum * jnp.exp(running_max - new_max)
                   + jnp.sum(jnp.exp(log_w - new_max[:, None]), axis=1))
    return (new_max, running_sum), None

  n = x.shape[0]
  init_carry = (jnp.full((n,), -jnp.inf, dtype), jnp.zeros((n,), dtype))
  (m, s), _ = jax.lax.scan(body, init_carry, (jnp.arange(num_chunks), chunk_keys.swapaxes(0, 1)))
  return m + jnp.log(s) - jnp.log(jnp.asarray(num_samples, dtype))


def autoencoder_log_likelihood(model: VAE, params: Params, x: DataBatchLike, *,
                               compute_dtype: Any = None) -> LogDensity:
  r"""Per-point reconstruction log-likelihood of the deterministic autoencoder.

  The encoder's variance is ignored; z is the encoder mean:

  .. math:: \log p(x \mid z = \mu(x))

  Its negative mean is the autoencoder's training loss (``objective="autoencoder"``).

  Returns:
    ``(N,)``.
  """
  _check_x(x)
  x = _as_float(x)
  params = cast_params(params, compute_dtype)

  mean, _ = _encode(model, params, x, compute_dtype)
  return _log_px_given_z(model, params, mean[:, None, :], x, compute_dtype)[:, 0]


class LatentMoments(NamedTuple):
  r"""Additive moments of the posterior means :math:`\mu(x)` over a set of points.

  Sums (float64), so that moments of batches, or of the processes' blocks of a data set, add up
  to those of the whole set (``sharding.process_sum`` of the tuple).

  Attributes:
    count: number of points.
    total: ``(L,)`` :math:`\sum_x \mu(x)`.
    total_square: ``(L,)`` :math:`\sum_x \mu(x)^2`.
  """
  count: int
  total: np.ndarray
  total_square: np.ndarray


def _posterior_mean_batches(model: VAE, params: Params, x: DataBatchLike, batch_size: Any):
  """The encoder means of ``x``, ``batch_size`` points at a time, as host arrays."""
  _check_x(x)
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  for i in range(0, np.shape(x)[0], batch_size):
    yield np.asarray(encode(model, params, x[i:i + batch_size])[0])


def posterior_means(model: VAE, params: Params, x: DataBatchLike,
                    batch_size: int = 1000) -> np.ndarray:
  r"""``(N, L)`` encoder means :math:`\mu(x)` of ``x (N, *data_shape)``, encoded in batches of
  ``batch_size`` points (a data set larger than one program's memory), on the host."""
  return np.concatenate(list(_posterior_mean_batches(model, params, x, batch_size)))


def posterior_mean_moments(model: VAE, params: Params, x: DataBatchLike,
                           batch_size: int = 1000) -> LatentMoments:
  """:class:`LatentMoments` of the encoder means of ``x (N, *data_shape)``, encoded in batches."""
  total = total_square = 0.0
  for means in _posterior_mean_batches(model, params, x, batch_size):
    means = means.astype(np.float64)
    total = total + means.sum(axis=0)
    total_square = total_square + np.square(means).sum(axis=0)
  return LatentMoments(np.shape(x)[0], total, total_square)


def active_units_from_moments(moments: LatentMoments, threshold: float = 0.01
                              ) -> tuple[jax.Array, jax.Array]:
  r"""``(count, variances)`` of :func:`active_units` from (possibly summed) moments.

  .. math:: \mathrm{Var}_x(\mu_u) = \frac{\sum_x \mu_u(x)^2}{N} - \Big(\frac{\sum_x \mu_u(x)}{N}\Big)^2
  """
  count, total, total_square = (np.asarray(m, np.float64) for m in moments)
  variances = np.maximum(total_square / count - np.square(total / count), 0.0)
  return jnp.asarray(np.sum(variances > threshold)), jnp.asarray(variances)


def active_units(model: VAE, params: Params, x: DataBatchLike, threshold: float = 0.01,
                 batch_size: int = 1000) -> tuple[jax.Array, jax.Array]:
  r"""Number of active latent units (Burda et al., 2015).

  .. math:: A_u = \mathrm{Var}_{x}\left(\mathbb{E}_{q(z \mid x)}[z_u]\right) > \text{threshold}

  The variances come from the float64 :func:`posterior_mean_moments` (the same computation as
  the evaluation across processes).

  Args:
    model, params: the VAE.
    x: ``(N, *data_shape)``, typically the test set.
    threshold: activity threshold (0.01 in the paper).
    batch_size: points encoded at a time.

  Returns:
    ``(count, variances)``: int scalar, and ``(L,)`` variance of the posterior mean per unit.
  """
  return active_units_from_moments(posterior_mean_moments(model, params, x, batch_size),
                                   threshold)
