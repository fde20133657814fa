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

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import cluster as _sk_cluster
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin,
                          TransformerMixin)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from lvmjax import kmeans
from lvmjax.sklearn import _common


@functools.partial(jax.jit, static_argnames=("num_clusters", "init"))
def _seed_indices(keys, x, sample_weight, *, num_clusters, init):
  """Row indices of the seeds of each restart ("k-means++" or "random"), one per key."""
  seed = kmeans.kmeans_plusplus if init == "k-means++" else kmeans.random_init
  return jax.vmap(lambda key: seed(key, x, num_clusters, sample_weight)[1])(keys)


@jax.jit
def _predict(centroids, x):
  return kmeans.predict(centroids, x)


@jax.jit
def _distances(centroids, x):
  """Euclidean distances (N, K) as direct differences: exact (0 for a point on a centroid), at
  O(N K D) memory, so ``transform`` calls it in row blocks."""
  return jnp.sqrt(jnp.sum((x[:, None, :] - centroids[None, :, :]) ** 2, axis=-1))


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

  * Random numbers come from JAX: restart r of ``random_state=s`` (an int) is seeded by
    ``lvmjax.kmeans.kmeans_plusplus`` or ``random_init`` with key
    ``jax.random.split(jax.random.key(s), n_init)[r]`` (as ``lvmjax.kmeans.fit`` seeds its
    restarts), so more restarts never end worse. The seeds are drawn on X in float32, so that
    float32 and float64 X get the same seeds (as in scikit-learn). From an ``init`` array both
    libraries give the same fit. The restarts run one after another, each one compiled call.
  * ``algorithm="elkan"`` gives the same result as "lloyd", as in scikit-learn: it runs
    ``lvmjax.kmeans.fit(..., algorithm="hamerly")`` (Lloyd's iterations with Hamerly's bounds
    skipping distances, the same idea as Elkan's with one lower bound per point instead of K),
    and "lloyd" runs ``kmeans.fit``'s default (``"auto"``: Hamerly's bounds on a CPU for large
    problems, every distance otherwise).
  * Sparse X (SciPy CSR, e.g. tf-idf vectors) is accepted: a fit densifies it on the device (it
    refuses, naming the fix, above ``2**30`` entries), predict-like methods densify it in blocks
    of rows. The result equals that of the dense X.
  * ``copy_x`` is accepted and has no effect: X is never modified.
  * A callable ``init`` is called with the uncentred data (scikit-learn passes X minus its mean),
    once per restart, with the ``RandomState`` from ``random_state``.
  * Among restarts, the one of lowest inertia wins (scikit-learn also skips a lower inertia when
    its clustering equals the best's up to a relabelling).
  * dtypes are scikit-learn's: float32 input is fitted in float32, float64 and integer input in
    float64 (JAX's x64 mode is turned on only around the estimator's computation, with the
    scoped ``jax.enable_x64(True)``).
  * ``verbose`` prints scikit-learn's messages after the compiled fit, for the returned restart
    (for the "center shift" message the fit is run again to one iteration fewer).

  Args:
    n_clusters: number of clusters K.
    init: "k-means++", "random", a (K, D) array of initial centroids, or a callable
      ``init(X, n_clusters, random_state) -> (K, D)``.
    n_init: number of restarts, or "auto" (1 for "k-means++" and arrays, 10 otherwise).
    max_iter: maximum number of Lloyd iterations (>= 1).
    tol: relative tolerance: stop when the squared centroid shift is at most
      ``tol * mean(var(X, axis=0))``.
    verbose: print scikit-learn's messages (iterations, inertia, convergence) after the fit.
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

  def __sklearn_tags__(self):
    tags = super().__sklearn_tags__()
    tags.input_tags.sparse = True
    return tags

  def _resolved_n_init(self) -> int:
    if self.n_init != "auto":
      return int(self.n_init)
    if isinstance(self.init, str):
      return 1 if self.init == "k-means++" else 10
    return 10 if callable(self.init) else 1

  def _check_centers(self, centers, d: int, dtype) -> jax.Array:
    """scikit-learn's checks of initial centres (same messages); a device array of ``dtype``."""
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

  def _check_params_vs_input(self, n: int) -> None:
    """scikit-learn's checks and derived settings: ``_n_init``, ``_algorithm``, warnings."""
    k = self.n_clusters
    if n < k:
      raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
    self._n_init = self._resolved_n_init()
    if not isinstance(self.init, str) and not callable(self.init) and self._n_init != 1:
      warnings.warn("Explicit initial center position passed: performing only one init in "
                    f"{type(self).__name__} instead of n_init={self._n_init}.", RuntimeWarning,
                    stacklevel=3)
      self._n_init = 1
    self._algorithm = self.algorithm
    if self._algorithm == "elkan" and k == 1:
      warnings.warn("algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' "
                    "instead.", RuntimeWarning, stacklevel=3)
      self._algorithm = "lloyd"

  def fit(self, X, y=None, sample_weight=None):
    """Computes the clustering.

    Args:
      X: (N, D) data (NumPy, JAX, list, DataFrame, SciPy sparse).
      y: ignored.
      sample_weight: optional (N,) non-negative weights (used by the seeding too, not by an
        array or callable ``init``).

    Returns:
      self.
    """
    del y
    self._validate_params()
    x = _common.validate_x(self, X, reset=True, accept_sparse=True)
    n, d = x.shape
    self._check_params_vs_input(n)
    dtype = np.dtype(x.dtype)
    with _common.precision(dtype):
      xj = _common.to_device(x, dtype)
      init = self.init
      if not isinstance(init, str) and not callable(init):
        init = self._check_centers(init, d, dtype)
      w = _common.validate_sample_weight(sample_weight, n, dtype)
      key = _common.key_from_random_state(self.random_state)
      # "elkan" (bounds that skip distances) is Hamerly's bounds here, whatever the size;
      # "lloyd" is kmeans.fit's default, which uses them where they pay (the same result).
      fit_args = dict(max_iter=self.max_iter, tol=self.tol, sample_weight=w,
                      algorithm="hamerly" if self._algorithm == "elkan" else "auto")
      if callable(init):
        rng = check_random_state(self.random_state)
        x_host = x if not isinstance(x, jax.Array) else _common.to_numpy(x)
        inits = [self._check_centers(init(x_host, self.n_clusters, random_state=rng), d, dtype)
                 for _ in range(self._n_init)]
      elif isinstance(init, str):
        w32 = jnp.ones(n, jnp.float32) if w is None else w.astype(jnp.float32)
        seeds = _seed_indices(_common.restart_keys(key, self._n_init), xj.astype(jnp.float32),
                              w32, num_clusters=self.n_clusters, init=init)
        inits = [xj[idx] for idx in seeds]
      else:
        inits = [init]
      result, chosen = None, None
      for c0 in inits:  # the first of the lowest inertia, as kmeans.fit's restarts
        r = kmeans.fit(key, xj, self.n_clusters, init=c0, n_init=1, **fit_args)
        if result is None or float(r.inertia) < float(result.inertia):
          result, chosen = r, c0
      self.cluster_centers_ = _common.to_numpy(result.centroids)
      self.labels_ = _common.to_numpy(result.labels).astype(np.int32)
      self.inertia_ = float(result.inertia)
      self.n_iter_ = int(result.n_iter)
      self._n_features_out = self.n_clusters
      if self.verbose:
        self._print_verbose(key, xj, chosen, result, fit_args)
    distinct = len(np.unique(self.labels_))
    if distinct < self.n_clusters:
      warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                    f"({self.n_clusters}). Possibly due to duplicate points in X.",
                    ConvergenceWarning, stacklevel=2)
    return self

  def _print_verbose(self, key, x, init, result, fit_args) -> None:  # pylint: disable=too-many-arguments
    """scikit-learn's verbose messages for the returned run (inside ``precision``).

    Iteration i's inertia is that of iteration i's labels against the centroids they were
    assigned to (``inertia_history``), as scikit-learn prints it. The convergence message needs
    the centroid shift of the last iteration: the run is repeated (same key and init) to one
    iteration fewer. A last shift of exactly 0 is reported as strict convergence (the labels did
    not change), otherwise the shift is compared with the tolerance.
    """
    period = "" if self._algorithm == "elkan" else "."
    print("Initialization complete")
    for i, v in enumerate(np.asarray(result.inertia_history)[:self.n_iter_]):
      print(f"Iteration {i}, inertia {v}{period}")
    if not bool(result.converged):
      return
    i = self.n_iter_ - 1
    before = kmeans.fit(key, x, self.n_clusters, init=init, n_init=1,
                        **{**fit_args, "max_iter": i})
    shift = float(jnp.sum((result.centroids - before.centroids) ** 2))
    if i > 0 and shift == 0:
      print(f"Converged at iteration {i}: strict convergence.")
    else:
      tol = float(self.tol * jnp.mean(jnp.var(x, axis=0)))
      print(f"Converged at iteration {i}: center shift {shift} within tolerance {tol}.")

  def _init_centroids(self, X, x_squared_norms, init, random_state, sample_weight,
                      init_size=None, n_centroids=None):
    """scikit-learn's ``_init_centroids``: initial centres of X (NumPy, (n_centroids, D)).

    "k-means++" and "random" use ``lvmjax.kmeans.kmeans_plusplus`` and ``random_init`` with a
    key drawn from ``random_state``; an array is returned as is; a callable is called.
    ``x_squared_norms`` is not needed and ignored.
    """
    del x_squared_norms
    x = check_array(X, accept_sparse="csr", dtype=[np.float64, np.float32])
    k = self.n_clusters if n_centroids is None else n_centroids
    rng = check_random_state(random_state)
    w = np.ones(x.shape[0]) if sample_weight is None else np.asarray(sample_weight)
    if init_size is not None and init_size < x.shape[0]:
      idx = rng.randint(0, x.shape[0], init_size)
      x, w = x[idx], w[idx]
    if isinstance(init, str):
      dtype = np.dtype(x.dtype)
      with _common.precision(dtype):
        xj, wj = _common.to_device(x, dtype), jnp.asarray(w, dtype)
        key = _common.key_from_random_state(rng)
        seed = kmeans.kmeans_plusplus if init == "k-means++" else kmeans.random_init
        return _common.to_numpy(seed(key, xj, k, wj)[0])
    if callable(init):
      centers = check_array(init(x, k, random_state=rng), dtype=x.dtype)
      self._check_centers(centers, x.shape[1], x.dtype)
      return centers
    return np.asarray(init)

  def fit_predict(self, X, y=None, sample_weight=None):
    """Fits and returns ``labels_``."""
    return self.fit(X, y, sample_weight).labels_

  def fit_transform(self, X, y=None, sample_weight=None):
    """Fits and returns the distances of X to the centroids, (N, K)."""
    return self.fit(X, y, sample_weight).transform(X)

  def _blocks(self, X, fn):
    """``fn(centroids, x_block)`` over X's rows (dense X: one block; sparse X: densified
    blocks), in the dtype of X or of the fit (float64 if either is), as NumPy arrays."""
    check_is_fitted(self)
    x = _common.validate_x(self, X, reset=False, accept_sparse=True)
    dtype = _common.compute_dtype(x.dtype, self.cluster_centers_.dtype)
    with _common.precision(dtype):
      c = jnp.asarray(self.cluster_centers_, dtype)
      return [_common.to_numpy(fn(c, xb)) for xb in _common.dense_blocks(x, dtype)]

  def predict(self, X):
    """Closest centroid of each row, (N,) int32."""
    return np.concatenate(self._blocks(X, _predict))

  def transform(self, X):
    """Euclidean distances of each row to each centroid, (N, K)."""
    check_is_fitted(self)
    k, d = self.cluster_centers_.shape
    block = max(256, _common.BLOCK_FLOATS // (k * d))
    return np.concatenate(self._blocks(X, lambda c, xb: _common.row_blocks(
        lambda rows: _distances(c, rows), xb, block)))

  def score(self, X, y=None, sample_weight=None):
    """The opposite of the (weighted) K-means objective of X: ``-sum_i w_i min_k |x_i - c_k|^2``."""
    del y
    check_is_fitted(self)
    x = _common.validate_x(self, X, reset=False, accept_sparse=True)
    n = x.shape[0]
    dtype = _common.compute_dtype(x.dtype, self.cluster_centers_.dtype)
    with _common.precision(dtype):
      w = _common.validate_sample_weight(sample_weight, n, dtype)
      w = jnp.ones(n, dtype) if w is None else w
      c = jnp.asarray(self.cluster_centers_, dtype)
      total, start = 0.0, 0
      for xb in _common.dense_blocks(x, dtype):
        total += float(_inertia(c, xb, w[start:start + xb.shape[0]]))
        start += xb.shape[0]
    return -total
