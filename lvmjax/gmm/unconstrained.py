r"""An unconstrained parameterisation of the Gaussian mixture, for fitting by gradient descent.

EM keeps a mixture valid by construction; a gradient step on :class:`~lvmjax.gmm.GMMParams` does
not (weights leave the simplex, covariances stop being positive definite). Here every real array
is a valid mixture:

.. math::

  w = \operatorname{softmax}(\ell), \qquad
  \Sigma_k = L_k L_k^\top, \quad L_k = \operatorname{tril}(A_k, -1) + \operatorname{diag}
  (\operatorname{softplus}(\operatorname{diag} A_k)),

so :math:`L_k` is lower triangular with a positive diagonal (a Cholesky factor) for any real
:math:`A_k`. By covariance type, ``scale`` holds:

* ``"full"``: (K, D, D) :math:`A_k` (the entries above the diagonal are ignored);
* ``"tied"``: (D, D) one :math:`A`;
* ``"diag"``: (K, D) :math:`a_{kd}`, with :math:`\sigma_{kd} = \operatorname{softplus}(a_{kd})`
  and :math:`\Sigma_k = \operatorname{diag}(\sigma_k^2)`;
* ``"spherical"``: (K,) :math:`a_k`, :math:`\Sigma_k = \operatorname{softplus}(a_k)^2 I`.

The logits are defined up to an additive constant (``to_unconstrained`` returns :math:`\log w`).

Examples:
  >>> import jax, jax.numpy as jnp, optax
  >>> from lvmjax import gmm
  >>> x = jax.random.normal(jax.random.key(0), (200, 2))
  >>> start = gmm.fit(jax.random.key(1), x, 2, max_iter=2).params
  >>> u = gmm.unconstrained.to_unconstrained(start)
  >>> loss = lambda u: -gmm.unconstrained.log_marginal(u, x).mean()
  >>> grad = jax.jit(jax.grad(loss))  # compiled once; eager, every small op dispatches alone
  >>> opt = optax.adam(1e-2)
  >>> state = opt.init(u)
  >>> for _ in range(3):
  ...   grads = grad(u)
  ...   updates, state = opt.update(grads, state)
  ...   u = optax.apply_updates(u, updates)
  >>> gmm.check_params(gmm.unconstrained.from_unconstrained(u))  # still a valid mixture
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jax.typing import ArrayLike

from lvmjax.gmm import model
from lvmjax.gmm.model import GMMParams


@struct.dataclass
class UnconstrainedGMMParams:
  """A Gaussian mixture as unconstrained real arrays (see the module docstring).

  Attributes:
    logits: (K,) :math:`\\ell`, with weights ``softmax(logits)``.
    means: (K, D) component means (already unconstrained).
    scale: the unconstrained Cholesky factors: "full" (K, D, D), "tied" (D, D), "diag" (K, D),
      "spherical" (K,).
    covariance_type: static metadata, not a leaf, as in :class:`~lvmjax.gmm.GMMParams`.
  """
  logits: jax.Array
  means: jax.Array
  scale: jax.Array
  covariance_type: str = struct.field(pytree_node=False, default="full")


def _softplus_inverse(y: jax.Array) -> jax.Array:
  r""":math:`\operatorname{softplus}^{-1}(y) = \log(e^y - 1) = y + \log(1 - e^{-y})` for y > 0."""
  return y + jnp.log(-jnp.expm1(-y))


def cholesky_factor(scale: jax.Array) -> jax.Array:
  r"""The Cholesky factor :math:`\operatorname{tril}(A, -1) + \operatorname{diag}(
  \operatorname{softplus}(\operatorname{diag} A))` of one or a stack of (D, D) matrices ``A``."""
  diag = jnp.diagonal(scale, axis1=-2, axis2=-1)
  strict = jnp.tril(scale, -1)
  return strict + jax.vmap(jnp.diag)(jax.nn.softplus(diag).reshape(-1, diag.shape[-1])).reshape(
      scale.shape)


def from_unconstrained(u: UnconstrainedGMMParams) -> GMMParams:
  r"""The mixture :math:`(\operatorname{softmax}(\ell), \mu, L L^\top)` of unconstrained arrays.

  Differentiable and traceable (use it inside ``jax.grad`` and ``jit``).

  Args:
    u: unconstrained parameters.

  Returns:
    The :class:`~lvmjax.gmm.GMMParams` (scikit-learn's covariance layout).
  """
  weights = jax.nn.softmax(jnp.asarray(u.logits), axis=-1)
  scale = jnp.asarray(u.scale)
  if u.covariance_type in ("full", "tied"):
    chol = cholesky_factor(scale)
    cov = chol @ jnp.swapaxes(chol, -1, -2)
  elif u.covariance_type in ("diag", "spherical"):
    cov = jnp.square(jax.nn.softplus(scale))
  else:
    raise ValueError(f"Unknown covariance_type {u.covariance_type!r}; expected one of "
                     f"{', '.join(map(repr, model.COVARIANCE_TYPES))}.")
  return GMMParams(weights, jnp.asarray(u.means), cov, u.covariance_type)


def to_unconstrained(params: GMMParams) -> UnconstrainedGMMParams:
  r"""The unconstrained arrays of a valid mixture: :math:`\ell = \log w`, :math:`A` = the Cholesky
  factor with its diagonal mapped through :math:`\operatorname{softplus}^{-1}`.

  ``from_unconstrained(to_unconstrained(p))`` equals ``p`` up to rounding.

  Args:
    params: a valid mixture (checked with :func:`~lvmjax.gmm.check_params` when concrete).

  Returns:
    The :class:`UnconstrainedGMMParams`.

  Raises:
    ValueError: ``params`` is not a valid mixture (e.g. a covariance that is not positive
      definite, which has no Cholesky factor).
  """
  model.check_params(params)
  logits = jnp.log(jnp.asarray(params.weights))
  if params.covariance_type in ("full", "tied"):
    chol = jnp.linalg.cholesky(jnp.asarray(params.covariances))
    diag = jnp.diagonal(chol, axis1=-2, axis2=-1)
    scale = jnp.tril(chol, -1) + jax.vmap(jnp.diag)(
        _softplus_inverse(diag).reshape(-1, diag.shape[-1])).reshape(chol.shape)
  else:
    scale = _softplus_inverse(jnp.sqrt(jnp.asarray(params.covariances)))
  return UnconstrainedGMMParams(logits, jnp.asarray(params.means), scale, params.covariance_type)


def log_marginal(u: UnconstrainedGMMParams, x: ArrayLike) -> jax.Array:
  r""":math:`\log p(x)` of the mixture ``from_unconstrained(u)`` (see :func:`lvmjax.gmm.log_marginal`).

  Args:
    u: unconstrained parameters.
    x: points of shape (..., D).

  Returns:
    (...,) log-density of each point; its negative mean is the loss to minimise.
  """
  return model.log_marginal(from_unconstrained(u), x)
