"""Drop-in scikit-learn estimators on lvmjax's JAX core.

Change one import and keep the rest of the code::

  from lvmjax.sklearn import GaussianMixture   # was: from sklearn.mixture import GaussianMixture
  from lvmjax.sklearn import KMeans            # was: from sklearn.cluster import KMeans
  from lvmjax.sklearn import PPCA              # probabilistic PCA (FactorAnalysis-like interface)
  from lvmjax.sklearn import BayesianGaussianMixture  # variational Bayesian GMM

The estimators subclass scikit-learn's ``BaseEstimator`` (``get_params``, ``set_params``,
``clone``, pipelines and grid search work), take the same arguments, set the same fitted
attributes and raise the same warnings and errors. They add no mathematics of their own: fits,
densities, posteriors and samples are the pure functions of ``lvmjax.gmm``, ``lvmjax.kmeans`` and
``lvmjax.ppca``, jitted once per data shape and configuration.

Inputs may be NumPy or JAX arrays, lists or DataFrames (and SciPy sparse matrices for
``KMeans``); results are NumPy arrays. dtypes are scikit-learn's: float32 input is computed in
float32, float64 and integer input in float64. float64 needs JAX's x64 mode; the estimators turn
it on only around their own computation (the scoped ``jax.enable_x64(True)``), so JAX's global
setting stays the user's. ``random_state=s`` (an int) seeds ``jax.random.key(s)``, so draws differ
from scikit-learn's for the same seed.

scikit-learn's own test files for ``GaussianMixture`` and ``KMeans`` run against these estimators
with the one import swapped (``tests/test_sklearn_upstream.py``).
"""
from lvmjax.sklearn.bayesian_mixture import BayesianGaussianMixture
from lvmjax.sklearn.cluster import KMeans
from lvmjax.sklearn.decomposition import PPCA
from lvmjax.sklearn.mixture import GaussianMixture

__all__ = ["BayesianGaussianMixture", "GaussianMixture", "KMeans", "PPCA"]
