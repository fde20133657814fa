r"""``GaussianMixture``: scikit-learn's estimator, fitted by lvmjax's EM (``lvmjax.gmm.fit``).

A drop-in replacement for ``sklearn.mixture.GaussianMixture``: same constructor arguments,
methods, fitted attributes, warnings and errors. The model, the EM iterations, the convergence rule
(stop when the mean log-likelihood of the parameters an iteration starts from changes by less than
``tol``), ``reg_covar`` and the initialisations are those of ``lvmjax.gmm``; this module only
translates between scikit-learn's conventions and the pure functions. From the same initial
parameters, both libraries give the same fit (to rounding).

.. math::

  p(x) = \sum_k w_k \, \mathcal{N}(x; \mu_k, \Sigma_k)

Examples:
  >>> import numpy as np
  >>> from lvmjax.sklearn import GaussianMixture
  >>> x = np.concatenate([np.random.default_rng(0).normal(size=(100, 2)) + c for c in (-4, 4)])
  >>> gm = GaussianMixture(n_components=2, random_state=0).fit(x)
  >>> gm.predict([[-4.0, -4.0], [4.0, 4.0]]).tolist() in ([0, 1], [1, 0])
  True
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import mixture as _sk_mixture
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from lvmjax import gmm
from lvmjax.sklearn import _common

# scikit-learn's message when EM produces non-finite parameters (lvmjax.gmm.fit's says the same
# in other words).
_ILL_DEFINED = ("Fitting the mixture model failed because some components have ill-defined "
                "empirical covariance (for instance caused by singleton or collapsed samples). "
                "Try to decrease the number of components, increase reg_covar, or scale the "
                "input data.")

_posterior = jax.jit(gmm.posterior)
_log_marginal = jax.jit(gmm.log_marginal)
_map_latent = jax.jit(gmm.map_latent)


def _marginalized(fn):
  """``fn(params, x, mask)`` as a jitted function of ``(params, x)`` with NaN marking missing."""
  return jax.jit(lambda params, x: fn(params, jnp.where(jnp.isnan(x), 0, x), ~jnp.isnan(x)))


_MASKED = {_posterior: _marginalized(gmm.posterior), _log_marginal: _marginalized(gmm.log_marginal),
           _map_latent: _marginalized(gmm.map_latent)}


@jax.jit
def _precision_factors(params: gmm.GMMParams) -> tuple[jax.Array, jax.Array]:
  """scikit-learn's ``precisions_cholesky_`` (upper-triangular L^{-T}) and ``precisions_``."""
  chol = gmm.cholesky(params)
  if params.covariance_type in ("full", "tied"):
    eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
    chol_inv = jax.lax.linalg.triangular_solve(chol, eye, left_side=True, lower=True)
    prec_chol = jnp.swapaxes(chol_inv, -1, -2)
    return prec_chol, prec_chol @ chol_inv
  prec_chol = 1.0 / chol
  return prec_chol, jnp.square(prec_chol)


class GaussianMixture(DensityMixin, BaseEstimator):
  """Gaussian mixture fitted by EM on the device: ``sklearn.mixture.GaussianMixture``'s interface.

  Change ``from sklearn.mixture import GaussianMixture`` to
  ``from lvmjax.sklearn import GaussianMixture``. The EM loop is one compiled call
  (``lvmjax.gmm.fit``), and the ``n_init`` restarts are one ``jax.vmap``; the first fit of each
  data shape and configuration compiles (seconds), later ones reuse the compiled code.

  Differences from scikit-learn:

  * Random numbers come from JAX: ``random_state=s`` (an int) is ``jax.random.key(s)``, and the
    ``n_init`` restarts use ``jax.random.split(jax.random.key(s), n_init)`` (also for
    ``n_init=1``), so more restarts never end worse; the same seed gives a different (but equally
    valid) initialisation than scikit-learn's. With
    ``weights_init``, ``means_init`` and ``precisions_init`` all given, no random numbers are used
    and the fit equals scikit-learn's.
  * Initialisations by responsibilities normalise the weights to sum to one (scikit-learn's sum to
    ``1 + 10·K·eps/N``).
  * ``fit`` accepts ``sample_weight`` (non-negative per-point weights; integer weights equal
    repeated rows), which scikit-learn's ``GaussianMixture`` does not.
  * dtypes are scikit-learn's: float32 input is fitted in float32, float64 (and integer) input
    in float64, with JAX's x64 mode turned on only around the estimator's own computation
    (``jax.enable_x64(True)`` as a scoped context; JAX's global setting is left alone).
    Attributes and results are NumPy arrays of that dtype; predict-like methods compute in
    float64 when either X or the fitted model is float64.
  * ``verbose`` messages are printed after the compiled fit, for the returned initialisation
    only; the per-iteration "time lapse" is the fit's time divided evenly over its iterations.
  * ``missing="marginalize"`` (not in scikit-learn) fits data whose NaN entries are missing at
    random, integrating them out exactly (``lvmjax.gmm.fit(..., missing="marginalize")``);
    ``score_samples``, ``score``, ``predict``, ``predict_proba``, ``bic`` and ``aic`` then take
    rows with NaN too (the density of their observed entries). Each row needs an observed entry.

  Args:
    n_components: number of mixture components K.
    covariance_type: "full", "tied", "diag" or "spherical".
    tol: convergence threshold on the change of the mean log-likelihood.
    reg_covar: non-negative regularisation added to the diagonal of the covariances.
    max_iter: number of EM iterations (0: return the initial parameters).
    n_init: number of initialisations; the one with the largest final mean log-likelihood wins.
    init_params: "kmeans", "k-means++", "random" or "random_from_data".
    weights_init: (K,) initial weights, or None for ``init_params``.
    means_init: (K, D) initial means, or None for ``init_params``.
    precisions_init: initial precisions (inverse covariances) in ``covariances_``'s layout, or None
      for ``init_params``.
    random_state: None, an int or a ``numpy.random.RandomState`` (see above).
    warm_start: if True, each ``fit`` after the first starts from the previous solution (with one
      initialisation), as in scikit-learn.
    verbose: 0 silent, 1 iterations and convergence, 2 also log-likelihood changes.
    verbose_interval: iterations between messages.
    missing: "error" (scikit-learn's: NaN in X is a ValueError) or "marginalize" (NaN entries
      are missing values, integrated out).

  Attributes:
    weights_: (K,) mixing weights.
    means_: (K, D) means.
    covariances_: covariances ("full" (K, D, D), "tied" (D, D), "diag" (K, D), "spherical" (K,)).
    precisions_: their inverses, same layout.
    precisions_cholesky_: Cholesky factors of the precisions (upper-triangular L^{-T} for
      "full"/"tied", 1/std for "diag"/"spherical"), as in scikit-learn.
    converged_: whether the best initialisation converged.
    n_iter_: EM iterations of the best initialisation.
    lower_bound_: its final mean log-likelihood (-inf when ``max_iter == 0``).
    lower_bounds_: list of the mean log-likelihood at each iteration.
    n_features_in_: D; ``feature_names_in_`` when X had string column names.
  """

  # scikit-learn's checks; ``missing`` (lvmjax's own) is checked in ``_fit``.
  _parameter_constraints: dict = dict(_sk_mixture.GaussianMixture._parameter_constraints)

  def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
               max_iter=100, n_init=1, init_params="kmeans", weights_init=None, means_init=None,
               precisions_init=None, random_state=None, warm_start=False, verbose=0,
               verbose_interval=10, missing="error"):
    self.n_components = n_components
    self.covariance_type = covariance_type
    self.tol = tol
    self.reg_covar = reg_covar
    self.max_iter = max_iter
    self.n_init = n_init
    self.init_params = init_params
    self.weights_init = weights_init
    self.means_init = means_init
    self.precisions_init = precisions_init
    self.random_state = random_state
    self.warm_start = warm_start
    self.verbose = verbose
    self.verbose_interval = verbose_interval
    self.missing = missing

  # ------------------------------------------------------------------------------------------
  # Fitting.

  def fit(self, X, y=None, sample_weight=None):
    """Estimates the parameters by EM.

    Args:
      X: (N, D) data (NumPy, JAX, list, DataFrame).
      y: ignored.
      sample_weight: optional (N,) non-negative weights.

    Returns:
      self.

    Raises:
      ValueError: bad parameters or data, or a fit with ill-defined covariances.
    """
    del y
    self._fit(X, sample_weight)
    return self

  def fit_predict(self, X, y=None, sample_weight=None):
    """Fits, then returns ``predict(X)`` (the labels of the final parameters)."""
    return self.fit(X, y, sample_weight).predict(X)

  def _fit(self, X, sample_weight):
    self._validate_params()
    if not isinstance(self.missing, str) or self.missing not in gmm.MISSING:
      raise ValueError(f"The 'missing' parameter of {type(self).__name__} must be a str among "
                       f"{set(gmm.MISSING)}. Got {self.missing!r} instead.")
    x = self._validate_x(X, reset=True, ensure_min_samples=2)
    n = x.shape[0]
    k = self.n_components
    if n < k:
      raise ValueError(f"Expected n_samples >= n_components but got n_components = {k}, "
                       f"n_samples = {n}")
    dtype = np.dtype(x.dtype)
    try:
      with _common.precision(dtype):
        self._fit_in_dtype(_common.to_device(x, dtype), sample_weight, dtype)
    except ValueError as e:
      if not str(e).startswith("Fitting the mixture model failed"):
        raise
      raise ValueError(_ILL_DEFINED) from e  # scikit-learn's words
    if not self.converged_ and self.max_iter > 0:
      warnings.warn("Best performing initialization did not converge. Try different init "
                    "parameters, or increase max_iter, tol, or check for degenerate data.",
                    ConvergenceWarning, stacklevel=3)

  def _fit_in_dtype(self, x, sample_weight, dtype):
    """The fit on the device array x (inside ``_common.precision(dtype)``); sets attributes."""
    n, d = x.shape
    k = self.n_components
    w = _common.validate_sample_weight(sample_weight, n, dtype)
    given = self._initial_parameters(d, dtype)
    do_init = not (self.warm_start and hasattr(self, "converged_"))
    key = _common.key_from_random_state(self.random_state)
    common = dict(num_components=k, covariance_type=self.covariance_type, tol=self.tol,
                  reg_covar=self.reg_covar, sample_weight=w, missing=self.missing)
    start = time.perf_counter()
    previous_bound = -math.inf
    if not do_init:
      init = self._get_gmm_params(dtype)
      previous_bound = self.lower_bound_
      result = gmm.fit(key, x, init=init, max_iter=self.max_iter, **common)
    elif all(v is not None for v in given):
      result = gmm.fit(key, x, init=gmm.GMMParams(*given, self.covariance_type),
                       max_iter=self.max_iter, **common)
    elif all(v is None for v in given):
      # n_init > 1: the core's restarts use restart_keys(key, n_init); one run uses the first.
      fit_key = key if self.n_init > 1 else _common.restart_keys(key, 1)[0]
      result = gmm.fit(fit_key, x, init=self.init_params, n_init=self.n_init,
                       max_iter=self.max_iter, **common)
    else:
      result = self._fit_partial_init(key, x, given, common)
    history = result.log_likelihood
    converged, n_iter = bool(result.converged), int(result.n_iter)
    if not do_init and self.max_iter > 0 and n_iter and abs(
        float(history[0]) - previous_bound) < self.tol:
      # scikit-learn's warm start compares the first iteration with the previous fit's bound and
      # can stop there; the core starts every fit from -inf.
      if n_iter > 1:
        result = gmm.fit(key, x, init=init, max_iter=1, **common)
        history = result.log_likelihood
      converged, n_iter = True, 1
    self._set_gmm_params(result.params)
    self.converged_ = converged
    self.n_iter_ = n_iter
    self.lower_bounds_ = [float(v) for v in np.asarray(history)]
    self.lower_bound_ = self.lower_bounds_[-1] if self.lower_bounds_ else -math.inf
    if self.verbose:
      self._print_verbose(previous_bound, time.perf_counter() - start)

  def _fit_partial_init(self, key, x, given, common):
    """Some of weights/means/precisions given: the rest from ``init_params``, per restart."""
    keys = list(_common.restart_keys(key, self.n_init))
    best = None
    for k in keys:
      start = gmm.fit(k, x, init=self.init_params, max_iter=0, **common).params
      start = gmm.GMMParams(*(s if g is None else g for g, s in zip(
          given, (start.weights, start.means, start.covariances))), self.covariance_type)
      result = gmm.fit(k, x, init=start, max_iter=self.max_iter, **common)
      if best is None or float(result.lower_bound) > float(best.lower_bound):
        best = result
    return best

  def _initial_parameters(self, d: int, dtype, k: int | None = None) -> tuple[Any, Any, Any]:
    """Checks weights_init, means_init, precisions_init for K = ``k`` (default n_components)
    components; returns (weights, means, covariances)."""
    k = self.n_components if k is None else k
    cov_type = self.covariance_type
    weights = means = cov = None
    if self.weights_init is not None:
      w = np.asarray(self.weights_init, dtype=np.float64)
      if w.shape != (k,):
        raise ValueError(f"The parameter 'weights' should have the shape of {(k,)}, but got "
                         f"{w.shape}")
      if not np.all(np.isfinite(w)) or np.any(w < 0) or np.any(w > 1):
        # Word for word scikit-learn's message, which prints the minimum as "max value" and the
        # maximum as "min value" (its tests match that text).
        raise ValueError("The parameter 'weights' should be in the range [0, 1], but got max "
                         f"value {w.min():.5f}, min value {w.max():.5f}")
      atol = 1e-6 if np.dtype(dtype) == np.float32 else 1e-8
      if abs(1.0 - w.sum()) > atol:
        raise ValueError("The parameter 'weights' should be normalized, but got sum(weights) = "
                         f"{w.sum():.5f}")
      weights = jnp.asarray(w, dtype)
    if self.means_init is not None:
      m = np.asarray(self.means_init, dtype=np.float64)
      if m.shape != (k, d):
        raise ValueError(f"The parameter 'means' should have the shape of {(k, d)}, but got "
                         f"{m.shape}")
      if not np.all(np.isfinite(m)):
        raise ValueError("The parameter 'means' contains NaN or infinity.")
      means = jnp.asarray(m, dtype)
    if self.precisions_init is not None:
      p = np.asarray(self.precisions_init, dtype=np.float64)
      shape = gmm.covariance_shape(cov_type, k, d)
      if p.shape != shape:
        raise ValueError(f"The parameter '{cov_type} precision' should have the shape of {shape}, "
                         f"but got {p.shape}")
      if not np.all(np.isfinite(p)):
        raise ValueError(f"'{cov_type} precision' contains NaN or infinity.")
      if cov_type in ("full", "tied"):
        mats = p.reshape(-1, d, d)
        for m in mats:
          if not (np.allclose(m, m.T) and np.all(np.linalg.eigvalsh(m) > 0)):
            raise ValueError(f"'{cov_type} precision' should be symmetric, positive-definite")
        c = np.linalg.inv(mats)
        c = (0.5 * (c + np.swapaxes(c, -1, -2))).reshape(shape)
      else:
        if np.any(p <= 0):
          raise ValueError(f"'{cov_type} precision' should be positive")
        c = 1.0 / p
      cov = jnp.asarray(c, dtype)
    return weights, means, cov

  def _print_verbose(self, previous_bound: float, seconds: float) -> None:
    """scikit-learn's messages, for the returned initialisation (printed after the fit)."""
    print("Initialization 0")
    prev = previous_bound
    per_iteration = seconds / max(1, len(self.lower_bounds_))
    for i, ll in enumerate(self.lower_bounds_, 1):
      if i % self.verbose_interval == 0:
        if self.verbose == 1:
          print(f"  Iteration {i}")
        else:
          print(f"  Iteration {i}\t time lapse {per_iteration * self.verbose_interval:.5f}s\t "
                f"ll change {ll - prev:.5f}")
      prev = ll
    msg = "converged" if self.converged_ else "did not converge"
    if self.verbose == 1:
      print(f"Initialization {msg}.")
    else:
      print(f"Initialization {msg}. time lapse {seconds:.5f}s\t lower bound "
            f"{self.lower_bound_:.5f}.")

  # ------------------------------------------------------------------------------------------
  # Parameters <-> attributes.

  def _set_gmm_params(self, params: gmm.GMMParams) -> None:
    prec_chol, prec = _precision_factors(params)
    self.weights_ = _common.to_numpy(params.weights)
    self.means_ = _common.to_numpy(params.means)
    self.covariances_ = _common.to_numpy(params.covariances)
    self.precisions_cholesky_ = _common.to_numpy(prec_chol)
    self.precisions_ = _common.to_numpy(prec)

  def _get_gmm_params(self, dtype=None) -> gmm.GMMParams:
    """The fitted parameters as a ``gmm.GMMParams`` of ``dtype`` (for the lvmjax.gmm functions).

    float64 arrays exist only where x64 is on: call inside ``_common.precision(dtype)``.
    """
    check_is_fitted(self)
    conv = lambda a: jnp.asarray(a, dtype)  # pylint: disable=unnecessary-lambda-assignment
    return gmm.GMMParams(conv(self.weights_), conv(self.means_), conv(self.covariances_),
                         self.covariance_type)

  @property
  def params_(self) -> gmm.GMMParams:
    """The fitted parameters as a ``lvmjax.gmm.GMMParams`` of the fit's dtype."""
    check_is_fitted(self)
    with _common.precision(self.means_.dtype):
      return self._get_gmm_params(self.means_.dtype)

  def _n_parameters(self) -> int:
    """Number of free parameters of the fitted model."""
    return gmm.num_parameters(self.params_)

  # scikit-learn's private parameter interface (``_get_parameters``, ``_set_parameters``,
  # ``_initialize``), which its own tests and some user code call on a GaussianMixture.

  def _get_parameters(self):
    """``(weights_, means_, covariances_, precisions_cholesky_)``, as scikit-learn's."""
    return self.weights_, self.means_, self.covariances_, self.precisions_cholesky_

  def _set_parameters(self, params, xp=None):
    """Sets the fitted parameters from ``(weights, means, covariances, precisions_cholesky)``;
    the precisions are derived from the covariances (as scikit-learn derives them from
    ``precisions_cholesky``)."""
    del xp
    weights, means, covariances, _ = params
    dtype = _common.compute_dtype(np.asarray(means).dtype)
    with _common.precision(dtype):
      self._set_gmm_params(gmm.GMMParams(jnp.asarray(weights, dtype), jnp.asarray(means, dtype),
                                         jnp.asarray(covariances, dtype), self.covariance_type))

  def _initialize(self, X, resp):
    """scikit-learn's ``_initialize``: the M-step of responsibilities ``resp`` (N, K), then
    ``weights_init``, ``means_init`` and ``precisions_init`` where given."""
    x = _common.validate_x(self, X, reset=False) if hasattr(self, "n_features_in_") else (
        _common.validate_x(self, X, reset=True))
    dtype = np.dtype(x.dtype)
    with _common.precision(dtype):
      xj = _common.to_device(x, dtype)
      r = jnp.asarray(resp, dtype)
      params = gmm.params_from_responsibilities(
          xj[None], jnp.ones((1, xj.shape[0]), dtype), lambda i, xc: r, r.shape[1],
          self.covariance_type, self.reg_covar)
      given = self._initial_parameters(xj.shape[1], dtype, r.shape[1])
      params = gmm.GMMParams(*(p if g is None else g for g, p in zip(
          given, (params.weights, params.means, params.covariances))), self.covariance_type)
      self._set_gmm_params(params)

  # ------------------------------------------------------------------------------------------
  # Inference.

  def _validate_x(self, X, **options):
    """``_common.validate_x``; NaN allowed with ``missing="marginalize"`` (then every row needs an
    observed entry), and otherwise scikit-learn's NaN error with a pointer to that option."""
    marginalize = getattr(self, "missing", "error") == "marginalize"
    try:
      x = _common.validate_x(self, X, allow_nan=marginalize, **options)
    except ValueError as e:
      if marginalize or "NaN" not in str(e):
        raise
      raise ValueError(f"{e} To treat NaN entries as missing values, integrated out exactly, use "
                       "GaussianMixture(..., missing=\"marginalize\").") from e
    if marginalize:
      empty = (jnp.all(jnp.isnan(x), axis=1) if isinstance(x, jax.Array)
               else np.isnan(np.asarray(x)).all(axis=1))
      if bool(empty.any()):
        raise ValueError(f"{int(empty.sum())} row(s) of X are all NaN (nothing observed); drop "
                         "them first, e.g. X[~np.isnan(X).all(axis=1)].")
    return x

  def _rows(self, fn, X):
    """``fn(params, x)`` on the rows of X, in blocks, in the dtype of X or of the fit (float64
    if either is); with ``missing="marginalize"``, NaN entries are integrated out."""
    check_is_fitted(self)
    x = self._validate_x(X, reset=False)
    if getattr(self, "missing", "error") == "marginalize":
      fn = _MASKED[fn]
    return _common.fitted_rows(fn, x, self.means_.dtype, self.means_.size, self._get_gmm_params)

  def predict(self, X):
    """Most probable component of each row: argmax_k p(z=k | x), (N,) int64."""
    return self._rows(_map_latent, X).astype(np.int64)

  def predict_proba(self, X):
    """Posterior probabilities p(z=k | x), (N, K)."""
    return self._rows(_posterior, X)

  def score_samples(self, X):
    """log p(x) of each row, (N,)."""
    return self._rows(_log_marginal, X)

  def score(self, X, y=None):
    """Mean log-likelihood of the rows of X (a float)."""
    del y
    return float(np.mean(self.score_samples(X), dtype=np.float64))

  def _criterion(self, fn, X) -> float:
    check_is_fitted(self)
    if getattr(self, "missing", "error") == "marginalize":
      # -2 log p(X) + penalty, log p(X) summed over the rows' observed entries.
      total = float(np.sum(self.score_samples(X), dtype=np.float64))
      penalty = {gmm.bic: self._n_parameters() * math.log(self._validate_x(X, reset=False).shape[0]),
                 gmm.aic: 2.0 * self._n_parameters()}[fn]
      return -2.0 * total + penalty
    x = _common.validate_x(self, X, reset=False)
    dtype = _common.compute_dtype(x.dtype, self.means_.dtype)
    with _common.precision(dtype):
      return float(fn(self._get_gmm_params(dtype), _common.to_device(x, dtype)))

  def bic(self, X):
    """Bayesian information criterion on X, ``-2 log p(X) + P log N`` (lower is better)."""
    return self._criterion(gmm.bic, X)

  def aic(self, X):
    """Akaike information criterion on X, ``-2 log p(X) + 2 P`` (lower is better)."""
    return self._criterion(gmm.aic, X)

  def sample(self, n_samples=1):
    """Draws points from the fitted mixture, in the fit's dtype.

    The key comes from ``random_state`` as in ``fit`` (an int gives the same draws every call,
    as in scikit-learn). Rows are grouped by component, as scikit-learn returns them.

    Returns:
      (X (n_samples, D), y (n_samples,) int64 components).
    """
    check_is_fitted(self)
    _common.check_n_samples(n_samples)
    key = _common.key_from_random_state(self.random_state)
    dtype = self.means_.dtype
    # Drawn in sizes of powers of two (the first n_samples kept): every distinct size compiles.
    size = max(16, 1 << (int(n_samples) - 1).bit_length())
    with _common.precision(dtype):
      x, z = gmm.sample(key, self._get_gmm_params(dtype), size)
      z = _common.to_numpy(z)[:n_samples].astype(np.int64)
      x = _common.to_numpy(x)[:n_samples]
    order = np.argsort(z, kind="stable")
    return x[order], z[order]
