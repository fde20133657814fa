"""Data-parallel VAE training over a device mesh: re-exported from :mod:`lvmjax.vae.steps`.

Kept so that ``from lvmjax.vae import parallel`` and ``parallel.make_parallel_train_step`` etc.
keep working; the code (and its description) lives in :mod:`lvmjax.vae.steps`.
"""
from lvmjax.vae.steps import check_batch_size, make_parallel_train_step, replicate, shard_batch

__all__ = ["replicate", "check_batch_size", "shard_batch", "make_parallel_train_step"]
