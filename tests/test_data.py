"""lvmjax.data: datasets, the download/convert/verify path (with local fake originals), batches."""
import gzip
import hashlib
import pathlib
import urllib.error

import numpy as np
import pytest

from lvmjax import data
from lvmjax.data import sources

SHARED = pathlib.Path("/work/shared/data")


def _write_idx(path, arr):
  """An independent idx writer: magic (0, 0, 0x08, ndim), big-endian int32 dims, uint8 values."""
  arr = np.asarray(arr, np.uint8)
  header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + arr.tobytes())


def _sha(path):
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture
def fake_server(tmp_path, monkeypatch):
  """Small originals served from a local folder; REMOTES point at them with their real hashes."""
  server = tmp_path / "server"
  server.mkdir()
  rng = np.random.default_rng(0)
  arrays = {"x_train": rng.integers(0, 256, (12, 28, 28)), "y_train": rng.integers(0, 10, 12),
            "x_test": rng.integers(0, 256, (5, 28, 28)), "y_test": rng.integers(0, 10, 5)}
  names = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
           "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}
  for k, name in names.items():
    _write_idx(server / name, arrays[k])
  bits = {s: rng.integers(0, 2, (n, 784)) for s, n in (("train", 6), ("valid", 3), ("test", 4))}
  for s, b in bits.items():
    (server / f"binarized_mnist_{s}.amat").write_text(
        "".join(" ".join(map(str, row)) + "\n" for row in b))
  remotes = {}
  for ds, files in (("mnist", names.values()),
                    ("binarized_mnist", [f"binarized_mnist_{s}.amat" for s in bits])):
    remotes[ds] = tuple(sources.Remote(f, (f"http://example.invalid/{ds}/{f}",),
                                       (server / f).stat().st_size, _sha(server / f))
                        for f in files)
  monkeypatch.setattr(sources, "REMOTES", remotes)
  fetched = []

  def fetch(url, dest):
    fetched.append(url)
    dest.write_bytes((server / url.rsplit("/", 1)[1]).read_bytes())

  monkeypatch.setattr(sources, "fetch", fetch)
  monkeypatch.delenv(sources.NO_DOWNLOAD_ENV, raising=False)
  return {"server": server, "arrays": arrays, "bits": bits, "fetched": fetched}


def test_download_converts_idx_to_the_npz_layout(tmp_path, fake_server):
  data_dir = tmp_path / "data"
  train = data.load_dataset("mnist", "train", data_dir=data_dir)
  assert (data_dir / "mnist.npz").exists()
  with np.load(data_dir / "mnist.npz") as d:
    for k, v in fake_server["arrays"].items():
      np.testing.assert_array_equal(d[k], v)
      assert d[k].dtype == np.uint8
  np.testing.assert_allclose(train.x, fake_server["arrays"]["x_train"].reshape(12, -1) / 255.0,
                             rtol=1e-6)
  np.testing.assert_array_equal(train.y, fake_server["arrays"]["y_train"])
  assert train.image_shape == (28, 28) and train.x.dtype == np.float32
  # A second load reads the cached file and downloads nothing.
  n = len(fake_server["fetched"])
  data.load_dataset("mnist", "test", data_dir=data_dir)
  assert len(fake_server["fetched"]) == n


def test_download_converts_amat_to_packed_bits(tmp_path, fake_server):
  data_dir = tmp_path / "data"
  for split, bits in fake_server["bits"].items():
    ds = data.load_dataset("binarized_mnist", split, data_dir=data_dir)
    np.testing.assert_array_equal(ds.x, bits)
    assert ds.y is None
  with np.load(data_dir / "binarized_mnist.npz") as d:
    assert d["train_bits"].shape == (6, 98) and d["train_bits"].dtype == np.uint8
    np.testing.assert_array_equal(np.unpackbits(d["test_bits"], axis=1), fake_server["bits"]["test"])


def test_checksum_mismatch_is_refused_and_deleted(tmp_path, fake_server, monkeypatch):
  bad = dict(sources.REMOTES)
  first = bad["mnist"][0]
  bad["mnist"] = (sources.Remote(first.filename, first.urls, first.size, "0" * 64),) + bad["mnist"][1:]
  monkeypatch.setattr(sources, "REMOTES", bad)
  with pytest.raises(ValueError, match="Checksum mismatch"):
    data.load_dataset("mnist", "train", data_dir=tmp_path / "data")
  assert not (tmp_path / "data" / "mnist.npz").exists()
  assert not list((tmp_path / "data" / "downloads").glob(first.filename + "*"))


def test_offline_message_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
  def offline(url, dest):
    raise urllib.error.URLError("no route to host")

  monkeypatch.setattr(sources, "fetch", offline)
  monkeypatch.delenv(sources.NO_DOWNLOAD_ENV, raising=False)
  with pytest.raises(ValueError) as e:
    data.load_dataset("fashion_mnist", "train", data_dir=tmp_path)
  msg = str(e.value)
  assert str(tmp_path / "fashion_mnist.npz") in msg
  assert "LVMJAX_DATA_DIR" in msg and "--config.data_dir" in msg and "no route to host" in msg
  assert "fashion-mnist" in msg  # the public original's address


def test_no_download_env_and_data_dir_env(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.NO_DOWNLOAD_ENV, "1")
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "from_env"))
  assert data.resolve_data_dir(None) == tmp_path / "from_env"
  assert data.resolve_data_dir(tmp_path) == tmp_path
  with pytest.raises(ValueError, match="downloads are turned off"):
    data.load_dataset("binarized_mnist", "test")
  assert str(tmp_path / "from_env" / "binarized_mnist.npz") in str(
      pytest.raises(ValueError, data.load_dataset, "binarized_mnist", "test").value)


def test_read_idx_rejects_truncated_files(tmp_path):
  _write_idx(tmp_path / "a.gz", np.zeros((3, 4, 4)))
  raw = gzip.open(tmp_path / "a.gz").read()
  with gzip.open(tmp_path / "b.gz", "wb") as f:
    f.write(raw[:-5])
  assert sources.read_idx(tmp_path / "a.gz").shape == (3, 4, 4)
  with pytest.raises(ValueError, match="truncated"):
    sources.read_idx(tmp_path / "b.gz")
  (tmp_path / "c.amat").write_text("0 1 2\n")
  with pytest.raises(ValueError, match="not a binarized"):
    sources.read_amat(tmp_path / "c.amat", num_features=3)


def test_npz_layout_errors(tmp_path):
  np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
  with pytest.raises(ValueError, match="y_train"):
    data.load_dataset("mnist", "train", data_dir=tmp_path, download=False)


def test_verify_arrays(tmp_path, monkeypatch):
  arr = {"x_train": np.arange(12, dtype=np.uint8).reshape(3, 4)}
  np.savez(tmp_path / "f.npz", **arr)
  monkeypatch.setitem(sources.ARRAY_SHA256, "mnist",
                      {"x_train": hashlib.sha256(arr["x_train"].tobytes()).hexdigest(),
                       "y_train": "0" * 64})
  assert sources.verify_arrays(tmp_path / "f.npz", "mnist") == {"x_train": True, "y_train": False}


@pytest.mark.skipif(not (SHARED / "binarized_mnist.npz").exists(), reason="no shared data")
def test_shared_binarized_mnist_matches_published_array_hashes():
  assert all(sources.verify_arrays(SHARED / "binarized_mnist.npz", "binarized_mnist").values())


def test_unknown_names_and_splits():
  with pytest.raises(ValueError, match="Unknown dataset 'cifar'"):
    data.load_dataset("cifar")
  with pytest.raises(ValueError, match="no split 'valid'"):
    data.load_dataset("mnist", "valid")


def test_digits_split():
  pytest.importorskip("sklearn")
  train, test, everything = (data.load_dataset("digits", s) for s in ("train", "test", "all"))
  assert train.x.shape == (1500, 64) and test.x.shape == (297, 64) and everything.x.shape == (1797, 64)
  assert train.x.min() >= 0 and train.x.max() == 1.0 and train.image_shape == (8, 8)
  tr, te = data.datasets.digits_split_indices()
  assert len(np.intersect1d(tr, te)) == 0 and len(np.union1d(tr, te)) == 1797
  np.testing.assert_array_equal(everything.x[te], test.x)
  np.testing.assert_array_equal(everything.y[tr], train.y)


def test_digits_equal_scikit_learns_load_digits(monkeypatch):
  """The bundled file read directly (without importing scikit-learn) and the fallback through
  ``load_digits`` both give scikit-learn's digits, values / 16."""
  datasets = pytest.importorskip("sklearn.datasets")
  ref = datasets.load_digits()
  assert data.datasets._digits_file() is not None  # the direct path is the one taken
  for direct in (True, False):
    if not direct:
      monkeypatch.setattr(data.datasets, "_digits_file", lambda: None)
    x, y = data.datasets._load_digits()
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x, (ref.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, ref.target)


def test_synthetic_gmm_is_deterministic_and_separated():
  t1, t2 = data.make_gmm(3, 5, 3, separation=6.0), data.make_gmm(3, 5, 3, separation=6.0)
  np.testing.assert_array_equal(t1.means, t2.means)
  dist = np.linalg.norm(t1.means[:, None] - t1.means[None], axis=-1)
  assert dist[~np.eye(5, dtype=bool)].min() >= 6.0
  np.testing.assert_allclose(t1.weights.sum(), 1.0)
  assert np.all(np.linalg.eigvalsh(t1.covariances) > 0)
  opts = dict(seed=3, num_points=4000, num_components=5, num_features=3, separation=6.0)
  tr = data.load_dataset("synthetic_gmm", "train", synthetic_options=opts)
  te = data.load_dataset("synthetic_gmm", "test", synthetic_options=opts)
  assert tr.x.shape == (4000, 3) and not np.array_equal(tr.x, te.x)
  # The draws follow the mixture: component frequencies and means (loose statistical bounds).
  freq = np.bincount(tr.y, minlength=5) / 4000
  np.testing.assert_allclose(freq, t1.weights, atol=0.03)
  for k in range(5):
    np.testing.assert_allclose(tr.x[tr.y == k].mean(0), t1.means[k], atol=0.25)


def _epochs(it, n):
  return [next(it) for _ in range(n)]


def test_batches_are_permutations_and_deterministic():
  x = np.arange(20, dtype=np.float32)[:, None]
  it = data.BatchIterator(x, 5, seed=1)
  b = _epochs(it, 8)
  epoch0 = np.concatenate([bb.x[:, 0] for bb in b[:4]])
  epoch1 = np.concatenate([bb.x[:, 0] for bb in b[4:]])
  np.testing.assert_array_equal(np.sort(epoch0), np.arange(20))
  np.testing.assert_array_equal(np.sort(epoch1), np.arange(20))
  assert not np.array_equal(epoch0, epoch1)
  assert [(bb.epoch, bb.step) for bb in b[3:5]] == [(0, 3), (1, 0)]
  again = _epochs(data.BatchIterator(x, 5, seed=1), 8)
  for u, v in zip(b, again):
    np.testing.assert_array_equal(u.x, v.x)
  other = _epochs(data.BatchIterator(x, 5, seed=2), 4)
  assert not np.array_equal(np.concatenate([bb.x for bb in other]), np.concatenate(
      [bb.x for bb in b[:4]]))


def test_batches_resume_from_a_position():
  rng = np.random.default_rng(0)
  x = rng.random((23, 4)).astype(np.float32)
  y = np.arange(23)
  full = data.BatchIterator(x, 4, seed=5, y=y, binarize=True)
  reference = _epochs(full, 17)
  assert full.steps_per_epoch == 5
  for start in (3, 5, 11):
    pos = data.position_of(start, 23, 4)
    resumed = data.BatchIterator(x, 4, seed=5, y=y, binarize=True, position=pos)
    for ref, got in zip(reference[start:], _epochs(resumed, 17 - start)):
      np.testing.assert_array_equal(ref.x, got.x)
      np.testing.assert_array_equal(ref.y, got.y)
      assert (ref.epoch, ref.step) == (got.epoch, got.step)


def test_dynamic_binarization():
  x = np.full((1000, 50), 0.3, np.float32)
  it = data.BatchIterator(x, 1000, seed=0, binarize=True)
  a, b = next(it).x, next(it).x
  assert set(np.unique(a)) <= {0.0, 1.0}
  assert not np.array_equal(a, b)  # fresh draw in the next epoch
  assert abs(a.mean() - 0.3) < 0.01  # 50000 Bernoulli(0.3) draws: std 0.002
  once = data.binarize_once(x, 0)
  np.testing.assert_array_equal(once, data.binarize_once(x, 0))
  assert abs(once.mean() - 0.3) < 0.01
  # In pieces (as processes do with their blocks of an evaluation set): the same bits.
  big = np.full((2500, 5), 0.5, np.float32)
  whole = data.binarize_once(big, 3)
  for start, stop in ((0, 1), (1000, 1100), (1023, 2049), (2400, 2500), (7, 7)):
    np.testing.assert_array_equal(data.binarize_once(big[start:stop], 3, first_row=start),
                                  whole[start:stop])
  assert not np.array_equal(whole[:1024], whole[1024:2048])  # blocks draw different numbers


def test_batch_iterator_errors():
  with pytest.raises(ValueError, match="batch_size"):
    data.BatchIterator(np.zeros((3, 2)), 0, seed=0)
  with pytest.raises(ValueError, match="larger than the dataset"):
    data.BatchIterator(np.zeros((3, 2)), 4, seed=0)
  with pytest.raises(ValueError, match="position"):
    data.BatchIterator(np.zeros((8, 2)), 4, seed=0, position=(0, 2))
  assert data.steps_per_epoch(10, 4, drop_remainder=False) == 3


# ------------------------------------------------------------------------------------------------
# Stream sources (lvmjax.data.streams): what streaming EM, online EM and mini-batch K-means read.


def _rows(source, batch_size, sample_weight=None):
  make_iter, n, d, arr = data.as_source(source, sample_weight, batch_size)
  batches = list(make_iter())
  return batches, n, d, arr


def test_as_source_reads_arrays_npy_files_and_callables_in_order(tmp_path):
  x = np.arange(22, dtype=np.float32).reshape(11, 2)
  w = np.linspace(0.5, 1.5, 11)
  path = tmp_path / "x.npy"
  np.save(path, x)
  for source in (x, str(path), data.npy_rows(path)):
    batches, n, d, arr = _rows(source, 4, w)
    assert (n, d) == (11, 2) and arr is not None
    assert [len(xb) for xb, _ in batches] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]), x)
    np.testing.assert_array_equal(np.concatenate([wb for _, wb in batches]), w)
  # A callable: a fresh pass each call, (x, w) pairs, oversized batches split to batch_size.
  batches, n, d, arr = _rows(lambda: iter([(x[:7], w[:7]), x[7:]]), 4)
  assert (n, d, arr) == (None, None, None)
  assert [(len(xb), wb is None) for xb, wb in batches] == [(4, False), (3, False), (4, True)]
  np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]), x)


def test_memmap_rows_come_from_plain_file_reads(tmp_path):
  x = np.random.default_rng(0).normal(size=(10, 3))
  np.save(tmp_path / "x.npy", x)
  mm = data.npy_rows(tmp_path / "x.npy")
  blocks = list(data.iter_rows(mm, 4, start=1, stop=9))
  assert all(type(b) is np.ndarray for b in blocks)  # not views of the mapping
  np.testing.assert_array_equal(np.concatenate(blocks), x[1:9])


def test_stream_helpers_check_and_pad_batches():
  with pytest.raises(ValueError, match="2-D array or memmap"):
    data.as_source(np.zeros(5), None, 2)
  with pytest.raises(ValueError, match="yield"):
    data.as_source(lambda: [], np.ones(3), 2)
  with pytest.raises(ValueError, match="shape"):
    data.as_source(np.zeros((5, 2)), np.ones(4), 2)
  with pytest.raises(ValueError, match=r"\(n, 3\)"):
    data.check_batch(np.zeros((2, 2)), None, 3)
  with pytest.raises(ValueError, match="NaN"):
    data.check_batch(np.array([[np.nan, 1.0]]), None, 2)
  with pytest.raises(ValueError, match="sample_weight"):
    data.check_batch(np.zeros((2, 2)), np.array([1.0, -1.0]), 2)
  xp, wp = data.pad_batch(np.ones((2, 3)), np.array([2.0, 3.0]), 5, np.float64)
  assert xp.dtype == wp.dtype == np.float64
  np.testing.assert_array_equal(wp, [2, 3, 0, 0, 0])
  np.testing.assert_array_equal(xp[2:], 0)


def test_subsample_is_uniform_without_replacement_and_in_order():
  import jax  # pylint: disable=g-import-not-at-top
  x = np.arange(300, dtype=np.float64)[:, None]
  sub, _ = data.subsample(jax.random.key(0), x, 50)
  assert len(np.unique(sub)) == 50 and np.all(np.diff(sub[:, 0]) > 0)
  streamed, _ = data.subsample(jax.random.key(0), lambda: iter(np.array_split(x, 7)), 50,
                               batch_size=16)
  assert len(np.unique(streamed)) == 50 and np.all(np.diff(streamed[:, 0]) > 0)
  everything, w = data.subsample(jax.random.key(1), x, 1000, np.ones(300))
  np.testing.assert_array_equal(everything, x)
  assert w.shape == (300,)
  with pytest.raises(ValueError, match="no rows"):
    data.subsample(jax.random.key(0), lambda: iter([]), 5)


def test_load_process_share_and_load_splits_on_one_process():
  import ml_collections  # pylint: disable=g-import-not-at-top
  train, n = data.load_process_share("digits", "train", subset=200, subset_seed=[3, 7])
  assert n == 200 and train.x.shape == (200, 64)
  rows = data.random_subset(data.num_rows("digits", "train"), 200, [3, 7])
  np.testing.assert_array_equal(train.x, data.load_dataset("digits", "train").x[rows])
  _, n_all = data.load_process_share("digits", "test")
  assert n_all == 297
  config = ml_collections.ConfigDict(dict(dataset="digits", data_dir="", seed=3,
                                          num_train_points=200))
  tr, te = data.load_splits(config)
  np.testing.assert_array_equal(tr.x, train.x)
  assert te.x.shape == (297, 64)
