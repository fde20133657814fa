"""Data drawn from a known Gaussian mixture, for checking that a fit recovers the truth."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from lvmjax import _checks


class SyntheticGMM(NamedTuple):
  """The true mixture: weights (K,), means (K, D), full covariances (K, D, D)."""
  weights: np.ndarray
  means: np.ndarray
  covariances: np.ndarray


def make_gmm(seed: int = 0, num_components: int = 4, num_features: int = 2,
             separation: float = 4.0) -> SyntheticGMM:
  """Draws a random mixture whose means are at least ``separation`` apart.

  Weights ~ Dirichlet(5, ..., 5); covariances A Aᵀ / D + 0.2 I with A ~ N(0, 1) (D x D), so each
  component has unit-order spread; means ~ N(0, s² I) with s grown until every pair of means is at
  least ``separation`` apart.

  Args:
    seed: the seed; the same seed gives the same mixture.
    num_components: K.
    num_features: D.
    separation: smallest distance between two means, in units of the components' spread.

  Returns:
    A :class:`SyntheticGMM` (float64 numpy arrays).
  """
  k = _checks.check_positive_int(num_components, "num_components")
  d = _checks.check_positive_int(num_features, "num_features")
  separation = _checks.check_nonnegative(separation, "separation")
  rng = np.random.default_rng([seed, 0])
  weights = rng.dirichlet(np.full(k, 5.0))
  a = rng.normal(size=(k, d, d))
  covariances = a @ np.swapaxes(a, 1, 2) / d + 0.2 * np.eye(d)
  scale = max(separation, 1.0)
  for _ in range(1000):
    means = rng.normal(scale=scale, size=(k, d))
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(k) * 1e300
    if dist.min() >= separation:
      break
    scale *= 1.02
  return SyntheticGMM(weights, means, covariances)


def sample(truth: SyntheticGMM, num_points: int,
           seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Draws ``num_points`` points and their components from ``truth``.

  Args:
    truth: the mixture.
    num_points: how many points.
    seed: a seed or sequence of seeds for ``numpy.random.default_rng``.

  Returns:
    x (num_points, D) float32 and z (num_points,) int32.
  """
  n = _checks.check_positive_int(num_points, "num_points")
  rng = np.random.default_rng(seed)
  z = rng.choice(len(truth.weights), size=n, p=truth.weights)
  chol = np.linalg.cholesky(truth.covariances)
  eps = rng.normal(size=(n, truth.means.shape[1]))
  x = truth.means[z] + np.einsum("nij,nj->ni", chol[z], eps)
  return x.astype(np.float32), z.astype(np.int32)


def load_split(split: str, *, seed: int = 0, num_points: int = 1000, num_components: int = 4,
               num_features: int = 2, separation: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
  """Train or test points of the mixture ``make_gmm(seed, ...)``; the splits are independent draws."""
  truth = make_gmm(seed, num_components, num_features, separation)
  return sample(truth, num_points, seed=[seed, 1 if split == "train" else 2])
