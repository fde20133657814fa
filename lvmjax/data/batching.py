"""Deterministic, resumable minibatches: a fresh permutation per epoch drawn from a seed.

The batch at position (epoch, step) depends only on (seed, epoch, step), so a run resumed from a
checkpoint that stored its position sees exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from lvmjax import _checks


class Position(NamedTuple):
  """Where the next batch comes from: ``epoch`` and ``step`` (batches already taken in that epoch)."""
  epoch: int
  step: int


class Batch(NamedTuple):
  """One minibatch: x (B, D) float32, y (B,) or None, and the position it was taken from."""
  x: np.ndarray
  y: np.ndarray | None
  epoch: int
  step: int


def epoch_permutation(seed: int, epoch: int, num_points: int) -> np.ndarray:
  """The order of the rows in ``epoch``: a permutation drawn from (seed, epoch) alone."""
  return np.random.default_rng([seed, epoch, 0x5EED]).permutation(num_points)


def steps_per_epoch(num_points: int, batch_size: int, drop_remainder: bool = True) -> int:
  """Batches per epoch: ``N // B`` (dropping the last partial batch) or ``ceil(N / B)``."""
  if drop_remainder:
    return num_points // batch_size
  return -(-num_points // batch_size)


def position_of(global_step: int, num_points: int, batch_size: int,
                drop_remainder: bool = True) -> Position:
  """The (epoch, step) position after ``global_step`` batches."""
  epoch, step = divmod(int(global_step), steps_per_epoch(num_points, batch_size, drop_remainder))
  return Position(epoch, step)


class BatchIterator:
  """Endless iterator over shuffled minibatches, resumable from a :class:`Position`.

  Each epoch visits the rows in the order :func:`epoch_permutation(seed, epoch, N)`. With
  ``binarize=True`` every batch is binarized afresh, pixel ~ Bernoulli(x), from a generator seeded
  by (seed, epoch, step): dynamic binarization that is still deterministic and resumable.

  Args:
    x: (N, D) data.
    batch_size: rows per batch (at most N when ``drop_remainder``).
    seed: the shuffling seed.
    y: optional (N,) labels, batched alongside.
    binarize: draw Bernoulli(x) for each batch.
    drop_remainder: drop the last partial batch of each epoch (fixed shapes for jit).
    position: where to start, e.g. the position stored in a checkpoint.

  Examples:
    >>> it = BatchIterator(np.zeros((10, 3)), batch_size=4, seed=0)
    >>> batch = next(it); batch.x.shape, it.position
    ((4, 3), Position(epoch=0, step=1))
  """

  def __init__(self, x: np.ndarray, batch_size: int, *, seed: int, y: np.ndarray | None = None,
               binarize: bool = False, drop_remainder: bool = True,
               position: tuple[int, int] = (0, 0)):
    self._x = np.asarray(x)
    self._y = None if y is None else np.asarray(y)
    n = len(self._x)
    self.batch_size = _checks.check_positive_int(batch_size, "batch_size")
    if drop_remainder and self.batch_size > n:
      raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} rows); lower "
                       "batch_size or set drop_remainder=False.")
    if self._y is not None and len(self._y) != n:
      raise ValueError(f"y has {len(self._y)} rows but x has {n}.")
    self.seed = int(seed)
    self.binarize = bool(binarize)
    self.drop_remainder = drop_remainder
    self.steps_per_epoch = steps_per_epoch(n, self.batch_size, drop_remainder)
    epoch, step = (int(v) for v in position)
    if epoch < 0 or not 0 <= step < self.steps_per_epoch:
      raise ValueError(f"position {position} is outside 0 <= step < {self.steps_per_epoch}.")
    self._epoch, self._step = epoch, step
    self._perm = None
    self._perm_epoch = None

  @property
  def position(self) -> Position:
    """Position of the next batch."""
    return Position(self._epoch, self._step)

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    if self._perm_epoch != self._epoch:
      self._perm = epoch_permutation(self.seed, self._epoch, len(self._x))
      self._perm_epoch = self._epoch
    start = self._step * self.batch_size
    idx = self._perm[start:start + self.batch_size]
    x = self._x[idx].astype(np.float32)
    if self.binarize:
      rng = np.random.default_rng([self.seed, self._epoch, self._step, 0xB1])
      x = (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)
    batch = Batch(x, None if self._y is None else self._y[idx], self._epoch, self._step)
    self._step += 1
    if self._step == self.steps_per_epoch:
      self._epoch, self._step = self._epoch + 1, 0
    return batch
