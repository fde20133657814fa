"""Reading some rows of one array of an ``.npz`` file without loading the whole array.

An ``.npz`` file is a zip archive with one ``.npy`` member per array (deflated by
``numpy.savez_compressed``, stored by ``numpy.savez``). A zip member can only be read forward, so
:func:`read_rows` opens the member as a stream, reads the ``.npy`` header (shape, dtype, order),
skips the bytes of the rows before the first wanted row by reading and discarding them in pieces
of at most :data:`PIECE_BYTES`, and then reads the wanted rows. Memory is the rows returned plus one
piece, whatever the size of the array; the time is that of decompressing the member up to the last
wanted row. :func:`array_info` reads the header only (the number of rows of a split, cheaply).

This is how each process of a multi-host run loads only its own block of rows
(:func:`lvmjax.sharding.process_rows`).
"""
from __future__ import annotations

import contextlib
import os
import zipfile
import zlib
from typing import Any, Iterator, NamedTuple

import numpy as np

#: Largest piece read at a time while skipping or scanning rows (bytes).
PIECE_BYTES = 1 << 18


class ArrayInfo(NamedTuple):
  """What the ``.npy`` header of an array says.

  Attributes:
    shape: the array's shape (rows first).
    dtype: its dtype.
    fortran_order: True for a column-major array (rows are then not contiguous in the file).
  """
  shape: tuple[int, ...]
  dtype: np.dtype
  fortran_order: bool


def corrupt_file_message(path: str | os.PathLike, error: BaseException) -> str:
  """The text of the error for an ``.npz`` file that cannot be read as a zip of ``.npy`` arrays."""
  return (f"{os.fspath(path)} is not a readable .npz file ({type(error).__name__}: {error}); it is "
          "probably truncated (an interrupted download or copy) or corrupt. Delete it and run "
          "again: a dataset file of lvmjax.data is then downloaded and converted afresh where the "
          "machine is online; otherwise copy a good file there (for a file of your own, write it "
          "again with numpy.savez_compressed).")


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
  """Turns the errors of reading a broken ``.npz`` inside the block into one ``ValueError``.

  ``zipfile.BadZipFile`` (truncated file, bad CRC), ``zlib.error`` and ``EOFError`` (empty or
  cut-off member) become a ``ValueError`` naming ``path`` and the fix (:func:`corrupt_file_message`).

  Examples:
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.npz"
    >>> np.savez(p, x=np.zeros(100))
    >>> _ = p.write_bytes(p.read_bytes()[:200])  # cut off, as by an interrupted download
    >>> with reading(p), np.load(p) as d:
    ...   d.files
    Traceback (most recent call last):
    ValueError: ...bad.npz is not a readable .npz file (BadZipFile: File is not a zip file); ...
  """
  try:
    yield
  except (zipfile.BadZipFile, zlib.error, EOFError) as e:
    raise ValueError(corrupt_file_message(path, e)) from e


def members(path: str | os.PathLike) -> list[str]:
  """The names of the arrays in an ``.npz`` file (``np.load(path).files``), without reading them.

  Raises:
    ValueError: the file is not a readable zip (truncated or corrupt), naming the file and the fix.
  """
  with reading(path), zipfile.ZipFile(path) as zf:
    return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def _open(zf: zipfile.ZipFile, path, key: str):
  name = key + ".npy"
  if name not in zf.namelist():
    have = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    raise ValueError(f"{path} has no array {key!r} (it has {have}).")
  return zf.open(name)


def _read_header(f, path, key) -> ArrayInfo:
  fmt = np.lib.format
  version = fmt.read_magic(f)
  if version == (1, 0):
    shape, fortran_order, dtype = fmt.read_array_header_1_0(f)
  else:  # (2, 0), or (3, 0): the same 4-byte length; utf-8 text, which is ASCII for plain dtypes
    shape, fortran_order, dtype = fmt.read_array_header_2_0(f)
  if dtype.hasobject:
    raise ValueError(f"{path}: array {key!r} holds Python objects; only plain numeric arrays can "
                     "be read by rows (re-save it with a numeric dtype).")
  return ArrayInfo(tuple(int(s) for s in shape), dtype, bool(fortran_order))


def array_info(path: str | os.PathLike, key: str) -> ArrayInfo:
  """Shape, dtype and order of array ``key`` of an ``.npz`` file, from its header alone.

  Args:
    path: the ``.npz`` file.
    key: the array's name, e.g. ``"x_train"``.

  Returns:
    An :class:`ArrayInfo`.

  Raises:
    ValueError: the file has no such array, it holds Python objects, or it is not a readable zip.
  """
  with reading(path), zipfile.ZipFile(path) as zf, _open(zf, path, key) as f:
    return _read_header(f, path, key)


def _read_into(f, buf: memoryview) -> None:
  """Fills ``buf`` from ``f`` in pieces; raises if the member ends first."""
  pos, size = 0, len(buf)
  while pos < size:
    chunk = f.read(min(PIECE_BYTES, size - pos))
    if not chunk:
      raise ValueError(f"the array data end after {pos} of {size} expected bytes (truncated file?)")
    buf[pos:pos + len(chunk)] = chunk
    pos += len(chunk)


def _skip(f, num_bytes: int) -> None:
  while num_bytes > 0:
    chunk = f.read(min(PIECE_BYTES, num_bytes))
    if not chunk:
      raise ValueError("the array data end before the requested rows (truncated file?)")
    num_bytes -= len(chunk)


def row_indices(rows: Any, num_rows: int) -> slice | np.ndarray:
  """Checks a row selection and puts it in a normal form.

  Args:
    rows: None (all rows), a ``slice``, a 1-D integer index array (negative values count from the
      end, as in NumPy) or a boolean mask of length ``num_rows``.
    num_rows: the number of rows of the array.

  Returns:
    ``slice(start, stop)`` with ``0 <= start <= stop <= num_rows`` for a contiguous block, else
    an int64 array of indices in ``[0, num_rows)``.

  Raises:
    ValueError: an index out of range, a mask of the wrong length, or another type of ``rows``.
  """
  if rows is None:
    return slice(0, num_rows)
  if isinstance(rows, slice):
    start, stop, step = rows.indices(num_rows)
    if step == 1:
      return slice(start, max(start, stop))
    return np.arange(start, stop, step, dtype=np.int64)
  idx = np.asarray(rows)
  if idx.dtype == bool:
    if idx.shape != (num_rows,):
      raise ValueError(f"A boolean row mask must have shape ({num_rows},), one entry per row; got "
                       f"{idx.shape}.")
    return np.flatnonzero(idx).astype(np.int64)
  if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
    raise ValueError("rows must be None, a slice, a 1-D array of integer row indices or a boolean "
                     f"mask; got {type(rows).__name__} of dtype {idx.dtype} and shape {idx.shape}.")
  idx = idx.astype(np.int64)
  bad = (idx < -num_rows) | (idx >= num_rows)
  if bad.any():
    raise ValueError(f"Row index {int(idx[bad][0])} is out of range for an array of {num_rows} "
                     f"rows (valid: -{num_rows} to {num_rows - 1}).")
  return np.where(idx < 0, idx + num_rows, idx)


def _scan(f, num_records: int, unit: int, sel: slice | np.ndarray, out: np.ndarray) -> None:
  """Reads the selected records of a run of ``num_records`` records of ``unit`` bytes.

  ``sel`` is a ``slice(start, stop)`` or sorted unique indices; ``out`` is a C-contiguous
  (len(sel), unit) uint8 array. Leaves ``f`` at the end of the run.
  """
  if isinstance(sel, slice):
    _skip(f, sel.start * unit)
    _read_into(f, memoryview(out.reshape(-1)))
    _skip(f, (num_records - sel.stop) * unit)
    return
  start, done = 0, 0
  if len(sel):
    piece_rows = max(1, PIECE_BYTES // max(unit, 1))
    piece = np.empty((piece_rows, unit), np.uint8)
    start = int(sel[0])
    _skip(f, start * unit)
    stop = int(sel[-1]) + 1
    while start < stop:
      m = min(piece_rows, stop - start)
      _read_into(f, memoryview(piece[:m].reshape(-1)))
      hi = int(np.searchsorted(sel, start + m))
      out[done:hi] = piece[sel[done:hi] - start]
      done, start = hi, start + m
  _skip(f, (num_records - start) * unit)


def read_rows(path: str | os.PathLike, key: str, rows: Any = None) -> np.ndarray:
  """``np.load(path)[key][rows]``, streaming the array instead of loading it.

  A C-ordered array is read up to its last wanted row; a column-major (Fortran-ordered) one, as
  ``numpy.savez`` writes for an F-contiguous array, is streamed to its end column by column. Either
  way only the selected rows and one piece of :data:`PIECE_BYTES` are held.

  Args:
    path: the ``.npz`` file (deflated or stored members).
    key: the array's name.
    rows: a selection accepted by :func:`row_indices` (None: all rows).

  Returns:
    The selected rows, with the stored dtype, shape ``(len(selection),) + shape[1:]``, in the
    order of the selection (repeats allowed).

  Raises:
    ValueError: no such array, an object array, a bad selection, or a truncated or corrupt file.

  Examples:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.npz"
    >>> np.savez_compressed(p, x=np.arange(12).reshape(6, 2))
    >>> read_rows(p, "x", slice(4, None)).tolist()
    [[8, 9], [10, 11]]
  """
  with reading(path), zipfile.ZipFile(path) as zf, _open(zf, path, key) as f:
    info = _read_header(f, path, key)
    if not info.shape:
      raise ValueError(f"{path}: array {key!r} is a scalar; it has no rows.")
    n, rest = info.shape[0], info.shape[1:]
    cols = int(np.prod(rest, dtype=np.int64))
    sel = row_indices(rows, n)
    order = None
    if not isinstance(sel, slice):
      uniq, inverse = np.unique(sel, return_inverse=True)
      if len(uniq) < len(sel) or (len(sel) > 1 and not bool(np.all(sel[1:] > sel[:-1]))):
        order = inverse.reshape(-1)  # unsorted or repeated: read each row once, then reorder
      sel = uniq
    m = sel.stop - sel.start if isinstance(sel, slice) else len(sel)
    size = info.dtype.itemsize
    try:
      if info.fortran_order and cols > 1:  # one run of n values per column
        out = np.empty((cols, m), info.dtype)
        for c in range(cols):
          _scan(f, n, size, sel, out[c].reshape(m, 1).view(np.uint8))
        out = out.T.reshape((m,) + rest, order="F")
      else:
        out = np.empty((m, cols), info.dtype)
        _scan(f, n, cols * size, sel, out.view(np.uint8))
        out = out.reshape((m,) + rest)
    except ValueError as e:
      raise ValueError(f"{path}: array {key!r}: {e}.") from e
  return out if order is None else out[order]
