"""K-means clustering, the hard-assignment limit of the Gaussian mixture model.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from lvmjax import kmeans
  >>> x = jnp.array([[0., 0.], [0., 1.], [10., 10.], [10., 11.]])
  >>> result = kmeans.fit(jax.random.key(0), x, 2)
  >>> labels = kmeans.predict(result.centroids, x)
"""
from lvmjax.kmeans import minibatch  # mini-batch K-means (Sculley 2010) over a stream
from lvmjax.kmeans import sharded  # old path of the mesh fit (now kmeans.fit / fit_local)
from lvmjax.kmeans.kmeans import ALGORITHMS
from lvmjax.kmeans.kmeans import INIT_METHODS
from lvmjax.kmeans.kmeans import KMeansResult
from lvmjax.kmeans.kmeans import assign
from lvmjax.kmeans.kmeans import default_chunk_size
from lvmjax.kmeans.kmeans import fit
from lvmjax.kmeans.kmeans import fit_local
from lvmjax.kmeans.kmeans import inertia
from lvmjax.kmeans.kmeans import kmeans_plusplus
from lvmjax.kmeans.kmeans import predict
from lvmjax.kmeans.kmeans import random_init
from lvmjax.kmeans.kmeans import resolve_algorithm
from lvmjax.kmeans.kmeans import squared_distances
from lvmjax.kmeans.kmeans import update_centroids

__all__ = [
    "ALGORITHMS",
    "INIT_METHODS",
    "KMeansResult",
    "assign",
    "default_chunk_size",
    "fit",
    "fit_local",
    "inertia",
    "kmeans_plusplus",
    "minibatch",
    "predict",
    "random_init",
    "resolve_algorithm",
    "squared_distances",
    "update_centroids",
]
