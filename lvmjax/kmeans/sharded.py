r"""K-means with the rows of x split over a device mesh (old import path; the code is one path now).

``kmeans.fit(..., mesh=mesh)`` or a row-sharded ``x`` runs :func:`lvmjax.kmeans.fit_local` inside
``shard_map``: every device runs the assignment step on its own rows; the cluster sums
:math:`\sum w x` and weights :math:`\sum w`, the inertia and the count of changed labels are added
over the devices with ``psum``, and the update step is computed, replicated, from the sums. The
seeding, the relocation of empty clusters and the convergence tests are those of the one-device
fit, written once with the reduction hook of :mod:`lvmjax.sharding` (``shard=None`` on one
device), so the fit equals the one-device fit up to float rounding.

Memory per device: its block of rows, plus O(N) for the k-means++ seeding, which gathers the
(N,) vector of weighted distances to draw candidates exactly as the one-device seeding does.

The names below keep the old import paths working.
"""
from __future__ import annotations

import jax

from lvmjax.kmeans.kmeans import fit
from lvmjax.kmeans.kmeans import fit_local
from lvmjax.kmeans.kmeans import kmeans_plusplus
from lvmjax.kmeans.kmeans import random_init
from lvmjax.sharding import mean_and_variance
from lvmjax.sharding import Shard

__all__ = ["Shard", "fit", "fit_local", "kmeans_plusplus_local", "mean_and_variance",
           "random_init_local"]


def kmeans_plusplus_local(key: jax.Array, x: jax.Array, w: jax.Array, valid: jax.Array,
                          num_clusters: int, shard: Shard,
                          n_local_trials: int | None = None) -> tuple[jax.Array, jax.Array]:
  """``kmeans_plusplus(key, x, K, w, valid=valid, shard=shard)`` (inside ``shard_map``)."""
  return kmeans_plusplus(key, x, num_clusters, w, n_local_trials=n_local_trials, valid=valid,
                         shard=shard)


def random_init_local(key: jax.Array, x: jax.Array, w: jax.Array, valid: jax.Array,
                      num_clusters: int, shard: Shard) -> tuple[jax.Array, jax.Array]:
  """``random_init(key, x, K, w, valid=valid, shard=shard)`` (inside ``shard_map``)."""
  return random_init(key, x, num_clusters, w, valid=valid, shard=shard)


