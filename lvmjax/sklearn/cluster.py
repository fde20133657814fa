r"""``KMeans``: scikit-learn's estimator, fitted by lvmjax's Lloyd iterations (``lvmjax.kmeans``).

A drop-in replacement for ``sklearn.cluster.KMeans``. The iterations, the relative ``tol``, the
convergence tests, ``n_iter``, the relocation of empty clusters and the final re-assignment are
those of ``lvmjax.kmeans.fit``, which follows scikit-learn's Lloyd algorithm step by step, so from
the same initial centroids both give the same clustering (to rounding).

.. math::

  J = \sum_i w_i \min_k \lVert x_i - c_k \rVert^2

Examples:
  >>> import numpy as np
  >>> from lvmjax.sklearn import KMeans
  >>> x = np.array([[0., 0.], [0., 1.], [10., 10.], [10., 11.]])
  >>> km = KMeans(n_clusters=2, random_state=0).fit(x)
  >>> sorted(km.cluster_centers_[:, 1].tolist())
  [0.5, 10.5]
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import cluster as _sk_cluster
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin,
                          TransformerMixin)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from lvmjax import kmeans
from lvmjax.sklearn import _common


@jax.jit
def _predict(centroids, x):
  return kmeans.predict(centroids, x)


@jax.jit
def _distances(centroids, x):
  shift = jnp.mean(centroids, axis=0)  # centred: the matrix-product distances keep precision
  return jnp.sqrt(kmeans.squared_distances(x - shift[None, :], centroids - shift[None, :]))


@jax.jit
def _inertia(centroids, x, sample_weight):
  shift = jnp.mean(centroids, axis=0)
  return kmeans.inertia(x - shift[None, :], centroids - shift[None, :], sample_weight)


class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
  """K-means by Lloyd's algorithm on the device: ``sklearn.cluster.KMeans``'s interface.

  Change ``from sklearn.cluster import KMeans`` to ``from lvmjax.sklearn import KMeans``. The whole
  fit (seeding, iterations, the ``n_init`` restarts as one ``jax.vmap``) is one compiled call per
  data shape and configuration.

  Differences from scikit-learn:

  * Random numbers come from JAX: ``random_state=s`` (an int) is ``jax.random.key(s)``. From an
    ``init`` array both libraries give the same fit.
  * ``algorithm`` is accepted for compatibility; "elkan" runs Lloyd's iterations too (Elkan's
    algorithm reaches the same centroids, it only skips distance computations).
  * ``copy_x`` is accepted and has no effect: X is never modified.
  * A callable ``init`` is called with the uncentred data (scikit-learn passes X minus its mean),
    once per restart, with the ``RandomState`` from ``random_state``.
  * Among restarts, the one of lowest inertia wins (scikit-learn also skips a lower inertia when
    its clustering equals the best's up to a relabelling).
  * dtypes: as ``GaussianMixture`` (float64 needs JAX's x64 mode, else float32).

  Args:
    n_clusters: number of clusters K.
    init: "k-means++", "random", a (K, D) array of initial centroids, or a callable
      ``init(X, n_clusters, random_state) -> (K, D)``.
    n_init: number of restarts, or "auto" (1 for "k-means++" and arrays, 10 otherwise).
    max_iter: maximum number of Lloyd iterations (>= 1).
    tol: relative tolerance: stop when the squared centroid shift is at most
      ``tol * mean(var(X, axis=0))``.
    verbose: print the inertia of each iteration after the fit.
    random_state: None, an int or a ``numpy.random.RandomState``.
    copy_x: ignored (see above).
    algorithm: "lloyd" or "elkan" (see above).

  Attributes:
    cluster_centers_: (K, D) centroids.
    labels_: (N,) int32 labels of the training points.
    inertia_: sum of (weighted) squared distances to the closest centroid.
    n_iter_: number of Lloyd iterations of the best restart.
    n_features_in_: D; ``feature_names_in_`` when X had string column names.
  """

  _parameter_constraints: dict = dict(_sk_cluster.KMeans._parameter_constraints)

  def __init__(self, n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300, tol=1e-4,
               verbose=0, random_state=None, copy_x=True, algorithm="lloyd"):
    self.n_clusters = n_clusters
    self.init = init
    self.n_init = n_init
    self.max_iter = max_iter
    self.tol = tol
    self.verbose = verbose
    self.random_state = random_state
    self.copy_x = copy_x
    self.algorithm = algorithm

  def _resolved_n_init(self) -> int:
    if self.n_init != "auto":
      return int(self.n_init)
    if isinstance(self.init, str):
      return 1 if self.init == "k-means++" else 10
    return 10 if callable(self.init) else 1

  def _check_centers(self, centers, d: int, dtype) -> jax.Array:
    c = np.asarray(centers)
    if c.ndim != 2 or not np.issubdtype(c.dtype, np.number):
      raise ValueError(f"The initial centers must be a 2-D numeric array, got shape {c.shape}.")
    if c.shape[0] != self.n_clusters:
      raise ValueError(f"The shape of the initial centers {c.shape} does not match the number "
                       f"of clusters {self.n_clusters}.")
    if c.shape[1] != d:
      raise ValueError(f"The shape of the initial centers {c.shape} does not match the number "
                       f"of features of the data {d}.")
    if not np.all(np.isfinite(c)):
      raise ValueError("The initial centers contain NaN or infinity.")
    return jnp.asarray(c, dtype)

  def fit(self, X, y=None, sample_weight=None):
    """Computes the clustering.

    Args:
      X: (N, D) data (NumPy, JAX, list, DataFrame).
      y: ignored.
      sample_weight: optional (N,) non-negative weights (used by the seeding too, not by an
        array or callable ``init``).

    Returns:
      self.
    """
    del y
    self._validate_params()
    x = _common.validate_x(self, X, reset=True)
    n, d = x.shape
    k = self.n_clusters
    if n < k:
      raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
    n_init = self._resolved_n_init()
    init = self.init
    if not isinstance(init, str) and not callable(init):
      init = self._check_centers(init, d, x.dtype)
      if n_init != 1:
        warnings.warn("Explicit initial center position passed: performing only one init in "
                      f"{type(self).__name__} instead of n_init={n_init}.", RuntimeWarning,
                      stacklevel=2)
        n_init = 1
    w = _common.validate_sample_weight(sample_weight, n, x.dtype)
    key = _common.key_from_random_state(self.random_state)
    fit_args = dict(max_iter=self.max_iter, tol=self.tol, sample_weight=w)
    if callable(init):
      rng = check_random_state(self.random_state)
      x_host = _common.to_numpy(x)
      result = None
      for _ in range(n_init):
        c0 = self._check_centers(init(x_host, k, random_state=rng), d, x.dtype)
        r = kmeans.fit(key, x, k, init=c0, n_init=1, **fit_args)
        if result is None or float(r.inertia) < float(result.inertia):
          result = r
    else:
      result = kmeans.fit(key, x, k, init=init, n_init=n_init, **fit_args)
    self.cluster_centers_ = _common.to_numpy(result.centroids)
    self.labels_ = _common.to_numpy(result.labels).astype(np.int32)
    self.inertia_ = float(result.inertia)
    self.n_iter_ = int(result.n_iter)
    self._n_features_out = k
    if self.verbose:
      print("Initialization complete")
      for i, v in enumerate(np.asarray(result.inertia_history)[:self.n_iter_]):
        print(f"Iteration {i}, inertia {v}.")
      if bool(result.converged):
        print(f"Converged at iteration {self.n_iter_ - 1}.")
    distinct = len(np.unique(self.labels_))
    if distinct < k:
      warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                    f"({k}). Possibly due to duplicate points in X.", ConvergenceWarning,
                    stacklevel=2)
    return self

  def fit_predict(self, X, y=None, sample_weight=None):
    """Fits and returns ``labels_``."""
    return self.fit(X, y, sample_weight).labels_

  def fit_transform(self, X, y=None, sample_weight=None):
    """Fits and returns the distances of X to the centroids, (N, K)."""
    return self.fit(X, y, sample_weight).transform(X)

  def _test_data(self, X) -> jax.Array:
    check_is_fitted(self)
    return _common.validate_x(self, X, reset=False)

  def predict(self, X):
    """Closest centroid of each row, (N,) int32."""
    x = self._test_data(X)
    return _common.to_numpy(_predict(jnp.asarray(self.cluster_centers_, x.dtype), x))

  def transform(self, X):
    """Euclidean distances of each row to each centroid, (N, K)."""
    x = self._test_data(X)
    return _common.to_numpy(_distances(jnp.asarray(self.cluster_centers_, x.dtype), x))

  def score(self, X, y=None, sample_weight=None):
    """The opposite of the (weighted) K-means objective of X: ``-sum_i w_i min_k |x_i - c_k|^2``."""
    del y
    x = self._test_data(X)
    w = _common.validate_sample_weight(sample_weight, x.shape[0], x.dtype)
    if w is None:
      w = jnp.ones(x.shape[0], x.dtype)
    return -float(_inertia(jnp.asarray(self.cluster_centers_, x.dtype), x, w))
