"""Drop-in scikit-learn estimators on lvmjax's JAX core.

Change one import and keep the rest of the code::

  from lvmjax.sklearn import GaussianMixture   # was: from sklearn.mixture import GaussianMixture
  from lvmjax.sklearn import KMeans            # was: from sklearn.cluster import KMeans
  from lvmjax.sklearn import PPCA              # probabilistic PCA (FactorAnalysis-like interface)

The estimators subclass scikit-learn's ``BaseEstimator`` (``get_params``, ``set_params``,
``clone``, pipelines and grid search work), take the same arguments, set the same fitted
attributes and raise the same warnings and errors. They add no mathematics of their own: fits,
densities, posteriors and samples are the pure functions of ``lvmjax.gmm``, ``lvmjax.kmeans`` and
``lvmjax.ppca``, jitted once per data shape and configuration.

Inputs may be NumPy or JAX arrays, lists or DataFrames; results are NumPy arrays. float32 input
is computed in float32; float64 input in float64 when JAX's x64 mode is on
(``jax.config.update("jax_enable_x64", True)``), and in float32 otherwise. ``random_state=s`` (an
int) seeds ``jax.random.key(s)``, so draws differ from scikit-learn's for the same seed.
"""
from lvmjax.sklearn.cluster import KMeans
from lvmjax.sklearn.decomposition import PPCA
from lvmjax.sklearn.mixture import GaussianMixture

__all__ = ["GaussianMixture", "KMeans", "PPCA"]
