r"""``BayesianGaussianMixture``: scikit-learn's estimator, fitted by ``lvmjax.gmm.bayesian``.

A drop-in replacement for ``sklearn.mixture.BayesianGaussianMixture``: same constructor arguments,
methods, fitted attributes, warnings and errors. The variational iterations, priors, lower bound
and convergence rule (stop when the lower bound changes by less than ``tol``) are those of
:mod:`lvmjax.gmm.bayesian`; this module translates between scikit-learn's conventions and the pure
functions. From the same initial responsibilities both libraries give the same fit (to rounding).

Examples:
  >>> import numpy as np
  >>> from lvmjax.sklearn import BayesianGaussianMixture
  >>> x = np.concatenate([np.random.default_rng(0).normal(size=(100, 2)) + c for c in (-4, 4)])
  >>> bgm = BayesianGaussianMixture(n_components=5, weight_concentration_prior=1e-3,
  ...                               random_state=0).fit(x)
  >>> int(np.sum(bgm.weights_ > 1e-2))
  2
"""
from __future__ import annotations

import math
import time
import warnings

import jax.numpy as jnp
import numpy as np
from sklearn import mixture as _sk_mixture
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

from lvmjax.gmm import bayesian
from lvmjax.sklearn import _common
from lvmjax.sklearn import mixture as _mixture


class BayesianGaussianMixture(DensityMixin, BaseEstimator):
  """Variational Bayesian Gaussian mixture on the device: scikit-learn's interface.

  Change ``from sklearn.mixture import BayesianGaussianMixture`` to
  ``from lvmjax.sklearn import BayesianGaussianMixture``. The whole fit is one compiled call
  (``lvmjax.gmm.bayesian.fit``) and the ``n_init`` restarts are one ``jax.vmap``.

  Differences from scikit-learn (as ``lvmjax.sklearn.GaussianMixture``): random numbers come from
  JAX (``random_state=s`` is ``jax.random.key(s)``), so the same seed gives another (equally
  valid) initialisation; ``fit`` accepts ``sample_weight`` (the default priors then use the
  weighted mean and covariance); float32 input is fitted in float32, float64 in float64 (JAX's
  x64 mode scoped to the estimator's computation); ``verbose`` messages come after the compiled
  fit.

  Args:
    n_components: the most components K; the prior switches surplus ones off.
    covariance_type: "full", "tied", "diag" or "spherical".
    tol: convergence threshold on the change of the lower bound.
    reg_covar: added to the diagonal of the data covariances.
    max_iter: iterations (0: the initial parameters).
    n_init: initialisations; the largest final lower bound wins.
    init_params: "kmeans", "k-means++", "random" or "random_from_data".
    weight_concentration_prior_type: "dirichlet_process" or "dirichlet_distribution".
    weight_concentration_prior: alpha_0 (None: 1 / n_components).
    mean_precision_prior: beta_0 (None: 1).
    mean_prior: m_0, (D,) (None: the data's mean).
    degrees_of_freedom_prior: nu_0 > D - 1 (None: D).
    covariance_prior: the Wishart's inverse scale (None: the data's covariance, in the layout of
      ``covariance_type``).
    random_state: None, an int or a ``numpy.random.RandomState``.
    warm_start: each ``fit`` after the first continues from the previous solution.
    verbose, verbose_interval: scikit-learn's progress messages.

  Attributes:
    ``weights_``, ``means_``, ``covariances_``, ``precisions_``, ``precisions_cholesky_``: the
      point estimate, in scikit-learn's layouts.
    ``weight_concentration_``: (K,) Dirichlet parameters, or the tuple of the sticks' Beta
      parameters for "dirichlet_process".
    ``mean_precision_``, ``degrees_of_freedom_``: beta_k and nu_k.
    ``weight_concentration_prior_``, ``mean_precision_prior_``, ``mean_prior_``,
      ``degrees_of_freedom_prior_``, ``covariance_prior_``: the priors used.
    ``converged_``, ``n_iter_``, ``lower_bound_``, ``lower_bounds_``: of the best initialisation
      (the bounds summed over the data, as scikit-learn's).
    ``n_features_in_``: D.
  """

  _parameter_constraints: dict = dict(_sk_mixture.BayesianGaussianMixture._parameter_constraints)

  def __init__(self, *, n_components=1, covariance_type="full", tol=1e-3, reg_covar=1e-6,
               max_iter=100, n_init=1, init_params="kmeans",
               weight_concentration_prior_type="dirichlet_process",
               weight_concentration_prior=None, mean_precision_prior=None, mean_prior=None,
               degrees_of_freedom_prior=None, covariance_prior=None, random_state=None,
               warm_start=False, verbose=0, verbose_interval=10):
    self.n_components = n_components
    self.covariance_type = covariance_type
    self.tol = tol
    self.reg_covar = reg_covar
    self.max_iter = max_iter
    self.n_init = n_init
    self.init_params = init_params
    self.weight_concentration_prior_type = weight_concentration_prior_type
    self.weight_concentration_prior = weight_concentration_prior
    self.mean_precision_prior = mean_precision_prior
    self.mean_prior = mean_prior
    self.degrees_of_freedom_prior = degrees_of_freedom_prior
    self.covariance_prior = covariance_prior
    self.random_state = random_state
    self.warm_start = warm_start
    self.verbose = verbose
    self.verbose_interval = verbose_interval

  # ------------------------------------------------------------------------------------------
  # Priors (scikit-learn's checks and messages).

  def _check_parameters(self, X, sample_weight=None):
    """Sets the ``*_prior_`` attributes from the arguments and X (scikit-learn's defaults)."""
    x = np.asarray(X) if not hasattr(X, "dtype") else X
    d = x.shape[1]
    self.weight_concentration_prior_ = (1.0 / self.n_components
                                        if self.weight_concentration_prior is None
                                        else self.weight_concentration_prior)
    self.mean_precision_prior_ = (1.0 if self.mean_precision_prior is None
                                  else self.mean_precision_prior)
    mean_prior = None
    if self.mean_prior is not None:
      mean_prior = check_array(self.mean_prior, dtype=[np.float64, np.float32], ensure_2d=False)
      _shape(mean_prior, (d,), "means")
    if self.degrees_of_freedom_prior is None:
      self.degrees_of_freedom_prior_ = d
    elif self.degrees_of_freedom_prior > d - 1.0:
      self.degrees_of_freedom_prior_ = self.degrees_of_freedom_prior
    else:
      raise ValueError("The parameter 'degrees_of_freedom_prior' should be greater than %d, but "
                       "got %.3f." % (d - 1, self.degrees_of_freedom_prior))
    cov_type = self.covariance_type
    covariance_prior = None
    if self.covariance_prior is not None:
      if cov_type == "spherical":
        covariance_prior = self.covariance_prior
      else:
        covariance_prior = check_array(self.covariance_prior, dtype=[np.float64, np.float32],
                                       ensure_2d=False)
        shape = (d, d) if cov_type in ("full", "tied") else (d,)
        _shape(covariance_prior, shape, f"{cov_type} covariance_prior")
        if cov_type in ("full", "tied") and not (
            np.allclose(covariance_prior, covariance_prior.T)
            and np.all(np.linalg.eigvalsh(covariance_prior) > 0.0)):
          raise ValueError(f"'{cov_type} precision' should be symmetric, positive-definite")
        if cov_type == "diag" and np.any(np.less_equal(covariance_prior, 0.0)):
          raise ValueError(f"'{cov_type} precision' should be positive")
    dtype = np.dtype(x.dtype)
    with _common.precision(dtype):
      family = bayesian.prior(
          _common.to_device(x, dtype), num_components=self.n_components,
          covariance_type=cov_type,
          weight_concentration_prior_type=self.weight_concentration_prior_type,
          weight_concentration_prior=self.weight_concentration_prior_,
          mean_precision_prior=self.mean_precision_prior_, mean_prior=mean_prior,
          degrees_of_freedom_prior=self.degrees_of_freedom_prior_,
          covariance_prior=covariance_prior, reg_covar=self.reg_covar,
          sample_weight=sample_weight, dtype=dtype)
    self.mean_prior_ = (_common.to_numpy(family.mean_prior) if mean_prior is None
                        else mean_prior)
    self.covariance_prior_ = (_common.to_numpy(family.covariance_prior)
                              if covariance_prior is None else covariance_prior)
    self._family = family
    return family

  # ------------------------------------------------------------------------------------------
  # Fitting.

  def fit(self, X, y=None, sample_weight=None):
    """Estimates the variational posterior.

    Args:
      X: (N, D) data.
      y: ignored.
      sample_weight: optional (N,) non-negative weights.

    Returns:
      self.
    """
    del y
    self._validate_params()
    x = _common.validate_x(self, X, reset=True, ensure_min_samples=2)
    n, k = x.shape[0], self.n_components
    if n < k:
      raise ValueError(f"Expected n_samples >= n_components but got n_components = {k}, "
                       f"n_samples = {n}")
    dtype = np.dtype(x.dtype)
    with _common.precision(dtype):
      xj = _common.to_device(x, dtype)
      w = _common.validate_sample_weight(sample_weight, n, dtype)
      self._fit_in_dtype(xj, w, dtype)
    if not self.converged_ and self.max_iter > 0:
      warnings.warn("Best performing initialization did not converge. Try different init "
                    "parameters, or increase max_iter, tol, or check for degenerate data.",
                    ConvergenceWarning, stacklevel=2)
    return self

  def fit_predict(self, X, y=None, sample_weight=None):
    """Fits, then returns ``predict(X)``."""
    return self.fit(X, y, sample_weight).predict(X)

  def _prior_options(self, family) -> dict:
    """``bayesian.fit``'s model arguments: the covariance type, the priors and ``reg_covar``."""
    return dict(covariance_type=self.covariance_type,
                weight_concentration_prior_type=self.weight_concentration_prior_type,
                weight_concentration_prior=self.weight_concentration_prior_,
                mean_precision_prior=self.mean_precision_prior_,
                mean_prior=family.mean_prior,
                degrees_of_freedom_prior=self.degrees_of_freedom_prior_,
                covariance_prior=family.covariance_prior, reg_covar=self.reg_covar)

  def _fit_in_dtype(self, x, w, dtype):
    family = self._check_parameters(x, w)
    total = float(x.shape[0] if w is None else jnp.sum(w))
    common = dict(self._prior_options(family), sample_weight=w, tol=self.tol / total)
    key = _common.key_from_random_state(self.random_state)
    start = time.perf_counter()
    previous = -math.inf
    if self.warm_start and hasattr(self, "converged_"):
      # Continue: the previous bound is the first entry, so the first new iteration is tested
      # against it, as in scikit-learn.
      previous = float(np.ravel(self.lower_bound_)[0])
      params = self._get_bayesian_params(dtype)
      resume = bayesian.BayesianFitResult(
          params, jnp.asarray([previous / total], dtype), jnp.asarray(1, jnp.int32),
          jnp.asarray(False), jnp.asarray(previous / total, dtype), None, None, None)
      result = bayesian.fit(key, x, self.n_components, init=resume, max_iter=self.max_iter + 1,
                            **common)
      history = np.asarray(result.lower_bounds)[1:]
      n_iter = int(result.n_iter) - 1
    else:
      fit_key = key if self.n_init > 1 else _common.restart_keys(key, 1)[0]
      result = bayesian.fit(fit_key, x, self.n_components, init=self.init_params,
                            n_init=self.n_init, max_iter=self.max_iter, **common)
      history = np.asarray(result.lower_bounds)
      n_iter = int(result.n_iter)
    self._set_bayesian_params(result.params)
    self.converged_ = bool(result.converged)
    self.n_iter_ = n_iter
    self.lower_bounds_ = [float(v) * total for v in history]
    self.lower_bound_ = self.lower_bounds_[-1] if self.lower_bounds_ else -math.inf
    if self.verbose:
      self._print_verbose(previous, time.perf_counter() - start)

  # scikit-learn's messages, printed after the compiled fit (GaussianMixture's).
  _print_verbose = _mixture.GaussianMixture._print_verbose  # pylint: disable=protected-access

  # ------------------------------------------------------------------------------------------
  # Parameters <-> attributes.

  def _set_bayesian_params(self, params: bayesian.BayesianGMMParams) -> None:
    to_np = _common.to_numpy
    conc = to_np(params.weight_concentration)
    dp = self.weight_concentration_prior_type == "dirichlet_process"
    self.weight_concentration_ = (conc[0], conc[1]) if dp else conc
    self.mean_precision_ = to_np(params.mean_precision)
    self.means_ = to_np(params.means)
    self.degrees_of_freedom_ = to_np(params.degrees_of_freedom)
    self.covariances_ = to_np(params.covariances)
    self.weights_ = to_np(bayesian.expected_weights(params))
    prec_chol, prec = _mixture._precision_factors(bayesian.to_gmm_params(params))  # pylint: disable=protected-access
    self.precisions_cholesky_ = to_np(prec_chol)
    self.precisions_ = to_np(prec)

  def _get_bayesian_params(self, dtype=None) -> bayesian.BayesianGMMParams:
    """The fitted posterior as ``BayesianGMMParams`` (call inside ``_common.precision``)."""
    check_is_fitted(self)
    conv = lambda a: jnp.asarray(a, dtype)  # pylint: disable=unnecessary-lambda-assignment
    conc = self.weight_concentration_
    conc = jnp.stack([conv(conc[0]), conv(conc[1])]) if isinstance(conc, tuple) else conv(conc)
    return bayesian.BayesianGMMParams(conc, conv(self.mean_precision_), conv(self.means_),
                                      conv(self.degrees_of_freedom_), conv(self.covariances_),
                                      self.covariance_type, self.weight_concentration_prior_type)

  # The point estimate (weights_, means_, covariances_) as ``gmm.GMMParams``, what ``sample``
  # draws from: GaussianMixture's.
  _get_gmm_params = _mixture.GaussianMixture._get_gmm_params  # pylint: disable=protected-access

  @property
  def params_(self) -> bayesian.BayesianGMMParams:
    """The fitted posterior as ``lvmjax.gmm.bayesian.BayesianGMMParams``."""
    check_is_fitted(self)
    with _common.precision(self.means_.dtype):
      return self._get_bayesian_params(self.means_.dtype)

  # scikit-learn's private parameter interface, which its tests call.

  def _get_parameters(self):
    return (self.weight_concentration_, self.mean_precision_, self.means_,
            self.degrees_of_freedom_, self.covariances_, self.precisions_cholesky_)

  def _set_parameters(self, params, xp=None):
    del xp
    (self.weight_concentration_, self.mean_precision_, self.means_, self.degrees_of_freedom_,
     self.covariances_, _) = params
    dtype = _common.compute_dtype(np.asarray(self.means_).dtype)
    with _common.precision(dtype):
      self._set_bayesian_params(self._get_bayesian_params(dtype))

  def _initialize(self, X, resp):
    """scikit-learn's ``_initialize``: the M-step from responsibilities ``resp`` (N, K)."""
    x = _common.validate_x(self, X, reset=not hasattr(self, "n_features_in_"))
    dtype = np.dtype(x.dtype)
    family = self._check_parameters(x)
    with _common.precision(dtype):
      self._set_bayesian_params(bayesian.params_from_responsibilities(
          family, _common.to_device(x, dtype), resp))

  def _initialize_parameters(self, X, random_state, xp=None):
    """scikit-learn's ``_initialize_parameters``: the initialisation of ``init_params`` drawn
    with a key from ``random_state``."""
    del xp
    x = _common.validate_x(self, X, reset=not hasattr(self, "n_features_in_"))
    dtype = np.dtype(x.dtype)
    family = self._check_parameters(x)
    key = _common.key_from_random_state(random_state)
    with _common.precision(dtype):
      result = bayesian.fit(key, _common.to_device(x, dtype), self.n_components,
                            init=self.init_params, max_iter=0, **self._prior_options(family))
      self._set_bayesian_params(result.params)

  # ------------------------------------------------------------------------------------------
  # Inference.

  def _rows(self, fn, X):
    check_is_fitted(self)
    x = _common.validate_x(self, X, reset=False)
    return _common.fitted_rows(fn, x, self.means_.dtype, self.means_.size,
                               self._get_bayesian_params)

  def predict(self, X):
    """The most probable component of each row, (N,) int64."""
    return self._rows(bayesian.map_latent, X).astype(np.int64)

  def predict_proba(self, X):
    """The variational responsibilities, (N, K)."""
    return self._rows(bayesian.posterior, X)

  def score_samples(self, X):
    """scikit-learn's ``score_samples``: log of the sum of the E-step's weighted probabilities."""
    return self._rows(bayesian.score_samples, X)

  def score(self, X, y=None):
    """The mean of ``score_samples(X)``."""
    del y
    return float(np.mean(self.score_samples(X), dtype=np.float64))

  # Draws from the point estimate (weights_, means_, covariances_), as scikit-learn's.
  sample = _mixture.GaussianMixture.sample


def _shape(param, shape, name):
  """scikit-learn's shape message."""
  if param.shape != shape:
    raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got "
                     f"{param.shape}")
