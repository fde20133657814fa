"""Datasets as numpy arrays: binarized MNIST, MNIST, Fashion-MNIST, scikit-learn's digits, a GMM."""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from lvmjax.data import sources
from lvmjax.data import synthetic

#: Names accepted by :func:`load_dataset`.
DATASETS = ("binarized_mnist", "mnist", "dynamic_mnist", "fashion_mnist", "digits", "synthetic_gmm")

#: Splits each dataset offers.
SPLITS = {
    "binarized_mnist": ("train", "valid", "test"),
    "mnist": ("train", "test"),
    "dynamic_mnist": ("train", "test"),
    "fashion_mnist": ("train", "test"),
    "digits": ("train", "test", "all"),
    "synthetic_gmm": ("train", "test"),
}

#: Size of the test split of ``digits`` (a fixed random subset of the 1797 images).
DIGITS_TEST_SIZE = 297


class Dataset(NamedTuple):
  """One split of a dataset.

  Attributes:
    x: (N, D) float32 features; images are flattened row-major with pixel values in [0, 1].
    y: (N,) int32 labels, or None where the dataset has none (binarized MNIST).
    image_shape: (height, width) for image data, else None.
    binarize: True when training batches should be binarized afresh (dynamic binarization:
      pixel ~ Bernoulli(x)); the batch iterator does it.
    name: the dataset's name.
  """
  x: np.ndarray
  y: np.ndarray | None
  image_shape: tuple[int, ...] | None
  binarize: bool
  name: str

  @property
  def num_points(self) -> int:
    return int(self.x.shape[0])

  @property
  def num_features(self) -> int:
    return int(self.x.shape[1])


def check_dataset_name(name: str, split: str | None = None) -> None:
  """Raises ValueError for an unknown dataset name or split."""
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; expected one of {', '.join(map(repr, DATASETS))}.")
  if split is not None and split not in SPLITS[name]:
    raise ValueError(f"Dataset {name!r} has no split {split!r}; it has {', '.join(SPLITS[name])}.")


def _load_digits():
  try:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "The 'digits' dataset is scikit-learn's bundled copy (sklearn.datasets.load_digits), and "
        "scikit-learn (a dependency of lvmjax) is not installed. Install it with "
        "`pip install scikit-learn`.") from e
  d = load_digits()
  return d.data.astype(np.float32) / 16.0, d.target.astype(np.int32)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
  """The fixed (train, test) row indices of ``digits``: a permutation drawn with seed 0."""
  perm = np.random.default_rng(0).permutation(1797)
  return np.sort(perm[DIGITS_TEST_SIZE:]), np.sort(perm[:DIGITS_TEST_SIZE])


def load_dataset(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
                 download: bool | None = None, synthetic_options: dict | None = None) -> Dataset:
  """Loads one split of a dataset as float32 numpy arrays.

  Datasets:

  * ``"binarized_mnist"``: Larochelle & Murray's statically binarized MNIST (train 50000, valid
    10000, test 10000; no labels). Note its test split is sorted by class.
  * ``"mnist"``: MNIST grey levels scaled to [0, 1] (train 60000, test 10000).
  * ``"dynamic_mnist"``: the same images, binarized afresh in every epoch by the batch iterator
    (``Dataset.binarize`` is True); use :func:`binarize_once` for a fixed evaluation set.
  * ``"fashion_mnist"``: Fashion-MNIST grey levels scaled to [0, 1].
  * ``"digits"``: scikit-learn's bundled 8x8 digits (1797 images, values / 16), split into a fixed
    train (1500) and test (297) subset; ``"all"`` gives every image in the original order. Needs
    scikit-learn (no download).
  * ``"synthetic_gmm"``: points drawn from a known Gaussian mixture (see
    :func:`lvmjax.data.synthetic.make_gmm`); ``synthetic_options`` sets ``seed``, ``num_points``,
    ``num_components``, ``num_features``, ``separation``. Train and test are independent draws.

  Args:
    name: one of :data:`DATASETS`.
    split: one of the dataset's :data:`SPLITS`.
    data_dir: directory holding the ``.npz`` files (default ``$LVMJAX_DATA_DIR``, then
      ``~/.cache/lvmjax/data``).
    download: try to download a missing file (see :func:`lvmjax.data.sources.ensure_file`).
    synthetic_options: options for ``"synthetic_gmm"``.

  Returns:
    A :class:`Dataset`.

  Raises:
    ValueError: unknown name or split, a missing file that cannot be downloaded, or a file whose
      arrays do not have the documented layout.

  Examples:
    >>> ds = load_dataset("synthetic_gmm", "train", synthetic_options=dict(num_points=100))
    >>> ds.x.shape
    (100, 2)
  """
  check_dataset_name(name, split)
  if name == "digits":
    x, y = _load_digits()
    if split != "all":
      train_idx, test_idx = digits_split_indices()
      idx = train_idx if split == "train" else test_idx
      x, y = x[idx], y[idx]
    return Dataset(x, y, (8, 8), False, name)
  if name == "synthetic_gmm":
    opts = dict(synthetic_options or {})
    x, y = synthetic.load_split(split, **opts)
    return Dataset(x, y, None, False, name)
  file_name = "mnist" if name == "dynamic_mnist" else name
  path = sources.ensure_file(file_name, data_dir, download=download)
  with np.load(path) as d:
    if name == "binarized_mnist":
      key = f"{split}_bits"
      _require(d, path, (key,))
      bits = d[key]
      if bits.ndim != 2 or bits.dtype != np.uint8:
        raise ValueError(f"{path}: {key} must be a uint8 (N, 98) array of packed bits, got "
                         f"{bits.dtype} {bits.shape}.")
      x = np.unpackbits(bits, axis=1).astype(np.float32)
      return Dataset(x, None, (28, 28), False, name)
    _require(d, path, (f"x_{split}", f"y_{split}"))
    images, labels = d[f"x_{split}"], d[f"y_{split}"]
  if images.ndim != 3 or len(images) != len(labels):
    raise ValueError(f"{path}: x_{split} must be (N, H, W) with one label per image, got "
                     f"{images.shape} and {labels.shape}.")
  x = images.reshape(len(images), -1).astype(np.float32) / 255.0
  return Dataset(x, labels.astype(np.int32), tuple(images.shape[1:]), name == "dynamic_mnist", name)


def _require(d, path, keys):
  missing = [k for k in keys if k not in d.files]
  if missing:
    raise ValueError(f"{path} lacks the array(s) {missing} (it has {d.files}); see the layout in "
                     "lvmjax.data.sources.")


def binarize_once(x: np.ndarray, seed: int) -> np.ndarray:
  """One fixed stochastic binarization, pixel ~ Bernoulli(x), as float32 (for evaluation sets)."""
  rng = np.random.default_rng([seed, 0xB1])
  return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)
