"""lvmjax.gmm.unconstrained: the softmax/Cholesky parameterisation, and Adam on it reaching EM."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lvmjax import gmm
from lvmjax.gmm import unconstrained

_COVS = {"full": np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.0]],
                           [[0.4, 0.0], [0.0, 0.4]]]),
         "tied": np.array([[1.0, 0.3], [0.3, 0.5]]),
         "diag": np.array([[1.0, 0.5], [0.6, 1.0], [0.4, 0.3]]),
         "spherical": np.array([1.0, 0.6, 0.4])}


@pytest.mark.parametrize("covariance_type", list(_COVS))
def test_round_trip_and_every_real_array_is_a_valid_mixture(x64, covariance_type):
  params = gmm.GMMParams(jnp.array([0.5, 0.3, 0.2]), jnp.array([[0., 0.], [4., 1.], [-3., 3.]]),
                         jnp.asarray(_COVS[covariance_type]), covariance_type)
  u = unconstrained.to_unconstrained(params)
  back = unconstrained.from_unconstrained(u)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, atol=1e-12)
  assert back.covariance_type == covariance_type
  rng = np.random.default_rng(0)
  noisy = jax.tree.map(lambda a: a + 3.0 * rng.normal(size=a.shape), u)
  gmm.check_params(unconstrained.from_unconstrained(noisy))  # weights on the simplex, PD covs
  np.testing.assert_allclose(unconstrained.log_marginal(u, np.zeros((4, 2))),
                             gmm.log_marginal(params, np.zeros((4, 2))), rtol=1e-12)


def test_to_unconstrained_refuses_an_invalid_mixture():
  bad = gmm.GMMParams(jnp.array([0.5, 0.5]), jnp.zeros((2, 1)), jnp.array([1.0, -1.0]),
                      "spherical")
  with pytest.raises(ValueError, match="strictly positive"):
    unconstrained.to_unconstrained(bad)


def _adam_against_em(covariance_type, num_steps, tol):
  # Three 2-D clusters (numpy draws: nothing to compile), 400 points.
  rng = np.random.default_rng(0)
  centers = np.array([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]])
  x = np.concatenate([rng.multivariate_normal(c, s, n) for c, s, n in
                      zip(centers, _COVS["full"], (200, 120, 80))])
  # One start for both: equal weights, three data points as means, unit covariances.
  k, d = 3, 2
  cov = {"full": np.stack([np.eye(d)] * k), "tied": np.eye(d), "diag": np.ones((k, d)),
         "spherical": np.ones(k)}[covariance_type]
  start = gmm.GMMParams(jnp.full((k,), 1.0 / k), jnp.asarray(x[[0, 250, 350]]), jnp.asarray(cov),
                        covariance_type)
  em = gmm.fit(jax.random.key(0), x, k, covariance_type, init=start, max_iter=2000, tol=1e-12,
               reg_covar=0.0)
  assert bool(em.converged)
  opt = optax.adam(0.05)
  loss = lambda u: -unconstrained.log_marginal(u, x).mean()  # pylint: disable=unnecessary-lambda-assignment

  @jax.jit
  def descend(u):
    def step(carry, _):
      u, state = carry
      updates, state = opt.update(jax.grad(loss)(u), state)
      return (optax.apply_updates(u, updates), state), None
    return jax.lax.scan(step, (u, opt.init(u)), None, length=num_steps)[0][0]

  u = descend(unconstrained.to_unconstrained(start))
  fitted = unconstrained.from_unconstrained(u)
  ll_em = float(gmm.log_marginal(em.params, x).mean())
  ll_gd = float(gmm.log_marginal(fitted, x).mean())
  assert ll_gd <= ll_em + 1e-9  # EM's fixed point is a maximum: Adam does not pass it
  assert ll_em - ll_gd < tol, (ll_em, ll_gd)
  np.testing.assert_allclose(fitted.means, em.params.means, atol=2e-2)
  np.testing.assert_allclose(fitted.weights, em.params.weights, atol=1e-2)


def test_adam_on_the_unconstrained_parameters_reaches_em(x64):
  """float64: Adam on the negative mean log-likelihood ends where EM converges (same start)."""
  _adam_against_em("full", num_steps=1500, tol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_adam_reaches_em_for_every_covariance_type(x64, covariance_type):
  _adam_against_em(covariance_type, num_steps=3000, tol=1e-4)
