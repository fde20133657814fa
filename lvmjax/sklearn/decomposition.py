r"""``PPCA``: probabilistic PCA (Tipping & Bishop, 1999) as a scikit-learn estimator.

Wraps ``lvmjax.ppca``: the closed-form maximum-likelihood fit (``ppca.fit_ppca``), the exact
marginal likelihood, the Gaussian posterior and sampling.

.. math::

  p(z) = \mathcal{N}(0, I_L), \qquad p(x \mid z) = \mathcal{N}(W z + \mu, \sigma^2 I), \qquad
  p(x) = \mathcal{N}(\mu, W W^\top + \sigma^2 I)

scikit-learn has no PPCA estimator; the interface follows ``sklearn.decomposition.FactorAnalysis``
(``components_`` are the loadings :math:`W^\top`, ``transform`` is the posterior mean
:math:`\mathbb{E}[z \mid x]`), and ``score``/``score_samples`` equal ``sklearn.decomposition.PCA``'s
probabilistic-PCA likelihood except that the covariance is the maximum-likelihood one (divided by
N, where ``PCA`` divides by N - 1).

Examples:
  >>> import numpy as np
  >>> from lvmjax.sklearn import PPCA
  >>> x = np.random.default_rng(0).normal(size=(200, 5))
  >>> model = PPCA(n_components=2).fit(x)
  >>> model.transform(x).shape, model.components_.shape
  ((200, 2), (2, 5))
"""
from __future__ import annotations

import functools
from numbers import Integral

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, DensityMixin,
                          TransformerMixin)
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from lvmjax import ppca
from lvmjax.sklearn import _common


@functools.partial(jax.jit, static_argnums=1)
def _fit(x, num_latents):
  """``ppca.fit_ppca`` with the noise floor and the total variance, in one compiled call."""
  params = ppca.fit_ppca(x, num_latents)
  variances = jnp.var(x, axis=0)
  finfo = jnp.finfo(x.dtype)
  floor = jnp.maximum(finfo.eps * jnp.mean(variances), finfo.tiny)
  return params, jnp.maximum(params.noise_variance, floor), jnp.sum(variances)


_posterior_mean = jax.jit(lambda params, x: ppca.posterior(params, x)[0])
_log_marginal = jax.jit(ppca.log_marginal)
_covariance = jax.jit(ppca.covariance)
_sample = jax.jit(lambda key, params, n: ppca.sample(key, params, n)[0], static_argnums=2)


class PPCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, DensityMixin, BaseEstimator):
  r"""Probabilistic PCA, fitted in closed form on the device.

  Args:
    n_components: number of latent dimensions L, 1 <= L < D. None: ``min(N - 1, D) - 1`` (at
      least 1), the largest L whose noise variance the data can estimate.
    random_state: None, an int or a ``numpy.random.RandomState``, for ``sample`` (an int is
      ``jax.random.key(int)``).

  Attributes:
    components_: (L, D) loadings :math:`W^\top` (rows orthogonal, of squared norm
      :math:`\lambda_l - \sigma^2`), as ``FactorAnalysis.components_``.
    mean_: (D,) mean :math:`\mu`.
    noise_variance_: :math:`\sigma^2`, the mean of the D - L smallest eigenvalues of the
      maximum-likelihood covariance, floored at eps times the mean feature variance (or the
      smallest normal float), so the density stays proper when the data lie in an
      L-dimensional subspace.
    explained_variance_: (L,) the L largest eigenvalues :math:`\lambda_l` of the
      maximum-likelihood (1/N) covariance.
    explained_variance_ratio_: (L,) their fraction of the total variance.
    n_components_: L.
    n_samples_: N.
    n_features_in_: D; ``feature_names_in_`` when X had string column names.

  dtypes: as ``GaussianMixture`` (float32 in float32; float64 and integers in float64, with
  JAX's x64 mode turned on only around the estimator's own computation).
  """

  _parameter_constraints: dict = {
      "n_components": [Interval(Integral, 1, None, closed="left"), None],
      "random_state": ["random_state"],
  }

  def __init__(self, n_components=None, *, random_state=None):
    self.n_components = n_components
    self.random_state = random_state

  def fit(self, X, y=None):
    """Fits W, mu and sigma^2 by maximum likelihood (closed form).

    Args:
      X: (N, D) data, N >= 2, D >= 2.
      y: ignored.

    Returns:
      self.

    Raises:
      ValueError: bad data, or n_components >= D.
    """
    del y
    self._validate_params()
    x = _common.validate_x(self, X, reset=True, ensure_min_samples=2, ensure_min_features=2)
    n, d = x.shape
    num = self.n_components if self.n_components is not None else max(1, min(n - 1, d) - 1)
    if num >= d:
      raise ValueError(f"n_components={num} must be smaller than n_features={d}: PPCA needs at "
                       "least one noise dimension.")
    with _common.precision(x.dtype):
      params, noise, total_variance = _fit(_common.to_device(x), num)
      weight = _common.to_numpy(params.weight)
      self.components_ = weight.T
      self.mean_ = _common.to_numpy(params.mean)
      self.noise_variance_ = float(noise)
      self.explained_variance_ = np.sum(weight**2, axis=0) + np.asarray(params.noise_variance,
                                                                         weight.dtype)
      self.explained_variance_ratio_ = self.explained_variance_ / float(total_variance)
    self.n_components_ = num
    self.n_samples_ = n
    self._n_features_out = num
    return self

  def _params(self, dtype=None) -> ppca.PPCAParams:
    check_is_fitted(self)
    return ppca.PPCAParams(jnp.asarray(self.components_.T, dtype), jnp.asarray(self.mean_, dtype),
                           jnp.asarray(self.noise_variance_, dtype or self.components_.dtype))

  @property
  def params_(self) -> ppca.PPCAParams:
    """The fitted parameters as a ``lvmjax.ppca.PPCAParams`` of the fit's dtype."""
    check_is_fitted(self)
    with _common.precision(self.components_.dtype):
      return self._params(self.components_.dtype)

  def _apply(self, fn, X):
    """``fn(params, x)`` as NumPy, in the dtype of X or of the fit (float64 if either is)."""
    check_is_fitted(self)
    x = _common.validate_x(self, X, reset=False)
    dtype = _common.compute_dtype(x.dtype, self.components_.dtype)
    with _common.precision(dtype):
      return _common.to_numpy(fn(self._params(dtype), _common.to_device(x, dtype)))

  def transform(self, X):
    r"""The posterior mean :math:`\mathbb{E}[z \mid x] = M^{-1} W^\top (x - \mu) / \sigma^2`,
    (N, L), with :math:`M = I + W^\top W / \sigma^2`."""
    return self._apply(_posterior_mean, X)

  def inverse_transform(self, X):
    r""":math:`\mathbb{E}[x \mid z] = W z + \mu` for latents z (N, L), (N, D).

    ``inverse_transform(transform(x))`` is a shrunk reconstruction of x (the posterior mean is
    pulled towards 0), unlike ``PCA``'s orthogonal projection.
    """
    check_is_fitted(self)
    z = np.asarray(X)
    if z.ndim != 2 or z.shape[1] != self.n_components_:
      raise ValueError(f"X must have shape (n_samples, {self.n_components_}), got {z.shape}.")
    return z @ self.components_ + self.mean_

  def score_samples(self, X):
    """Exact log p(x) of each row, (N,)."""
    return self._apply(_log_marginal, X)

  def score(self, X, y=None):
    """Mean log-likelihood of the rows of X (a float)."""
    del y
    return float(np.mean(self.score_samples(X), dtype=np.float64))

  def get_covariance(self):
    r"""The model covariance :math:`W W^\top + \sigma^2 I`, (D, D)."""
    with _common.precision(self.components_.dtype):
      return _common.to_numpy(_covariance(self._params(self.components_.dtype)))

  def get_precision(self):
    """The inverse of ``get_covariance()``, (D, D)."""
    return np.linalg.inv(self.get_covariance())

  def sample(self, n_samples=1):
    """Draws points x ~ p(x) (key from ``random_state``), (n_samples, D)."""
    check_is_fitted(self)
    _common.check_n_samples(n_samples)
    key = _common.key_from_random_state(self.random_state)
    with _common.precision(self.components_.dtype):
      return _common.to_numpy(_sample(key, self._params(self.components_.dtype), int(n_samples)))

  def __sklearn_tags__(self):
    tags = super().__sklearn_tags__()
    tags.transformer_tags.preserves_dtype = ["float64", "float32"]
    return tags
