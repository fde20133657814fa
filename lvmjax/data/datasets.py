"""Datasets as numpy arrays: binarized MNIST, MNIST, Fashion-MNIST, scikit-learn's digits, a GMM."""
from __future__ import annotations

import gzip
import importlib.util
import inspect
import os
import pathlib
from typing import Any, NamedTuple

import jax
import numpy as np

from lvmjax import sharding
from lvmjax.data import npz
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


def _digits_file() -> pathlib.Path | None:
  """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (whose
  import costs a launcher ~80 MB of memory for a 1797-row table), or None."""
  spec = importlib.util.find_spec("sklearn")
  for folder in (spec.submodule_search_locations or []) if spec else []:
    path = pathlib.Path(folder) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
      return path
  return None


def _load_digits():
  """(x, y): the 1797 digits as float32 pixels / 16 and int32 labels, as
  ``sklearn.datasets.load_digits`` returns them."""
  path = _digits_file()
  if path is not None:  # the file load_digits reads, read the same way
    with gzip.open(path, "rt") as f:
      table = np.loadtxt(f, delimiter=",")
    pixels, labels = table[:, :-1], table[:, -1]
  else:
    try:
      from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          "The 'digits' dataset is scikit-learn's bundled copy (sklearn.datasets.load_digits), "
          "and scikit-learn (a dependency of lvmjax) is not installed. Install it with "
          "`pip install scikit-learn`.") from e
    d = load_digits()
    pixels, labels = d.data, d.target
  return pixels.astype(np.float32) / 16.0, labels.astype(np.int32)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
  """The fixed (train, test) row indices of ``digits``: a permutation drawn with seed 0."""
  perm = np.random.default_rng(0).permutation(1797)
  return np.sort(perm[DIGITS_TEST_SIZE:]), np.sort(perm[:DIGITS_TEST_SIZE])


def _split_key(name: str, split: str) -> tuple[str, ...]:
  """The arrays of the ``.npz`` file that hold ``split`` of file dataset ``name``."""
  if name == "binarized_mnist":
    return (f"{split}_bits",)
  return (f"x_{split}", f"y_{split}")


def num_rows(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
             download: bool | None = None, synthetic_options: dict | None = None) -> int:
  """The number of points of a split, without loading it (for files: the ``.npy`` header only).

  Args:
    name, split, data_dir, download, synthetic_options: as :func:`load_dataset`.

  Returns:
    N, the length of ``load_dataset(name, split, ...).x``.

  Raises:
    ValueError: as :func:`load_dataset`.

  Examples:
    >>> num_rows("digits", "test")
    297
  """
  check_dataset_name(name, split)
  if name == "digits":
    return {"all": 1797, "train": 1797 - DIGITS_TEST_SIZE, "test": DIGITS_TEST_SIZE}[split]
  if name == "synthetic_gmm":
    default = inspect.signature(synthetic.load_split).parameters["num_points"].default
    return int((synthetic_options or {}).get("num_points", default))
  path = sources.ensure_file("mnist" if name == "dynamic_mnist" else name, data_dir,
                             download=download)
  key = _split_key(name, split)[0]
  _require(npz.members(path), path, (key,))
  return npz.array_info(path, key).shape[0]


def random_subset(num_points: int, size: int, seed: Any) -> np.ndarray | None:
  """Sorted indices of ``size`` of ``num_points`` rows drawn without replacement from ``seed``.

  Returns None when ``size`` is 0 or at least ``num_points`` (all rows), so that
  ``load_dataset(..., rows=random_subset(...))`` loads every row then.
  """
  if not size or size >= num_points:
    return None
  return np.sort(np.random.default_rng(seed).choice(num_points, size, replace=False))


def load_process_share(name: str, split: str = "train", *, subset: int = 0, subset_seed: Any = 0,
                       multiple: int | None = None, data_dir: str | os.PathLike | None = None,
                       download: bool | None = None,
                       synthetic_options: dict | None = None) -> tuple[Dataset, int]:
  """This process's rows of a split: what every launcher loads (one place for its logic).

  With one process: all rows of the split, or a fixed random subset of ``subset`` rows
  (:func:`random_subset` with ``subset_seed``) when ``subset`` is set. With several processes
  (``jax.process_count() > 1``): only this process's block of those rows
  (:func:`lvmjax.sharding.process_share`), read from the file without loading the rest; the
  blocks of all processes, in process order, are the one-process rows.

  Args:
    name, split, data_dir, download, synthetic_options: as :func:`load_dataset`.
    subset: rows of the fixed random subset (0: all rows).
    subset_seed: seed of the subset (e.g. ``[config.seed, 7]``).
    multiple: block size multiple of :func:`lvmjax.sharding.process_share` (default: the local
      device count).

  Returns:
    ``(dataset, num_points)``: this process's rows and the number of rows of all processes.

  Raises:
    ValueError: as :func:`load_dataset`.

  Examples:
    >>> train, n = load_process_share("digits", "test", subset=100, subset_seed=[0, 7])
    >>> train.x.shape[0], n
    (100, 100)
  """
  kwargs = dict(data_dir=data_dir, download=download, synthetic_options=synthetic_options)
  n = num_rows(name, split, **kwargs)
  rows = random_subset(n, subset, subset_seed)
  total = n if rows is None else len(rows)
  if jax.process_count() > 1:
    rows = sharding.process_share(n if rows is None else rows, multiple=multiple)
  return load_dataset(name, split, rows=rows, **kwargs), total


def load_splits(config: Any) -> tuple[Dataset, Dataset | None]:
  """The training and (when the dataset has one) test split named by a launcher's config.

  The GMM and K-means launchers load their data so. With one process: all rows (of the
  training split, a fixed random subset of ``config.num_train_points`` rows when that is set).
  With several processes: only this process's block of those rows
  (:func:`load_process_share`); the blocks of all processes, in process order, are the
  one-process data.

  Args:
    config: a config with ``dataset``, ``data_dir``, ``seed``, ``num_train_points`` and, for
      ``"synthetic_gmm"``, ``synthetic`` (a ``ConfigDict`` of :func:`load_dataset`'s
      ``synthetic_options``).

  Returns:
    ``(train, test)``; ``test`` is None when the dataset has no test split.

  Raises:
    ValueError: as :func:`load_dataset`.
  """
  synthetic = config.synthetic.to_dict() if config.dataset == "synthetic_gmm" else None
  kwargs = dict(data_dir=config.data_dir or None, synthetic_options=synthetic)

  def split(name, subset=0):
    return load_process_share(config.dataset, name, subset=subset,
                              subset_seed=[config.seed, 7], **kwargs)[0]

  train = split("train", config.num_train_points)
  test = split("test") if "test" in SPLITS[config.dataset] else None
  return train, test


def _select(a: np.ndarray, rows: Any) -> np.ndarray:
  return a if rows is None else a[npz.row_indices(rows, len(a))]


def load_dataset(name: str, split: str = "train", *, rows: Any = None,
                 data_dir: str | os.PathLike | None = None, download: bool | None = None,
                 synthetic_options: dict | None = None) -> Dataset:
  """Loads one split of a dataset (or some of its rows) as float32 numpy arrays.

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

  ``rows`` selects points: ``load_dataset(..., rows=r).x`` equals ``load_dataset(...).x[r]``. For
  the file datasets only those rows are read (:func:`lvmjax.data.npz.read_rows`: the compressed
  array is streamed up to the last wanted row and the rows before the first are discarded piece
  by piece), so memory is that of the selected rows, not of the split; this is how each process
  of a multi-host run loads its own block (``rows=lvmjax.sharding.process_rows(N)``, with N from
  :func:`num_rows`). ``digits`` and ``synthetic_gmm`` are small and are sliced after generation.

  Args:
    name: one of :data:`DATASETS`.
    split: one of the dataset's :data:`SPLITS`.
    rows: None for every point, else a ``slice``, a 1-D array of integer row indices or a boolean
      mask (NumPy indexing semantics).
    data_dir: directory holding the ``.npz`` files (default ``$LVMJAX_DATA_DIR``, then
      ``~/.cache/lvmjax/data``).
    download: try to download a missing file (see :func:`lvmjax.data.sources.ensure_file`).
    synthetic_options: options for ``"synthetic_gmm"``.

  Returns:
    A :class:`Dataset`.

  Raises:
    ValueError: unknown name or split, a bad ``rows``, a missing file that cannot be downloaded,
      or a file whose arrays do not have the documented layout.

  Examples:
    >>> ds = load_dataset("synthetic_gmm", "train", synthetic_options=dict(num_points=100))
    >>> ds.x.shape
    (100, 2)
    >>> load_dataset("digits", "test", rows=slice(10, 20)).x.shape
    (10, 64)
  """
  check_dataset_name(name, split)
  if name == "digits":
    x, y = _load_digits()
    if split != "all":
      train_idx, test_idx = digits_split_indices()
      idx = train_idx if split == "train" else test_idx
      x, y = x[idx], y[idx]
    return Dataset(_select(x, rows), _select(y, rows), (8, 8), False, name)
  if name == "synthetic_gmm":
    opts = dict(synthetic_options or {})
    x, y = synthetic.load_split(split, **opts)
    return Dataset(_select(x, rows), _select(y, rows), None, False, name)
  file_name = "mnist" if name == "dynamic_mnist" else name
  path = sources.ensure_file(file_name, data_dir, download=download)
  keys = _split_key(name, split)
  if rows is None:
    with npz.reading(path), np.load(path) as d:
      _require(d.files, path, keys)
      arrays = [d[k] for k in keys]
  else:
    _require(npz.members(path), path, keys)
    infos = [npz.array_info(path, k) for k in keys]
    _check_layout(name, split, path, [i.shape for i in infos], [i.dtype for i in infos])
    arrays = [npz.read_rows(path, k, rows) for k in keys]
  _check_layout(name, split, path, [a.shape for a in arrays], [a.dtype for a in arrays],
                rows is not None)
  if name == "binarized_mnist":
    x = np.unpackbits(arrays[0], axis=1).astype(np.float32)
    return Dataset(x, None, (28, 28), False, name)
  images, labels = arrays
  x = images.reshape(len(images), int(np.prod(images.shape[1:]))).astype(np.float32) / 255.0
  return Dataset(x, labels.astype(np.int32), tuple(images.shape[1:]), name == "dynamic_mnist", name)


def _check_layout(name, split, path, shapes, dtypes, selected=False):
  """Raises ValueError unless the split's arrays have the documented shapes and dtypes."""
  if name == "binarized_mnist":
    (shape,), (dtype,) = shapes, dtypes
    if len(shape) != 2 or dtype != np.uint8:
      raise ValueError(f"{path}: {split}_bits must be a uint8 (N, 98) array of packed bits, got "
                       f"{dtype} {shape}.")
    return
  (xs, ys) = shapes
  if len(xs) != 3 or (not selected and xs[0] != ys[0]):
    raise ValueError(f"{path}: x_{split} must be (N, H, W) with one label per image, got "
                     f"{xs} and {ys}.")


def _require(files, path, keys):
  missing = [k for k in keys if k not in files]
  if missing:
    raise ValueError(f"{path} lacks the array(s) {missing} (it has {files}); see the layout in "
                     "lvmjax.data.sources.")


#: Rows per block of :func:`binarize_once`'s random numbers.
BINARIZE_BLOCK = 1024


def binarize_once(x: np.ndarray, seed: int, first_row: int = 0) -> np.ndarray:
  """One fixed stochastic binarization, pixel ~ Bernoulli(x), as float32 (for evaluation sets).

  The uniforms come in blocks of ``BINARIZE_BLOCK`` rows, block b from its own generator
  ``[seed, 0xB1, b]``, so row i of a set gets the same draws whether the set is binarized whole
  or in pieces: pass a piece's position in the set as ``first_row`` (as each process does with
  its block of the evaluation points).

  Args:
    x: (N, ...) probabilities in [0, 1].
    seed: the binarization's seed.
    first_row: position of ``x[0]`` in the whole set.

  Returns:
    float32 array of 0/1 like x.
  """
  x = np.asarray(x)
  n = x.shape[0]
  if n == 0:
    return x.astype(np.float32)
  first_block, last_block = first_row // BINARIZE_BLOCK, (first_row + n - 1) // BINARIZE_BLOCK
  u = np.concatenate([
      np.random.default_rng([seed, 0xB1, b]).random((BINARIZE_BLOCK,) + x.shape[1:],
                                                     dtype=np.float32)
      for b in range(first_block, last_block + 1)])
  offset = first_row - first_block * BINARIZE_BLOCK
  return (u[offset:offset + n] < x).astype(np.float32)
