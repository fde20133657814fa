"""Where the benchmark files come from, and how the public originals become lvmjax's ``.npz`` layout.

The project reads one ``.npz`` file per dataset from a data directory, in this layout:

* ``binarized_mnist.npz``: ``train_bits`` (50000, 98), ``valid_bits`` (10000, 98), ``test_bits``
  (10000, 98), uint8, the 784 binary pixels of each image packed with ``np.packbits(x, axis=1)``.
* ``mnist.npz`` and ``fashion_mnist.npz``: ``x_train`` (60000, 28, 28), ``y_train`` (60000,),
  ``x_test`` (10000, 28, 28), ``y_test`` (10000,), all uint8, in the original idx-file order.

When a file is missing and the machine is online, :func:`ensure_file` downloads the public originals
(MNIST and Fashion-MNIST idx files, Larochelle's binarized ``.amat`` text files), checks each file's
size and sha256 against the published values, converts them to the layout above and writes the
``.npz`` atomically (temporary file, then rename). Offline, it fails with a message that names the file
and where to put it.

References for the checksums of the originals: the TensorFlow Datasets registry
(``tensorflow_datasets/url_checksums/{mnist,fashion_mnist,binarized_mnist}.txt``: size and sha256 of
each URL), which agree with the md5 values published by torchvision and the Fashion-MNIST repository.
The per-array sha256 of the converted arrays (:data:`ARRAY_SHA256`) are those of the project's
reference copies.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Callable

import numpy as np
from absl import logging

#: Environment variable naming the data directory.
DATA_DIR_ENV = "LVMJAX_DATA_DIR"
#: Set to 1 to never try a download (fail at once with the "where to put it" message).
NO_DOWNLOAD_ENV = "LVMJAX_NO_DOWNLOAD"
#: Data directory used when neither the config nor the environment gives one.
DEFAULT_DATA_DIR = pathlib.Path("~/.cache/lvmjax/data")


@dataclasses.dataclass(frozen=True)
class Remote:
  """One public original file: where it is and what it must hash to."""
  filename: str
  urls: tuple[str, ...]
  size: int
  sha256: str


_MNIST_MIRRORS = ("https://storage.googleapis.com/cvdf-datasets/mnist/",
                  "https://ossci-datasets.s3.amazonaws.com/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


def _idx_remotes(mirrors, table):
  return tuple(Remote(name, tuple(m + name for m in mirrors), size, sha)
               for name, size, sha in table)


#: The originals of each ``.npz`` file, keyed by the ``.npz`` file's stem.
REMOTES: dict[str, tuple[Remote, ...]] = {
    "mnist": _idx_remotes(_MNIST_MIRRORS, (
        ("train-images-idx3-ubyte.gz", 9912422,
         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        ("train-labels-idx1-ubyte.gz", 28881,
         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        ("t10k-images-idx3-ubyte.gz", 1648877,
         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        ("t10k-labels-idx1-ubyte.gz", 4542,
         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    )),
    "fashion_mnist": _idx_remotes(_FASHION_MIRRORS, (
        ("train-images-idx3-ubyte.gz", 26421880,
         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        ("train-labels-idx1-ubyte.gz", 29515,
         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        ("t10k-images-idx3-ubyte.gz", 4422102,
         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        ("t10k-labels-idx1-ubyte.gz", 5148,
         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    )),
    "binarized_mnist": tuple(
        Remote(f"binarized_mnist_{split}.amat", (_LAROCHELLE + f"binarized_mnist_{split}.amat",),
               size, sha)
        for split, size, sha in (
            ("train", 78400000, "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
            ("valid", 15680000, "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
            ("test", 15680000, "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
        )),
}

#: sha256 of ``np.ascontiguousarray(arr).tobytes()`` for each array of the reference ``.npz`` files.
ARRAY_SHA256: dict[str, dict[str, str]] = {
    "binarized_mnist": {
        "train_bits": "727146c35424b019f3e350e1e69faa05644a0abaf787e3f4e1a9632220a13906",
        "valid_bits": "a256ac44ae26be720fad8616a05ed6ecfd1619930d9a208379bb2a4405df5b6d",
        "test_bits": "9fcd8da6f0fdf09b2ba30fe63a0bb784042a0de82563172530229b983e294ff2",
    },
    "mnist": {
        "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    "fashion_mnist": {
        "x_train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "y_train": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "x_test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "y_test": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The data directory: ``data_dir`` if given, else ``$LVMJAX_DATA_DIR``, else ``~/.cache/lvmjax/data``."""
  if data_dir is None or str(data_dir) == "":
    data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
  return pathlib.Path(data_dir).expanduser()


def sha256_file(path: str | os.PathLike) -> str:
  """Hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def sha256_array(arr: np.ndarray) -> str:
  """Hex sha256 of an array's contents (``np.ascontiguousarray(arr).tobytes()``)."""
  return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def verify_arrays(path: str | os.PathLike, name: str) -> dict[str, bool]:
  """Compares each array of ``path`` with the reference per-array sha256 of dataset file ``name``.

  Args:
    path: an ``.npz`` file.
    name: ``"binarized_mnist"``, ``"mnist"`` or ``"fashion_mnist"``.

  Returns:
    ``{array_name: matches}`` for every reference array (missing arrays count as not matching).
  """
  with np.load(path) as d:
    return {k: (k in d.files and sha256_array(d[k]) == v) for k, v in ARRAY_SHA256[name].items()}


def _fetch(url: str, dest: pathlib.Path, timeout: float = 60.0) -> None:
  """Downloads ``url`` to ``dest`` (no checks). Tests replace this function."""
  with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
    shutil.copyfileobj(r, f)


#: The function that downloads one URL to a path; replaced in tests (no network there).
fetch: Callable[[str, pathlib.Path], None] = _fetch


def missing_file_message(name: str, data_dir: pathlib.Path, reason: str = "") -> str:
  """The error text for a dataset file that is absent and could not be downloaded."""
  path = data_dir / f"{name}.npz"
  originals = ", ".join(r.urls[0] for r in REMOTES.get(name, ()))
  msg = (f"Dataset file {path} does not exist" + (f" and could not be downloaded ({reason})" if reason
                                                   else "") + ". "
         f"Put {name}.npz (numpy.savez_compressed arrays, layout in help(lvmjax.data.sources)) in "
         f"{data_dir}, or point the data directory elsewhere with --config.data_dir=DIR or "
         f"the environment variable {DATA_DIR_ENV}=DIR.")
  if originals:
    msg += f" On a machine with internet access it is built from the public originals: {originals}."
  return msg


def _download_verified(remote: Remote, dest_dir: pathlib.Path) -> pathlib.Path:
  """Downloads one original into ``dest_dir`` (reusing a verified copy) and checks size and sha256."""
  dest = dest_dir / remote.filename
  if dest.exists() and dest.stat().st_size == remote.size and sha256_file(dest) == remote.sha256:
    return dest
  errors = []
  for url in remote.urls:
    tmp = dest_dir / (remote.filename + ".part")
    try:
      logging.info("Downloading %s", url)
      fetch(url, tmp)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
      errors.append(f"{url}: {e}")
      tmp.unlink(missing_ok=True)
      continue
    size, digest = tmp.stat().st_size, sha256_file(tmp)
    if size != remote.size or digest != remote.sha256:
      tmp.unlink(missing_ok=True)
      raise ValueError(
          f"Checksum mismatch for {url}: got {size} bytes with sha256 {digest}, expected "
          f"{remote.size} bytes with sha256 {remote.sha256}. The download is corrupt or the file "
          "has changed upstream; it was deleted.")
    os.replace(tmp, dest)
    return dest
  raise ConnectionError("; ".join(errors))


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an idx file (MNIST format, optionally gzipped) into an array of its stored shape.

  The format: two zero bytes, a type byte (0x08 for uint8), the number of dimensions, then each
  dimension as a big-endian int32, then the values in row-major order.
  """
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise ValueError(f"{path} is not an idx file (bad magic number).")
  dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
  if raw[2] not in dtypes:
    raise ValueError(f"{path}: unknown idx type code {raw[2]:#x}.")
  ndim = raw[3]
  shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", count=ndim, offset=4))
  dtype = np.dtype(dtypes[raw[2]])
  expected = int(np.prod(shape)) * dtype.itemsize
  data = raw[4 + 4 * ndim:]
  if len(data) != expected:
    raise ValueError(f"{path}: idx header says shape {shape} ({expected} bytes) but the file holds "
                     f"{len(data)} bytes of data (truncated download?).")
  return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_amat(path: str | os.PathLike, num_features: int = 784) -> np.ndarray:
  """Reads a binarized-MNIST ``.amat`` text file (one image per line, 0/1 separated by spaces).

  Returns:
    uint8 array (num_images, num_features) of 0/1.
  """
  with open(path, "rb") as f:
    raw = np.frombuffer(f.read(), np.uint8)
  allowed = np.isin(raw, np.frombuffer(b"01 \t\r\n", np.uint8))
  if not allowed.all():
    bad = int(np.argmin(allowed))
    raise ValueError(f"{path} is not a binarized .amat text file: unexpected byte {raw[bad]!r} at "
                     f"offset {bad}.")
  bits = raw[(raw == ord("0")) | (raw == ord("1"))] - ord("0")
  lines = int(np.count_nonzero(raw == ord("\n")))
  if bits.size % num_features or (lines and bits.size // num_features != lines):
    raise ValueError(f"{path}: {bits.size} values on {lines} lines is not {num_features} per line.")
  return bits.reshape(-1, num_features).astype(np.uint8)


def _convert(name: str, files: dict[str, pathlib.Path]) -> dict[str, np.ndarray]:
  if name in ("mnist", "fashion_mnist"):
    return {
        "x_train": read_idx(files["train-images-idx3-ubyte.gz"]).astype(np.uint8),
        "y_train": read_idx(files["train-labels-idx1-ubyte.gz"]).astype(np.uint8),
        "x_test": read_idx(files["t10k-images-idx3-ubyte.gz"]).astype(np.uint8),
        "y_test": read_idx(files["t10k-labels-idx1-ubyte.gz"]).astype(np.uint8),
    }
  if name == "binarized_mnist":
    return {f"{split}_bits": np.packbits(read_amat(files[f"binarized_mnist_{split}.amat"]), axis=1)
            for split in ("train", "valid", "test")}
  raise ValueError(f"No known originals for dataset file {name!r}.")


def ensure_file(name: str, data_dir: str | os.PathLike | None = None, *,
                download: bool | None = None) -> pathlib.Path:
  """Returns the path of ``<data_dir>/<name>.npz``, downloading and converting it when missing.

  Args:
    name: ``"binarized_mnist"``, ``"mnist"`` or ``"fashion_mnist"``.
    data_dir: the data directory (see :func:`resolve_data_dir`).
    download: try to download missing files; default: yes unless ``$LVMJAX_NO_DOWNLOAD=1``.

  Returns:
    The path of the ``.npz`` file.

  Raises:
    ValueError: the file is missing and could not be downloaded (the message names the file and
      where to put it), or a download does not match its published checksum.
  """
  data_dir = resolve_data_dir(data_dir)
  path = data_dir / f"{name}.npz"
  if path.exists():
    return path
  if name not in REMOTES:
    raise ValueError(missing_file_message(name, data_dir))
  if download is None:
    download = os.environ.get(NO_DOWNLOAD_ENV, "") not in ("1", "true", "yes")
  if not download:
    raise ValueError(missing_file_message(name, data_dir, "downloads are turned off"))
  try:
    downloads = data_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    files = {r.filename: _download_verified(r, downloads) for r in REMOTES[name]}
  except (ConnectionError, OSError) as e:
    raise ValueError(missing_file_message(name, data_dir, f"offline? {e}")) from e
  arrays = _convert(name, files)
  for key, ok in ((k, sha256_array(arrays[k]) == v) for k, v in ARRAY_SHA256[name].items()
                  if k in arrays):
    if not ok:
      logging.warning("%s.npz: array %s differs from the project's reference copy (per-array sha256 "
                      "in lvmjax.data.sources.ARRAY_SHA256); the originals themselves matched "
                      "their published checksums.",
                      name, key)
  fd, tmp = tempfile.mkstemp(suffix=".npz.tmp", dir=data_dir)
  os.close(fd)
  try:
    with open(tmp, "wb") as f:
      np.savez_compressed(f, **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  logging.info("Wrote %s", path)
  return path
