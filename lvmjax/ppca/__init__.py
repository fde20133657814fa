r"""Probabilistic PCA and factor analysis: exact linear-Gaussian latent variable models.

p(z) = N(0, I_L), p(x | z) = N(W z + mu, Psi) with Psi = sigma^2 I (PPCA) or diagonal (FA), so
p(x) = N(mu, W W^T + Psi) and p(z | x) are exact. They are the ground truth for the VAE estimators:
a VAE with ``LinearDecoder`` and a fixed-scale ``GaussianLikelihood`` *is* PPCA.

Public API:
  ``PPCAParams(weight (D, L), mean (D,), noise_variance () or (D,))``, ``check_params(params)``
  ``log_marginal(params, x) -> (N,)``, ``log_joint(params, x, z) -> (N,)``
  ``posterior(params, x) -> (mean (N, L), covariance (L, L))``, ``map_latent(params, x) -> (N, L)``
  ``sample(params, key, n) -> (x, z)``, ``sample_given(params, key, z) -> x``
  ``covariance(params) -> (D, D)``, ``num_parameters(params)``
  ``fit_ppca(x, num_latents) -> PPCAParams`` (closed form)
  ``fit_em(key, x, num_latents, model="ppca"|"fa", max_iter=1000, tol=1e-6, init="random"|"pca"|
  PPCAParams) -> EMResult(params, log_likelihood, n_iter, converged)``; ``em_step(params, x, model)``

Examples:
  >>> import jax
  >>> from lvmjax import ppca
  >>> x = jax.random.normal(jax.random.key(0), (500, 5))
  >>> params = ppca.fit_ppca(x, num_latents=2)
  >>> ppca.log_marginal(params, x).shape
  (500,)
"""
from lvmjax.ppca.fit import EMResult, MODELS, em_step, fit_em, fit_ppca
from lvmjax.ppca.model import (PPCAParams, check_params, covariance, log_joint, log_marginal,
                               map_latent, num_parameters, posterior, sample, sample_given)

__all__ = [
    "PPCAParams", "EMResult", "MODELS", "check_params", "covariance", "log_marginal", "log_joint",
    "posterior", "map_latent", "sample", "sample_given", "num_parameters", "fit_ppca", "fit_em",
    "em_step",
]
