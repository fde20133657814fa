"""lvmjax: latent variable models in JAX.

Model families live in subpackages (``lvmjax.gmm``, ``lvmjax.kmeans``, ``lvmjax.ppca``,
``lvmjax.vae``); import the one you need, e.g. ``from lvmjax import gmm``.
"""

__version__ = "0.1.0"
