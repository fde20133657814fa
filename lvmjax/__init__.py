"""lvmjax: latent variable models in JAX.

Model families live in subpackages (``lvmjax.gmm``, ``lvmjax.kmeans``, ``lvmjax.ppca``,
``lvmjax.vae``); import the one you need, e.g. ``from lvmjax import gmm``.

Importing lvmjax gives JAX one host CPU device per core, unless a JAX computation already ran or
the count was fixed (``XLA_FLAGS``, ``JAX_NUM_CPU_DEVICES``, ``jax_num_cpu_devices``, or the
environment variable ``LVMJAX_CPU_DEVICES``; ``LVMJAX_CPU_DEVICES=1`` keeps JAX's single CPU
device): large GMM and K-means fits on a CPU then use every core without a ``mesh=``
(:func:`lvmjax.sharding.use_cores_by_default`, :func:`lvmjax.sharding.auto_placement`).
"""
from lvmjax.sharding import mesh as _mesh

__version__ = "0.1.0"

_mesh.use_cores_by_default()
