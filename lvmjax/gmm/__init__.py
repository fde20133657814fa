"""The Gaussian mixture model: density, posterior, sampling, and EM on sufficient statistics.

Public API (see the README)::

  params = gmm.GMMParams(weights, means, covariances, covariance_type)
  gmm.log_joint(params, x, mask=None)  # (..., K)  log p(x, z=k); mask: True = observed
  gmm.log_marginal(params, x)    # (...,)    log p(x)
  gmm.posterior(params, x)       # (..., K)  p(z=k | x)
  gmm.map_latent(params, x)      # (...,)    argmax_k p(z=k | x)
  gmm.sample(params, key, n)     # (x, z); the old order (key, params, n) works too
  gmm.sample_given(params, key, z)
  result = gmm.fit(key, x, num_components, covariance_type="full", init="kmeans", n_init=1,
                   max_iter=100, tol=1e-3, reg_covar=1e-6, sample_weight=None,
                   fixed=(), missing="error")  # fixed: kept at init's values bit for bit;
                                               # missing="marginalize": NaN = missing entries
  gmm.impute(params, x, mask); gmm.sample_missing(params, key, x, mask)
  gmm.e_step(params, x, sample_weight) -> SuffStats;  gmm.m_step(params, stats, reg_covar)
  gmm.em_step(params, x, sample_weight) -> (params, mean log-likelihood)
  gmm.num_parameters(params); gmm.bic(params, x); gmm.aic(params, x)
  gmm.first_components(params, k)  # the k-component fit of gmm.fit(..., num_active=k)
"""
from lvmjax.gmm.em import (FIXABLE, GMMFitResult, INITS, MissingGaussianFamily, SuffStats,
                           default_chunk_size, e_step, em_step, fit, m_step,
                           params_from_responsibilities)
from lvmjax.gmm.missing import MISSING, impute, sample_missing
from lvmjax.gmm.model import (COVARIANCE_TYPES, GMMParams, aic, bic, check_params, cholesky,
                              covariance_shape, first_components, log_joint, log_marginal, map_latent,
                              num_parameters, posterior, sample, sample_given)

__all__ = [
    "COVARIANCE_TYPES", "FIXABLE", "GMMFitResult", "GMMParams", "INITS", "MISSING",
    "MissingGaussianFamily", "SuffStats", "aic", "bic", "check_params", "cholesky",
    "covariance_shape", "default_chunk_size", "e_step", "em_step", "first_components", "fit",
    "impute", "log_joint",
    "log_marginal", "m_step", "map_latent", "num_parameters", "params_from_responsibilities",
    "posterior", "sample", "sample_given", "sample_missing",
]

# Data beyond memory: exact EM over batches, and stepwise online EM for one pass over a stream.
from lvmjax.gmm import online, streaming  # pylint: disable=g-import-not-at-top,g-bad-import-order
# Fitting by gradient descent: softmax logits and Cholesky factors with a positive diagonal.
from lvmjax.gmm import unconstrained  # pylint: disable=g-import-not-at-top,g-bad-import-order
from lvmjax.gmm import bayesian  # pylint: disable=g-import-not-at-top,g-bad-import-order
# Mixtures of factor analysers and of PPCA (low-rank covariances): gmm.factor.fit(...).
from lvmjax.gmm import factor  # pylint: disable=g-import-not-at-top,g-bad-import-order
