"""Loading some rows of a dataset (``load_dataset(rows=...)``, ``lvmjax.data.npz``): the same
values as slicing the whole split, with memory bounded by the rows read."""
import tracemalloc

import numpy as np
import pytest

from lvmjax import data
from lvmjax import sharding
from lvmjax.data import npz


def _selections(n):
  rng = np.random.default_rng(n)
  return [None, slice(0, 0), slice(0, 1), slice(n - 1, n), slice(n - 1, None), slice(3, n - 2),
          slice(None), slice(-4, None), slice(5, 2), slice(n, n + 10), slice(1, n, 3),
          slice(None, None, -2), np.array([n - 1, 0, 3, 3]), np.array([], np.int64),
          np.sort(rng.choice(n, n // 2, replace=False)), np.arange(n) % 4 == 1, [-1, -n]]


@pytest.fixture
def data_dir(tmp_path):
  """Small files in the documented layouts, written as numpy.savez_compressed does."""
  rng = np.random.default_rng(0)
  mnist = {"x_train": rng.integers(0, 256, (37, 28, 28), dtype=np.uint8),
           "y_train": rng.integers(0, 10, 37, dtype=np.uint8),
           "x_test": rng.integers(0, 256, (11, 28, 28), dtype=np.uint8),
           "y_test": rng.integers(0, 10, 11, dtype=np.uint8)}
  np.savez_compressed(tmp_path / "mnist.npz", **mnist)
  np.savez_compressed(tmp_path / "fashion_mnist.npz", **mnist)
  bits = {f"{s}_bits": np.packbits(rng.integers(0, 2, (n, 784), dtype=np.uint8), axis=1)
          for s, n in (("train", 29), ("valid", 7), ("test", 13))}
  bits["valid_bits"] = np.asfortranarray(bits["valid_bits"])  # as the shared copy stores them
  np.savez_compressed(tmp_path / "binarized_mnist.npz", **bits)
  return tmp_path


@pytest.mark.parametrize("name,split", [("mnist", "train"), ("dynamic_mnist", "test"),
                                        ("fashion_mnist", "train"), ("binarized_mnist", "train"),
                                        ("binarized_mnist", "valid")])
def test_rows_equal_slicing_the_whole_split(data_dir, name, split):
  full = data.load_dataset(name, split, data_dir=data_dir)
  n = full.num_points
  assert data.num_rows(name, split, data_dir=data_dir) == n
  for rows in _selections(n):
    got = data.load_dataset(name, split, rows=rows, data_dir=data_dir)
    want = full.x if rows is None else full.x[rows]
    np.testing.assert_array_equal(got.x, want, err_msg=str(rows))
    assert got.x.dtype == np.float32 and got.x.shape == want.shape
    if full.y is not None:
      np.testing.assert_array_equal(got.y, full.y if rows is None else full.y[rows])
    assert (got.image_shape, got.binarize, got.name) == (full.image_shape, full.binarize, name)


def test_rows_of_generated_datasets():
  pytest.importorskip("sklearn")
  opts = dict(num_points=50, num_features=3)
  for name, split, kwargs in (("digits", "test", {}), ("digits", "all", {}),
                              ("synthetic_gmm", "train", dict(synthetic_options=opts))):
    full = data.load_dataset(name, split, **kwargs)
    assert data.num_rows(name, split, **kwargs) == full.num_points
    for rows in _selections(full.num_points):
      got = data.load_dataset(name, split, rows=rows, **kwargs)
      np.testing.assert_array_equal(got.x, full.x if rows is None else full.x[rows])
      np.testing.assert_array_equal(got.y, full.y if rows is None else full.y[rows])


def test_process_blocks_join_into_the_whole_split(data_dir):
  full = data.load_dataset("binarized_mnist", "train", data_dir=data_dir).x
  n = len(full)
  for count, multiple in ((2, 1), (3, 2), (4, 4)):
    parts = [data.load_dataset("binarized_mnist", "train", data_dir=data_dir,
                               rows=sharding.process_rows(n, p, count, multiple=multiple)).x
             for p in range(count)]
    np.testing.assert_array_equal(np.concatenate(parts), full)
  subset = data.random_subset(n, 10, [0, 7])
  assert data.random_subset(n, 0, 1) is None and data.random_subset(n, n, 1) is None
  assert np.all(np.diff(subset) > 0) and len(subset) == 10 and subset.max() < n


def test_reading_rows_never_loads_the_whole_array(tmp_path, monkeypatch):
  """A 31 MB split: the last 50 rows are read with a small fraction of that in memory, and
  numpy.load (the whole-array path) is never called."""
  n = 40_000
  images = np.empty((n, 28, 28), np.uint8)
  images[:] = (np.arange(n) % 251).astype(np.uint8)[:, None, None]  # row i holds i % 251
  images[:, 0, 0] = np.arange(n) // 251
  labels = (np.arange(n) % 10).astype(np.uint8)
  np.savez_compressed(tmp_path / "mnist.npz", x_train=images, y_train=labels,
                      x_test=images[:5], y_test=labels[:5])
  del images

  def no_load(*args, **kwargs):
    raise AssertionError("numpy.load read a whole array")

  monkeypatch.setattr(np, "load", no_load)
  tracemalloc.start()
  try:
    ds = data.load_dataset("mnist", "train", rows=slice(n - 50, n), data_dir=tmp_path)
    some = data.load_dataset("mnist", "train", rows=np.array([7, n - 1, 20_000]),
                             data_dir=tmp_path)
    assert data.num_rows("mnist", "train", data_dir=tmp_path) == n
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  full_bytes = n * 784  # the uint8 array; as float32 x it would be 4 times that
  assert peak < 0.1 * full_bytes, (peak, full_bytes)
  rows = np.arange(n - 50, n)
  np.testing.assert_array_equal(ds.x[:, 1], (rows % 251).astype(np.float32) / 255.0)
  np.testing.assert_array_equal(ds.x[:, 0], (rows // 251).astype(np.float32) / 255.0)
  np.testing.assert_array_equal(ds.y, rows % 10)
  np.testing.assert_array_equal(some.y, [7, (n - 1) % 10, 0])


def test_bad_row_selections_say_what_is_wrong(data_dir):
  with pytest.raises(ValueError, match="out of range"):
    data.load_dataset("mnist", "test", rows=[11], data_dir=data_dir)
  with pytest.raises(ValueError, match="boolean row mask"):
    data.load_dataset("mnist", "test", rows=np.ones(3, bool), data_dir=data_dir)
  with pytest.raises(ValueError, match="integer row indices"):
    data.load_dataset("mnist", "test", rows=np.array([0.5]), data_dir=data_dir)
  with pytest.raises(ValueError, match="no array 'x_valid'"):
    npz.read_rows(data_dir / "mnist.npz", "x_valid", slice(0, 1))
  np.savez(data_dir / "objects.npz", a=np.array([{"a": 1}], dtype=object))
  with pytest.raises(ValueError, match="Python objects"):
    npz.array_info(data_dir / "objects.npz", "a")
