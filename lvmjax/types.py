"""Shape aliases for the public signatures (jaxtyping), in one place.

Dimension names: ``n`` points, ``d`` features, ``k`` mixture components or clusters, ``l`` latent
dimensions; ``*batch`` any leading batch shape. The aliases document shapes; they are not
checked at run time (use ``jaxtyping.jaxtyped`` with a type checker in your own tests for that).

Examples:
  >>> from lvmjax.types import Data, Weights
  >>> def total_weight(x: Data, w: Weights) -> float: ...
"""
from __future__ import annotations

from typing import Union

import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Num, PRNGKeyArray, Shaped

__all__ = [
    "Array", "ArrayLike", "Bool", "Float", "Int", "Num", "Shaped",
    "Key", "PRNGKey", "Scalar", "ScalarLike", "IntScalar", "BoolScalar",
    "Data", "DataLike", "Point", "Points", "Weights", "WeightsLike", "Labels",
    "LogJoint", "Responsibilities", "Centroids", "Means", "ComponentWeights", "LogDensity",
    "Latents", "History", "LatentBatch", "DataBatch", "DataBatchLike",
]

#: A PRNG key: ``jax.random.key(0)`` (typed) or a legacy ``jax.random.PRNGKey(0)``.
Key = PRNGKeyArray
#: Another name for :data:`Key`.
PRNGKey = Key
#: A float scalar array.
Scalar = Float[Array, ""]
#: A float scalar or Python number.
ScalarLike = Union[float, Float[ArrayLike, ""]]
#: An int scalar array (e.g. ``n_iter``).
IntScalar = Int[Array, ""]
#: A bool scalar array (e.g. ``converged``).
BoolScalar = Bool[Array, ""]

#: (N, D) data, one row per point.
Data = Float[Array, "n d"]
#: (N, D) data as given by a user: a NumPy array, a JAX array, nested lists.
DataLike = Union[Num[ArrayLike, "n d"], np.ndarray]
#: (D,) one point.
Point = Float[Array, "d"]
#: (..., D) points with any leading batch shape.
Points = Float[Array, "*batch d"]
#: (N,) non-negative sample weights.
Weights = Float[Array, "n"]
#: (N,) sample weights as given by a user.
WeightsLike = Union[Num[ArrayLike, "n"], np.ndarray]
#: (N,) integer component or cluster index of every point.
Labels = Int[Array, "n"]
#: (..., K) :math:`\log p(x, z=k)` per component.
LogJoint = Float[Array, "*batch k"]
#: (..., K) :math:`p(z=k \mid x)`, rows summing to one.
Responsibilities = Float[Array, "*batch k"]
#: (..., ) a per-point log-density such as :math:`\log p(x)`.
LogDensity = Float[Array, "*batch"]
#: (K, D) K-means centroids.
Centroids = Float[Array, "k d"]
#: (K, D) mixture component means.
Means = Float[Array, "k d"]
#: (K,) mixture weights summing to one.
ComponentWeights = Float[Array, "k"]
#: (N, L) continuous latent codes.
Latents = Float[Array, "n l"]
#: (max_iter,) a per-iteration history, NaN past ``n_iter``.
History = Float[Array, "iter"]
#: (..., L) latents, or posterior means / log-variances, with any leading batch shape.
LatentBatch = Float[Array, "*batch l"]
#: ``(N, *data_shape)`` a batch of points of any shape (a VAE's images, vectors).
DataBatch = Float[Array, "n *data"]
#: ``(N, *data_shape)`` such a batch as given by a user (floats, or integer / bool bits).
DataBatchLike = Union[Num[ArrayLike, "n *data"], np.ndarray]
