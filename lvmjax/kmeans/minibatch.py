r"""Mini-batch K-means (Sculley, 2010), as scikit-learn's ``MiniBatchKMeans``.

Each step draws a mini-batch, assigns its points to the closest centroid and moves every
centroid towards the mean of its new points with a per-centroid learning rate, the inverse of
the total weight it has received so far:

.. math::

  n_k \leftarrow n_k + \sum_{i \in B, z_i = k} w_i, \qquad
  c_k \leftarrow c_k + \frac{1}{n_k} \sum_{i \in B, z_i = k} w_i (x_i - c_k),

i.e. :math:`c_k` is the running weighted mean of every point ever assigned to it. Memory is one
mini-batch, so the data may be a stream or a memmap far larger than memory.

Not included: scikit-learn's random reassignment of centroids with few points
(``reassignment_ratio``) and its early stopping on the smoothed batch inertia; run a fixed number
of steps or epochs, and refine with :func:`lvmjax.kmeans.fit` from the result if wanted.

References:
  D. Sculley. Web-scale k-means clustering. WWW 2010.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import data as data_lib
from lvmjax.kmeans import kmeans as _km
from lvmjax.types import Centroids, DataLike, Key, WeightsLike


class MiniBatchState(NamedTuple):
  """State of mini-batch K-means (a pytree).

  Attributes:
    centroids: (K, D) current centroids.
    counts: (K,) total weight each centroid has received.
    step: int32 number of mini-batches seen.
  """
  centroids: jax.Array
  counts: jax.Array
  step: jax.Array


class MiniBatchResult(NamedTuple):
  """What :func:`fit` returns.

  Attributes:
    centroids: (K, D) final centroids.
    counts: (K,) weight received by each centroid.
    batch_inertia: (num_steps,) weighted inertia of each mini-batch against the centroids before
      its update, divided by the batch's weight.
    num_steps: number of mini-batch updates.
    inertia: inertia of all the data against the final centroids (in-memory data only; NaN for
      streams).
  """
  centroids: jax.Array
  counts: jax.Array
  batch_inertia: jax.Array
  num_steps: int
  inertia: jax.Array


def init_state(centroids: Centroids | ArrayLike) -> MiniBatchState:
  """The state before the first mini-batch."""
  c = jnp.asarray(centroids)
  return MiniBatchState(c, jnp.zeros(c.shape[:1], c.dtype), jnp.zeros((), jnp.int32))


def update(state: MiniBatchState, x: DataLike,
           sample_weight: WeightsLike | None = None) -> tuple[MiniBatchState, jax.Array]:
  r"""One mini-batch step (pure; jit it, or use :func:`fit`).

  Args:
    state: the current :class:`MiniBatchState`.
    x: (n, D) mini-batch.
    sample_weight: optional (n,) weights (0 marks padding rows).

  Returns:
    ``(new_state, batch inertia / batch weight)`` (inertia against the old centroids).
  """
  c = state.centroids
  x = jnp.asarray(x, c.dtype)
  w = jnp.ones(x.shape[:1], c.dtype) if sample_weight is None else jnp.asarray(sample_weight,
                                                                               c.dtype)
  shift = jnp.mean(c, axis=0)
  labels, min_d = _km.assign(x - shift, c - shift)
  k = c.shape[0]
  sums = jax.ops.segment_sum(x * w[:, None], labels, k)
  weights = jax.ops.segment_sum(w, labels, k)
  counts = state.counts + weights
  safe = jnp.where(counts > 0, counts, 1)
  new_c = jnp.where((weights > 0)[:, None],
                    c + (sums - weights[:, None] * c) / safe[:, None], c)
  inertia = jnp.sum(w * min_d) / jnp.sum(w)
  return MiniBatchState(new_c, counts, state.step + 1), inertia


_update_jit = jax.jit(update, donate_argnums=(0,))


@functools.partial(jax.jit, static_argnames=("num_steps", "batch_size"))
def _run_in_memory(key, state, x, w, *, num_steps, batch_size):
  n = x.shape[0]

  def body(state, k):
    idx = jax.random.randint(k, (batch_size,), 0, n)  # with replacement, as scikit-learn
    return update(state, x[idx], w[idx])

  return lax.scan(body, state, jax.random.split(key, num_steps))


def fit(key: Key, data: Any, num_clusters: int, init: str | ArrayLike = "k-means++", *,
        batch_size: int = 1024, num_steps: int | None = None, num_epochs: int = 1,
        n_init: int = 1, init_size: int | None = None, sample_weight: WeightsLike | None = None,
        callback: Callable[[int, float], None] | None = None) -> MiniBatchResult:
  r"""Mini-batch K-means on in-memory data or a stream.

  For an in-memory array (NumPy or JAX), the ``num_steps`` mini-batches are drawn uniformly with
  replacement (as scikit-learn does) inside one compiled ``lax.scan``. For a ``numpy.memmap``,
  a ``.npy`` path or a callable returning an iterable of batches, the batches are read in order
  (``num_epochs`` passes), one jitted update each.

  Args:
    key: PRNG key (initialisation and batch sampling).
    data: (N, D) array, memmap, ``.npy`` path, or a callable returning an iterable of (n, D)
      batches (or ``(x, sample_weight)`` pairs).
    num_clusters: K.
    init: "k-means++" or "random" (:func:`lvmjax.kmeans.fit`'s seeding, on a random subsample
      of ``init_size`` rows), or a (K, D) array of initial centroids.
    batch_size: rows per mini-batch.
    num_steps: mini-batches for in-memory data (default: ``num_epochs * N / batch_size``).
    num_epochs: passes over streamed data (and the default ``num_steps``).
    n_init: seedings tried on the subsample; the one of lowest inertia on the subsample is kept
      (scikit-learn's ``n_init`` for ``MiniBatchKMeans``).
    init_size: rows for the seeding (default ``3 * batch_size``, scikit-learn's).
    sample_weight: optional (N,) weights (array data only).
    callback: for streams, optional ``callback(step, batch_inertia)``.

  Returns:
    A :class:`MiniBatchResult`.

  Raises:
    ValueError: bad arguments or data.

  Examples:
    >>> x = np.random.default_rng(0).normal(size=(2000, 2)).astype(np.float32)
    >>> fit(jax.random.key(0), x, 3, batch_size=256).centroids.shape
    (3, 2)
  """
  _checks.check_fit_inputs(key, data, x_name="data")  # a PRNG key; float32/float64 arrays
  num_clusters = _checks.check_positive_int(num_clusters, "num_clusters")
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  num_epochs = _checks.check_positive_int(num_epochs, "num_epochs")
  n_init = _checks.check_positive_int(n_init, "n_init")
  init_size = 3 * batch_size if init_size is None else _checks.check_positive_int(
      init_size, "init_size")
  in_memory = (hasattr(data, "shape") and not isinstance(data, np.memmap)
               and not callable(data))
  if in_memory:
    _checks.check_data(data)
    _checks.check_sample_weight(sample_weight, np.shape(data)[0])
  make_iter, n, d, _ = data_lib.as_source(data, sample_weight, batch_size)
  key_init, key_sub, key_run = jax.random.split(key, 3)
  if isinstance(init, str):
    _checks.check_choice(init, "init", _km.INIT_METHODS)
    xs, ws = data_lib.subsample(key_sub, data, max(init_size, num_clusters), sample_weight,
                                 batch_size=batch_size)
    if xs.shape[0] < num_clusters:
      raise ValueError(f"num_clusters={num_clusters} is larger than the number of points "
                       f"{xs.shape[0]}.")
    xf = _km._as_float(xs)  # pylint: disable=protected-access
    wf = None if ws is None else jnp.asarray(ws, xf.dtype)
    seed = _km.kmeans_plusplus if init == "k-means++" else _km.random_init
    seeds = jax.vmap(lambda k: seed(k, xf, num_clusters, wf)[0])(
        jax.random.split(key_init, n_init))
    scores = jax.vmap(lambda c: _km.inertia(xf, c, wf))(seeds)
    centroids = seeds[jnp.argmin(scores)]
  else:
    centroids = jnp.asarray(init)
    _km._check_centroids(init, num_clusters, d if d is not None else centroids.shape[1], "init")  # pylint: disable=protected-access
    if not jnp.issubdtype(centroids.dtype, jnp.floating):
      centroids = centroids.astype(jnp.result_type(float))
  dtype = centroids.dtype
  state = init_state(centroids)
  if in_memory:
    x = jnp.asarray(data, dtype)
    w = jnp.ones(n, dtype) if sample_weight is None else jnp.asarray(sample_weight, dtype)
    steps = num_steps if num_steps is not None else max(1, num_epochs * n // batch_size)
    steps = _checks.check_positive_int(steps, "num_steps")
    state, inertias = _run_in_memory(key_run, state, x, w, num_steps=steps,
                                     batch_size=batch_size)
    total = _km.inertia(x, state.centroids, w)
    return MiniBatchResult(state.centroids, state.counts, inertias, steps, total)
  inertias = []
  for epoch in range(num_epochs):
    for xb, wb in make_iter():
      if epoch == 0:
        data_lib.check_batch(xb, wb, centroids.shape[1])
      if xb.shape[0] == 0:
        continue
      xp, wp = data_lib.pad_batch(xb, wb, batch_size, dtype)
      state, value = _update_jit(state, jnp.asarray(xp), jnp.asarray(wp))
      inertias.append(value)
      if callback is not None:
        callback(len(inertias) - 1, float(value))
  if not inertias:
    raise ValueError("The data source yielded no rows.")
  return MiniBatchResult(state.centroids, state.counts, jnp.stack(inertias), len(inertias),
                         jnp.asarray(jnp.nan, dtype))
