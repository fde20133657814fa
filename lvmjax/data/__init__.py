"""Datasets, their files, and deterministic resumable minibatches.

Examples:
  >>> from lvmjax import data
  >>> train = data.load_dataset("digits", "train")          # scikit-learn's bundled 8x8 digits
  >>> it = data.BatchIterator(train.x, 100, seed=0)
  >>> batch = next(it)

Files: MNIST-family datasets are read as ``.npz`` files from the data directory
(``config.data_dir``, else ``$LVMJAX_DATA_DIR``, else ``~/.cache/lvmjax/data``); a missing file is
downloaded from the public originals and checked against published checksums when the machine is
online (:mod:`lvmjax.data.sources`). ``load_dataset(..., rows=...)`` reads only the given rows of
a file (:mod:`lvmjax.data.npz`) and :func:`num_rows` a split's size from the file's header, so each
process of a multi-host run loads only its own block of rows (:func:`load_process_share`, what
the launchers call).

Streams (:mod:`lvmjax.data.streams`): arrays, memmaps, ``.npy`` paths or callables read batch by
batch (:func:`as_source`, :func:`iter_rows`), with :func:`check_batch`, :func:`pad_batch` and
random :func:`subsample`; streaming EM, online EM and mini-batch K-means read their data so.
"""
from lvmjax.data.batching import Batch
from lvmjax.data.batching import BatchIterator
from lvmjax.data.batching import epoch_permutation
from lvmjax.data.batching import Position
from lvmjax.data.batching import position_of
from lvmjax.data.batching import steps_per_epoch
from lvmjax.data.datasets import binarize_once
from lvmjax.data.datasets import check_dataset_name
from lvmjax.data.datasets import Dataset
from lvmjax.data.datasets import DATASETS
from lvmjax.data.datasets import load_dataset
from lvmjax.data.datasets import load_process_share
from lvmjax.data.datasets import load_splits
from lvmjax.data.datasets import num_rows
from lvmjax.data.datasets import random_subset
from lvmjax.data.datasets import SPLITS
from lvmjax.data.sources import ensure_file
from lvmjax.data.streams import as_source
from lvmjax.data.streams import Batches
from lvmjax.data.streams import check_batch
from lvmjax.data.streams import iter_rows
from lvmjax.data.streams import npy_rows
from lvmjax.data.streams import numpy_rng
from lvmjax.data.streams import pad_batch
from lvmjax.data.streams import subsample
from lvmjax.data.streams import subsample_processes
from lvmjax.data.sources import resolve_data_dir
from lvmjax.data.sources import verify_arrays
from lvmjax.data.synthetic import make_gmm
from lvmjax.data.synthetic import sample as sample_gmm
from lvmjax.data.synthetic import SyntheticGMM

__all__ = [
    "Batch", "BatchIterator", "epoch_permutation", "Position", "position_of", "steps_per_epoch",
    "binarize_once", "check_dataset_name", "Dataset", "DATASETS", "load_dataset", "num_rows",
    "load_process_share", "load_splits", "random_subset", "SPLITS",
    "as_source", "Batches", "check_batch", "iter_rows", "npy_rows", "numpy_rng", "pad_batch",
    "subsample", "subsample_processes",
    "ensure_file", "resolve_data_dir", "verify_arrays", "make_gmm", "sample_gmm", "SyntheticGMM",
]
