r"""EM for finite mixtures of any component family, on additive sufficient statistics.

A mixture with K components of a family :math:`p(x \mid \theta_k)` and weights :math:`w_k` is fit
by EM. The E-step maps rows to statistics that add up over rows, chunks of rows, devices and
batches read from disk,

.. math::

  r_{nk} = \frac{w_k\, p(x_n \mid \theta_k)}{\sum_j w_j\, p(x_n \mid \theta_j)}, \qquad
  N_k = \sum_n s_n r_{nk}, \qquad
  T_k = \sum_n s_n r_{nk}\, T(x_n), \qquad
  \ell = \sum_n s_n \log \sum_k w_k\, p(x_n \mid \theta_k),

with sample weights :math:`s_n` and the family's per-row statistic :math:`T(x)` (for an
exponential family its sufficient statistic; by default :math:`T(x) = x`). The M-step is the
family's, closed-form on the sums: e.g. :math:`w_k = N_k / \sum_j N_j`,
:math:`\lambda_k = T_k / N_k` for Poisson rates.

A family is a :class:`MixtureFamily`: it supplies ``log_component`` (the per-component
log-density, (n, K)) and ``m_step`` (new parameters from :class:`MixtureStats`), and everything
else comes from this module, the same code the Gaussian mixture (:mod:`lvmjax.gmm`) runs on:

* chunking: :func:`sum_stats` streams the E-step over chunks of rows with ``lax.scan``
  (memory O(chunk · K · D), not O(N · K · D));
* sample weights (integer weights equal repeated rows; weight-0 rows change nothing);
* the loop: :func:`fit` iterates E- and M-steps with :func:`lvmjax.fixed_point.fixed_point`
  (scikit-learn's rule: stop when the mean log-likelihood changes by less than ``tol``), and
  resumes from its own result;
* restarts: ``n_init`` fits run as one ``vmap`` over keys, the largest final log-likelihood wins;
* device meshes: with ``mesh=`` (or an x already row-sharded) the whole fit is one
  ``shard_map``; each device sums its rows' statistics and one ``psum`` per iteration adds them;
* streaming: :func:`fit_streaming` makes every iteration one pass over batches of data that do
  not fit in memory (and, with several processes, adds the passes of all processes);
* frozen parameters: ``fixed=("weights", ...)`` keeps the named fields of the parameters at their
  initial values, bit for bit, on one device, a mesh or a stream (:func:`keep_fields`; a family
  whose free updates depend on a fixed field overrides ``m_step_fixed``).

A family with a faster E-step than the generic one (the GMM's whitened one) overrides
``chunk_stats`` (and ``prepare``/``finalize``, work done once per E-step before and after the sum).

Examples:
  A mixture of Poissons in 15 lines:

  >>> import dataclasses, jax, jax.numpy as jnp
  >>> from typing import NamedTuple
  >>> from lvmjax import mixture
  >>> class PoissonParams(NamedTuple):
  ...   weights: jax.Array   # (K,)
  ...   rates: jax.Array     # (K, D)
  >>> @dataclasses.dataclass(frozen=True)
  ... class Poisson(mixture.MixtureFamily):
  ...   def log_component(self, params, x):   # log p(x_n | z=k), (n, K)
  ...     return (x @ jnp.log(params.rates).T - jnp.sum(params.rates, axis=1)
  ...             - jnp.sum(jax.scipy.special.gammaln(x + 1), axis=1, keepdims=True))
  ...   def m_step(self, params, stats):        # stats.moments = sum_n s r x_n, (K, D)
  ...     counts = stats.counts + 1e-10
  ...     return PoissonParams(counts / jnp.sum(counts), stats.moments / counts[:, None] + 1e-10)
  >>> x = jnp.concatenate([jax.random.poisson(jax.random.key(0), 2.0, (300, 3)),
  ...                      jax.random.poisson(jax.random.key(1), 20.0, (300, 3))]) * 1.0
  >>> result = mixture.fit(Poisson(), jax.random.key(2), x, 2, init="random_from_data")
  >>> sorted(round(float(r)) for r in result.params.rates[:, 0])
  [2, 20]
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import data
from lvmjax import fixed_point as fp
from lvmjax import sharding
from lvmjax.types import Data, Key, Scalar, Weights

__all__ = [
    "MixtureFamily", "MixtureStats", "MixtureFitResult", "Rows", "INITS", "row_ids",
    "generic_chunk_stats", "run_em", "fit_arrays", "resume_state", "chunk_rows", "sum_stats",
    "zero_stats", "e_step", "em_step", "fit", "responsibility_stats", "initial_responsibilities",
    "streamed_stats", "fit_streaming", "check_mesh", "mean_log_likelihood", "default_chunk_size",
    "param_fields", "keep_fields", "check_fixed", "check_data", "place_rows", "as_rows",
]

#: The initialisations every family gets: uniform random responsibilities, or hard
#: responsibilities at K distinct rows drawn with probability proportional to the sample weight.
INITS = ("random", "random_from_data")

_HIGHEST = jax.lax.Precision.HIGHEST


class MixtureStats(NamedTuple):
  r"""Additive E-step statistics of the generic E-step (sum them over chunks, devices, batches).

  Attributes:
    counts: (K,) :math:`N_k = \sum_n s_n r_{nk}`.
    moments: the family's :math:`T_k = \sum_n s_n r_{nk} T(x_n)`: the pytree of
      ``MixtureFamily.statistic(x)`` with each leaf's row axis replaced by K.
    log_likelihood: scalar :math:`\sum_n s_n \log p(x_n)`.
    total_weight: scalar :math:`\sum_n s_n`.
  """
  counts: jax.Array
  moments: Any
  log_likelihood: jax.Array
  total_weight: jax.Array


class MixtureFitResult(NamedTuple):
  """What :func:`fit` and :func:`fit_streaming` return (the fields of ``gmm.GMMFitResult``).

  Attributes:
    params: the fitted parameters (of the best restart).
    log_likelihood: mean per-point log-likelihood at each iteration, shape (n_iter,): entry i is
      that of the parameters iteration i started from. Under ``jit``/``vmap`` it keeps length
      ``max_iter`` with NaN from ``n_iter`` on.
    n_iter: number of EM iterations run (those of a resumed result included).
    converged: whether the change in mean log-likelihood fell below ``tol``.
    lower_bound: the last entry of ``log_likelihood`` (-inf when no iteration ran).
  """
  params: Any
  log_likelihood: jax.Array
  n_iter: jax.Array
  converged: jax.Array
  lower_bound: jax.Array


class Rows(NamedTuple):
  """The data of a fit as the family's ``initialize`` sees them.

  Attributes:
    x: (n, D) the rows (on a mesh: this device's block, padding included; one device: all rows,
      unpadded), after any ``data_shift``.
    w: (n,) their weights (0 on padding).
    x_chunks: (C, chunk, D) the same rows in chunks, padded with weight-0 rows.
    w_chunks: (C, chunk) their weights.
  """
  x: jax.Array
  w: jax.Array
  x_chunks: jax.Array
  w_chunks: jax.Array


class MixtureFamily:
  r"""A mixture component family: what EM needs to know about it. Subclass it.

  Required (for the generic E-step and the fit):

  * ``log_component(params, x) -> (n, K)``: :math:`\log p(x_n \mid \theta_k)` for x (n, D).
  * ``m_step(params, stats) -> params``: the maximum-likelihood parameters from the summed
    statistics (:class:`MixtureStats` unless ``chunk_stats`` is overridden). ``params`` are the
    parameters the E-step ran with, or None when :func:`fit` initialises from responsibilities.

  Optional (defaults in brackets):

  * ``log_weights(params) -> (K,)``: :math:`\log w_k` [``jnp.log(params.weights)``].
  * ``objective(params, stats) -> scalar``: the value the loop records and tests for
    convergence, from the summed statistics and ``params``, the M-step's output from them
    [:func:`mean_log_likelihood` of the statistics; a variational family records its bound].
  * ``m_step_fixed(params, stats, fixed) -> params``: the M-step with the fields named in
    ``fixed`` held at ``params``' values [``m_step``, then those fields put back: right when no
    free update depends on a fixed field; the GMM overrides it so that its covariances are
    taken about fixed means].
  * ``statistic(x) -> pytree of (n, ...)``: :math:`T(x)` whose responsibility-weighted sums the
    M-step needs [``x``].
  * ``prepare(params)``: work done once per E-step (e.g. Cholesky factors) [``params``].
  * ``chunk_stats(prepared, x, w) -> stats``: the statistics of one chunk of rows, any pytree of
    arrays with ``log_likelihood`` and ``total_weight`` fields that adds leaf by leaf [the
    generic :class:`MixtureStats` from ``log_weights + log_component`` and ``statistic``].
  * ``finalize(prepared, stats) -> stats``: a *linear* map applied to the sum (once per chunk
    scan, so it must commute with adding) [identity].
  * ``initialize(key, rows, num_components, init, shard) -> params``: the
    initialisation named ``init`` [:data:`INITS`, through :func:`responsibility_stats` and
    ``m_step(None, stats)``].
  * ``data_shift(x, w, shard) -> (D,) or None`` and ``shift_params(params, shift)``: fit on
    ``x - shift`` and map the parameters back (the GMM centres its data for float32 accuracy)
    [no shift].
  * ``missing_values``: a class attribute, True when NaN entries of x are missing values the
    family handles itself (the data checks then let NaN through) [False].

  Families are passed to ``jax.jit`` as arguments: make them frozen dataclasses (hashable,
  e.g. ``@dataclasses.dataclass(frozen=True)``) or ``flax.struct.dataclass`` pytrees whose float
  fields (hyperparameters such as a regulariser) are then traced, not compiled in.
  """

  #: True: NaN entries of x are missing values that the family handles (lvmjax.gmm.missing).
  missing_values: bool = False

  # -- required ----------------------------------------------------------------------------

  def log_component(self, params: Any, x: Data) -> jax.Array:
    """(n, K) per-component log-density :math:`\\log p(x_n \\mid \\theta_k)`."""
    raise NotImplementedError(f"{type(self).__name__} must define log_component(params, x).")

  def m_step(self, params: Any, stats: Any) -> Any:
    """New parameters from the summed E-step statistics."""
    raise NotImplementedError(f"{type(self).__name__} must define m_step(params, stats).")

  # -- optional ----------------------------------------------------------------------------

  def log_weights(self, params: Any) -> jax.Array:
    """(K,) log mixing weights."""
    return jnp.log(params.weights)

  def objective(self, params: Any, stats: Any) -> jax.Array:
    """The value recorded per iteration (mean log-likelihood of the E-step's parameters).

    Args:
      params: the M-step's output from ``stats`` (unused by the default).
      stats: the summed E-step statistics.
    """
    del params
    return mean_log_likelihood(stats)

  def m_step_fixed(self, params: Any, stats: Any, fixed: tuple[str, ...]) -> Any:
    """The M-step with the fields named in ``fixed`` kept at their values in ``params``.

    The default is the maximiser of the expected complete-data log-likelihood when no free
    field's update depends on a fixed one (e.g. any subset for a family whose parameters update
    independently); override it otherwise.
    """
    return keep_fields(self.m_step(params, stats), params, fixed)

  def statistic(self, x: Data) -> Any:
    """Per-row statistic T(x) (pytree of (n, ...) arrays); its weighted sums feed the M-step."""
    return x

  def prepare(self, params: Any) -> Any:
    """Work done once per E-step, passed to ``chunk_stats`` and ``finalize``."""
    return params

  def chunk_stats(self, prepared: Any, x: Data, w: Weights) -> Any:
    """Statistics of one chunk of rows (generic: :class:`MixtureStats`)."""
    return generic_chunk_stats(self, prepared, x, w)

  def finalize(self, prepared: Any, stats: Any) -> Any:
    """Linear map applied to summed statistics (identity)."""
    del prepared
    return stats

  def initialize(self, key: Key, rows: Rows, num_components: int, init: str,
                 shard: sharding.Shard | None = None) -> Any:
    """Initial parameters for ``init`` in :data:`INITS`; see :func:`initial_responsibilities`.

    Args:
      key: PRNG key (one restart's).
      rows: the data (:class:`Rows`).
      num_components: K.
      init: the initialisation's name.
      shard: the reduction hook (None on one device).
    """
    resp_fn = initial_responsibilities(key, rows, num_components, init, shard)
    return self.m_step(None, responsibility_stats(self, rows.x_chunks, rows.w_chunks, resp_fn,
                                                  shard))

  def data_shift(self, x: Data, w: Weights, shard: sharding.Shard | None = None) -> Any:
    """A (D,) shift to subtract from the data before fitting, or None."""
    del x, w, shard
    return None

  def shift_params(self, params: Any, shift: jax.Array) -> Any:
    """The parameters of data ``x + shift`` from those of ``x`` (only with ``data_shift``)."""
    del shift
    return params


# --------------------------------------------------------------------------------------------
# The E-step.


def generic_chunk_stats(family: MixtureFamily, params: Any, x: Data, w: Weights) -> MixtureStats:
  r"""The generic E-step on one chunk: responsibilities from ``log_weights + log_component``.

  .. math::

    \log p(x_n, z{=}k) = \log w_k + \log p(x_n \mid \theta_k), \quad
    r_{nk} = \exp(\log p(x_n, z{=}k) - \log p(x_n)), \quad
    T_k = \sum_n s_n r_{nk} T(x_n)

  Rows of weight 0 (padding) contribute exactly 0, even where their log-density is not finite.

  Returns:
    :class:`MixtureStats` of the chunk.
  """
  log_joint = family.log_weights(params)[None, :] + family.log_component(params, x)
  log_px = jax.nn.logsumexp(log_joint, axis=1)
  keep = w > 0
  wr = jnp.where(keep[:, None], w[:, None] * jnp.exp(log_joint - log_px[:, None]), 0)
  moments = jax.tree.map(
      lambda t: jnp.tensordot(wr, t.astype(wr.dtype), axes=(0, 0), precision=_HIGHEST),
      family.statistic(x))
  return MixtureStats(jnp.sum(wr, axis=0), moments,
                      jnp.sum(jnp.where(keep, w * log_px, 0)), jnp.sum(w))


def chunk_rows(x: Data, sample_weight: Weights, chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """Pads the rows to a multiple of ``chunk_size`` (weight 0) and reshapes them into chunks.

  Args:
    x: (N, D) rows.
    sample_weight: (N,) weights.
    chunk_size: rows per chunk.

  Returns:
    ``(x_chunks (C, chunk_size, D), w_chunks (C, chunk_size))``, C = ceil(N / chunk_size).
  """
  n = x.shape[0]
  num_chunks = -(-n // chunk_size)
  pad = num_chunks * chunk_size - n
  if pad:
    x = jnp.pad(x, ((0, pad), (0, 0)))
    sample_weight = jnp.pad(sample_weight, (0, pad))
  return (x.reshape(num_chunks, chunk_size, x.shape[1]),
          sample_weight.reshape(num_chunks, chunk_size))


def zero_stats(family: MixtureFamily, params: Any, x_chunk: jax.Array,
               w_chunk: jax.Array) -> Any:
  """Zeros shaped like ``family.chunk_stats(family.prepare(params), x_chunk, w_chunk)``."""
  shapes = jax.eval_shape(lambda p, x, w: family.chunk_stats(family.prepare(p), x, w),
                          params, x_chunk, w_chunk)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def sum_stats(family: MixtureFamily, params: Any, x_chunks: jax.Array, w_chunks: jax.Array,
              shard: sharding.Shard | None = None) -> Any:
  r"""The E-step over chunks: :math:`\mathrm{finalize}(\mathrm{psum}(\sum_c S_c))`.

  ``family.chunk_stats`` runs on one chunk at a time inside ``lax.scan``, so memory is that of
  one chunk. With ``shard`` (inside ``shard_map``) the chunks are this device's and the sums are
  added over the devices with one ``psum``.

  Args:
    family: the component family.
    params: the E-step's parameters.
    x_chunks: (C, n, D) rows in chunks (:func:`chunk_rows`).
    w_chunks: (C, n) their weights (0 on padding).
    shard: the reduction hook (None on one device; see :mod:`lvmjax.sharding.collectives`).

  Returns:
    The summed statistics (a :class:`MixtureStats` for the generic E-step).
  """
  prepared = family.prepare(params)

  def body(acc, inputs):
    xc, wc = inputs
    return jax.tree.map(jnp.add, acc, family.chunk_stats(prepared, xc, wc)), None

  init = zero_stats(family, params, x_chunks[0], w_chunks[0])
  out, _ = jax.lax.scan(body, init, (x_chunks, w_chunks))
  return family.finalize(prepared, sharding.psum(out, shard))


def mean_log_likelihood(stats: Any) -> jax.Array:
  r"""The weighted mean log-likelihood :math:`\ell / \sum_n s_n` of summed statistics."""
  return stats.log_likelihood / stats.total_weight


def default_chunk_size(num_points: int, num_components: int, num_features: int) -> int:
  """Rows per chunk: about 2**19 floats of (K, D, chunk) intermediates, at least 64 rows.

  At 2**19 floats (2 MB) a chunk's intermediates stay in the L2/L3 caches of a CPU; on a 2-core
  EPYC, 2**19 was 1.3x faster per GMM EM iteration than 2**20 at N=65,536, D=16, K=32.
  """
  rows = (2**19 // max(1, num_components * num_features)) // 8 * 8
  return int(min(num_points, max(64, rows)))


def _chunk_for(family, params, n, d, chunk_size):
  k = jnp.shape(family.log_weights(params))[-1]
  return min(chunk_size or default_chunk_size(n, k, d), n)


def e_step(family: MixtureFamily, params: Any, x: ArrayLike,
           sample_weight: ArrayLike | None = None, *, chunk_size: int | None = None,
           mesh: jax.sharding.Mesh | None = None, axis_name: str | None = None,
           dtype: Any = None) -> Any:
  r"""The E-step's additive statistics of all rows, streamed over chunks (and devices).

  Args:
    family: the component family.
    params: current parameters.
    x: (N, D) data.
    sample_weight: optional (N,) non-negative weights (default all ones).
    chunk_size: rows per chunk (default :func:`default_chunk_size`).
    mesh: a mesh whose ``axis_name`` axis splits the rows of x: each device sums its rows'
      statistics and one ``psum`` adds them (the row count must be a multiple of the axis size).
      A row-sharded ``jax.Array`` is detected without ``mesh``.
    axis_name: the mesh's data axis (default "data", else its first axis).
    dtype: float dtype of the computation (default: that of x, float32 for integer x).

  Returns:
    The summed statistics. Statistics of different row sets taken with the same params add:
    ``jax.tree.map(jnp.add, s1, s2)``.
  """
  placement = sharding.mesh_of(x, mesh, axis_name)
  n, d = np.shape(x)
  if dtype is None:
    dtype = _checks.computed_dtype(jnp.asarray(x).dtype if placement is None else x.dtype)
  if placement is not None:
    mesh, axis_name = placement
    shards = sharding.num_shards(mesh, axis_name)
    if n % shards:
      raise ValueError(f"x has {n} rows, not a multiple of the {shards} devices of mesh axis "
                       f"{axis_name!r}; pad it with weight-0 rows (lvmjax.sharding.shard_rows).")
    x = jnp.asarray(x).astype(dtype) if not isinstance(x, jax.Array) else x.astype(dtype)
    w = jnp.ones((n,), dtype) if sample_weight is None else jnp.asarray(sample_weight, dtype)
    chunk = _chunk_for(family, params, n // shards, d, chunk_size)
    shard = sharding.Shard(axis_name, sharding.layout_for(n, shards, 1))
    spec = P(axis_name)

    def local(params, x, w):
      xs, ws = chunk_rows(x, w, chunk)
      return sum_stats(family, params, xs, ws, shard)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec), out_specs=P(),
                         check_vma=False)(params, x, w)
  x = jnp.asarray(x).astype(dtype)
  w = jnp.ones((n,), dtype) if sample_weight is None else jnp.asarray(sample_weight).astype(dtype)
  xs, ws = chunk_rows(x, w, _chunk_for(family, params, n, d, chunk_size))
  return sum_stats(family, params, xs, ws)


def em_step(family: MixtureFamily, params: Any, x: ArrayLike,
            sample_weight: ArrayLike | None = None, **e_step_options: Any) -> tuple[Any, Scalar]:
  """One EM iteration: ``family.m_step(params, e_step(family, params, x, ...))``.

  Returns:
    ``(new params, weighted mean log-likelihood of the old params on x)``.
  """
  stats = e_step(family, params, x, sample_weight, **e_step_options)
  return family.m_step(params, stats), mean_log_likelihood(stats)


# --------------------------------------------------------------------------------------------
# Initialisation from responsibilities.


def initial_responsibilities(key: Key, rows: Rows, num_components: int, init: str,
                             shard: sharding.Shard | None = None) -> Callable:
  r"""The responsibilities of the initialisations in :data:`INITS`, chunk by chunk.

  * ``"random"``: :math:`r_{nk} = u_{nk} / \sum_j u_{nj}`, :math:`u_{nk} \sim U(0, 1)` drawn with
    ``fold_in(key, c)`` for global chunk c (so the same chunking draws the same numbers on one
    device and on a mesh).
  * ``"random_from_data"``: one-hot at K distinct rows drawn with probability proportional to
    the sample weight.

  Args:
    key: PRNG key.
    rows: the data (:class:`Rows`).
    num_components: K.
    init: "random" or "random_from_data".
    shard: the reduction hook.

  Returns:
    ``resp_fn(c, x_chunk) -> (n, K)`` for local chunk index c.

  Raises:
    ValueError: another ``init``.
  """
  num_chunks, chunk, _ = rows.x_chunks.shape
  dtype = rows.x_chunks.dtype
  first = sharding.device_index(shard) * num_chunks
  if init == "random":
    def resp_fn(c, xc):
      r = jax.random.uniform(jax.random.fold_in(key, c + first), (xc.shape[0], num_components),
                             dtype)
      return r / jnp.sum(r, axis=1, keepdims=True)
    return resp_fn
  if init != "random_from_data":
    raise ValueError(f"Unknown init {init!r} for this family; expected one of "
                     f"{', '.join(map(repr, INITS))} or parameters to start from.")
  w = sharding.gather(rows.w, shard)
  idx = jax.random.choice(key, w.shape[0], (num_components,), replace=False, p=w / jnp.sum(w))
  ids = row_ids(num_chunks, chunk, shard)

  def resp_fn_hard(c, _):
    return (ids[c][:, None] == idx[None, :]).astype(dtype)
  return resp_fn_hard


def row_ids(num_chunks: int, chunk: int, shard: sharding.Shard | None = None) -> jax.Array:
  """(C, chunk) global row id of every chunked row (-1 on a mesh's padding)."""
  if shard is None:
    return jnp.arange(num_chunks * chunk).reshape(num_chunks, chunk)
  ids, _ = sharding.local_rows(shard.axis_name, shard.layout, num_chunks * chunk)
  return ids.reshape(num_chunks, chunk)


def responsibility_stats(family: MixtureFamily, x_chunks: jax.Array, w_chunks: jax.Array,
                         resp_fn: Callable, shard: sharding.Shard | None = None) -> MixtureStats:
  r""":class:`MixtureStats` of given responsibilities: :math:`N_k = \sum s r`,
  :math:`T_k = \sum s r T(x)` (``log_likelihood`` 0), summed over chunks and devices.

  Args:
    family: gives ``statistic``.
    x_chunks, w_chunks: rows and weights in chunks.
    resp_fn: ``resp_fn(c, x_chunk) -> (n, K)`` responsibilities of local chunk c.
    shard: the reduction hook.
  """
  def stats_of(c, xc, wc):
    wr = wc[:, None] * resp_fn(c, xc)
    moments = jax.tree.map(
        lambda t: jnp.tensordot(wr, t.astype(wr.dtype), axes=(0, 0), precision=_HIGHEST),
        family.statistic(xc))
    return MixtureStats(jnp.sum(wr, axis=0), moments, jnp.zeros((), wr.dtype), jnp.sum(wc))

  def body(acc, inputs):
    return jax.tree.map(jnp.add, acc, stats_of(*inputs)), None

  shapes = jax.eval_shape(stats_of, 0, x_chunks[0], w_chunks[0])
  init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  index = jnp.arange(x_chunks.shape[0])
  out, _ = jax.lax.scan(body, init, (index, x_chunks, w_chunks))
  return sharding.psum(out, shard)


# --------------------------------------------------------------------------------------------
# Frozen parameters.


def param_fields(params: Any) -> tuple[str, ...]:
  """The field names of a parameters object (a NamedTuple or a dataclass, flax's included).

  Raises:
    ValueError: params of another kind (``fixed=`` needs named fields).
  """
  if isinstance(params, tuple) and hasattr(params, "_fields"):
    return tuple(params._fields)
  if dataclasses.is_dataclass(params) and not isinstance(params, type):
    return tuple(f.name for f in dataclasses.fields(params))
  raise ValueError(f"fixed= needs parameters with named fields (a NamedTuple or a dataclass), "
                   f"got {type(params).__name__}.")


def keep_fields(params: Any, source: Any, fixed: tuple[str, ...]) -> Any:
  """``params`` with the fields named in ``fixed`` taken from ``source`` (the same object, bit for
  bit; no arithmetic), e.g. the M-step's output with the frozen fields put back.

  Args:
    params: a NamedTuple or dataclass of parameters.
    source: parameters of the same kind holding the values to keep.
    fixed: field names.

  Returns:
    The parameters with those fields replaced (``params`` itself when ``fixed`` is empty).
  """
  if not fixed:
    return params
  values = {name: getattr(source, name) for name in fixed}
  if isinstance(params, tuple) and hasattr(params, "_fields"):
    return params._replace(**values)
  if hasattr(params, "replace"):  # flax.struct.dataclass
    return params.replace(**values)
  return dataclasses.replace(params, **values)


def check_fixed(fixed: Any, params: Any = None) -> tuple[str, ...]:
  """Checks ``fixed=`` at the door: a tuple (or list) of distinct field names, all of them fields
  of ``params`` when given (initial parameters or a result).

  Returns:
    ``fixed`` as a tuple of str.

  Raises:
    ValueError: not a sequence of str, repeated names, or names that are not fields.
  """
  if isinstance(fixed, str):
    fixed = (fixed,)
  if not isinstance(fixed, (tuple, list)) or not all(isinstance(f, str) for f in fixed):
    raise ValueError(f"fixed must be a tuple of parameter field names, e.g. ('weights',), got "
                     f"{fixed!r}.")
  fixed = tuple(fixed)
  if len(set(fixed)) != len(fixed):
    raise ValueError(f"fixed names a field more than once: {fixed!r}.")
  if params is not None and fixed:
    valid = param_fields(params)
    unknown = [f for f in fixed if f not in valid]
    if unknown:
      raise ValueError(f"fixed names {unknown!r}, which are not fields of the parameters; valid "
                       f"names: {', '.join(map(repr, valid))}.")
  return fixed


# --------------------------------------------------------------------------------------------
# The fit.


def _is_dynamic(leaf: Any) -> bool:
  return isinstance(leaf, (jax.Array, np.ndarray, np.floating, float))


def _split(family: MixtureFamily):
  """(traced leaves, static rest) of a family, so that jit traces its float hyperparameters."""
  leaves, treedef = jax.tree.flatten(family)
  dynamic = [leaf if _is_dynamic(leaf) else None for leaf in leaves]
  static = tuple(None if _is_dynamic(leaf) else leaf for leaf in leaves)
  # The class too: the treedefs of a flax dataclass and of its subclass compare equal, so without
  # it jit's cache would run one family's compiled fit for the other's.
  return dynamic, (type(family), treedef, static)


def _join(dynamic, static) -> MixtureFamily:
  _, treedef, rest = static
  return treedef.unflatten([d if s is None else s for d, s in zip(dynamic, rest)])


def run_em(family: MixtureFamily, params_or_state: Any, x_chunks: jax.Array, w_chunks: jax.Array,
           *, tol: Any, max_iter: int, shard: sharding.Shard | None = None,
           fixed: tuple[str, ...] = ()) -> fp.FixedPointState:
  r"""The EM loop on chunked rows: :func:`lvmjax.fixed_point.fixed_point` of one EM step.

  Iteration t computes the statistics of :math:`\theta_t`, records their mean log-likelihood
  :math:`\ell_t` (``family.objective``) and sets :math:`\theta_{t+1} = \mathrm{M}(S(\theta_t))`; it stops when
  :math:`|\ell_t - \ell_{t-1}| < \mathrm{tol}` (scikit-learn's rule) or after ``max_iter``.

  Args:
    family: the component family.
    params_or_state: initial parameters, or a ``FixedPointState`` to continue.
    x_chunks, w_chunks: rows and weights in chunks (this device's with ``shard``).
    tol: convergence threshold on the change of the mean log-likelihood.
    max_iter: the most iterations in all (static).
    shard: the reduction hook (inside ``shard_map``).
    fixed: names of parameter fields to keep at their initial values (static): every M-step is
      ``family.m_step_fixed``, whose output gets those fields of the parameters it started from
      back bit for bit.

  Returns:
    The final ``FixedPointState``; ``iterate`` holds the parameters after the last M-step.
  """
  def step(params):
    stats = sum_stats(family, params, x_chunks, w_chunks, shard)
    if not fixed:
      new = family.m_step(params, stats)
    else:
      new = keep_fields(family.m_step_fixed(params, stats, fixed), params, fixed)
    return new, family.objective(new, stats)

  return fp.fixed_point(step, params_or_state, tol=tol, max_iter=max_iter)


def _fit_body(family_leaves, key, x, w, start, tol, *, family_static, num_components, init,
              n_init, max_iter, chunk_size, fixed=(), shard=None):
  """The whole fit; with ``shard``, the body run on each device inside ``shard_map``, where x
  and w are this device's block of rows. ``start`` is None, initial params (``init="params"``)
  or a FixedPointState (``init="resume"``)."""
  family = _join(family_leaves, family_static)
  if shard is not None:
    _, valid = sharding.local_rows(shard.axis_name, shard.layout, x.shape[0])
    w = jnp.where(valid, w, 0)
  shift = family.data_shift(x, w, shard)
  if shift is not None:
    x = x - shift
  if shard is not None:
    x = jnp.where(valid[:, None], x, 0)
  x_chunks, w_chunks = chunk_rows(x, w, chunk_size)

  def to_frame(params):
    return params if shift is None else family.shift_params(params, -shift)

  def one(k):
    if init == "resume":
      original = start.iterate
      begin = start._replace(iterate=to_frame(original))
    elif init == "params":
      original = start
      begin = to_frame(original)
    else:
      begin = family.initialize(k, Rows(x, w, x_chunks, w_chunks), num_components, init, shard)
      original = begin if shift is None else family.shift_params(begin, shift)
      check_fixed(fixed, begin)
    s = run_em(family, begin, x_chunks, w_chunks, tol=tol, max_iter=max_iter, shard=shard,
               fixed=fixed)
    params = s.iterate if shift is None else family.shift_params(s.iterate, shift)
    # Frozen fields come back as they went in: shifting there and back may round.
    params = keep_fields(params, original, fixed)
    return MixtureFitResult(params, s.history, s.n_iter, s.converged, s.value)

  if n_init == 1:
    return one(key)
  results = jax.vmap(one)(jax.random.split(key, n_init))
  score = jnp.where(jnp.isnan(results.lower_bound), -jnp.inf, results.lower_bound)
  best = jnp.argmax(score)
  return jax.tree.map(lambda a: a[best], results)


_STATIC = ("family_static", "num_components", "init", "n_init", "max_iter", "chunk_size",
           "fixed")
_fit_jit = jax.jit(_fit_body, static_argnames=_STATIC + ("shard",))


@functools.partial(jax.jit, static_argnames=_STATIC + ("mesh", "shard"))
def _fit_sharded_jit(family_leaves, key, x, w, start, tol, *, mesh, shard, **static):
  spec = P(shard.axis_name)
  body = functools.partial(_fit_body, shard=shard, **static)
  return jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), spec, spec, P(), P()),
                       out_specs=P(), check_vma=False)(family_leaves, key, x, w, start, tol)


def resume_state(result: Any, dtype: Any) -> tuple[fp.FixedPointState, int | None]:
  """A fit result (fields params, log_likelihood, n_iter, converged, lower_bound) as the loop
  state to continue, and its concrete ``n_iter`` (None under tracing)."""
  n_prev = None if not _checks.is_concrete(result.n_iter) else int(result.n_iter)
  history = jnp.asarray(result.log_likelihood, dtype)
  if n_prev is not None:
    history = history[:n_prev]
  params = jax.tree.map(lambda a: jnp.asarray(a, dtype), result.params)
  return fp.FixedPointState(params, jnp.asarray(result.lower_bound, dtype), history,
                            jnp.asarray(result.n_iter, jnp.int32),
                            jnp.asarray(result.converged, bool)), n_prev


def fit_arrays(family: MixtureFamily, key: Key, x: Any, w: Any, num_components: int, *,
               init: Any = "random", n_init: int = 1, max_iter: int = 100, tol: Any = 1e-3,
               chunk_size: int, placement: tuple | None = None,
               fixed: tuple[str, ...] = ()) -> MixtureFitResult:
  """:func:`fit` after its checks, on float arrays ``x`` (N, D) and weights ``w`` (N,) (or, with
  ``placement = (mesh, axis_name)``, host or row-sharded arrays and optional weights).

  ``init`` is a name the family's ``initialize`` knows, initial parameters (anything else that
  is not a fit result), or a fit result to continue: with a concrete ``n_iter`` the compiled loop
  runs only the ``max_iter - n_iter`` new iterations (one compilation serves every block of the
  same length) and the histories are joined here. ``fixed``: as :func:`fit` (checked here).
  """
  fixed = check_fixed(fixed, None if isinstance(init, str) else (
      init.params if _is_result(init) else init))
  dtype = x.dtype if placement is None else _checks.computed_dtype(x.dtype)
  tol = jnp.asarray(tol, dtype)
  dynamic, static = _split(family)
  prev_history, n_prev = None, 0
  if isinstance(init, str):
    start, kind = None, init
  elif _is_result(init):
    state, n_concrete = resume_state(init, dtype)
    n_init, kind = 1, "resume"
    if n_concrete is not None:  # run the new iterations only; join the histories on the host
      prev_history, n_prev = state.history, n_concrete
      if bool(state.converged) or n_prev >= max_iter:
        return MixtureFitResult(state.iterate, state.history, state.n_iter, state.converged,
                                state.value)
      state = state._replace(history=state.history[:0], n_iter=jnp.asarray(0, jnp.int32))
    start = state
  else:
    start = jax.tree.map(lambda a: jnp.asarray(a, dtype), init)
    n_init, kind = 1, "params"
  static_args = dict(family_static=static, num_components=num_components, init=kind,
                     n_init=n_init, max_iter=max_iter - n_prev, fixed=fixed)
  if placement is None:
    result = _fit_jit(dynamic, key, x, w, start, tol, chunk_size=min(chunk_size, x.shape[0]),
                      **static_args)
  else:
    mesh, axis_name = placement
    # An automatic mesh keeps the one-device chunks, so that chunk-dependent draws (init="random")
    # and hence the result equal the one-device fit's.
    per_device = (x.shape[0] if isinstance(placement, sharding.AutoMesh)
                  else -(-x.shape[0] // sharding.num_shards(mesh, axis_name)))
    chunk = min(chunk_size, per_device)
    x, w, layout = sharding.place_rows(x, w, dtype, mesh, axis_name, multiple=chunk)
    if start is not None:  # via the host: its leaves may be committed to one device
      start = jax.tree.map(lambda a: np.asarray(jax.device_get(a)), start)
    dynamic = [None if a is None else np.asarray(jax.device_get(a)) for a in dynamic]
    result = _fit_sharded_jit(dynamic, key, x, w, start, tol, chunk_size=int(chunk), mesh=mesh,
                              shard=sharding.Shard(axis_name, layout), **static_args)
    if isinstance(placement, sharding.AutoMesh):
      result = sharding.to_first_device(result)
  if prev_history is not None:
    n_new = int(result.n_iter)
    # Joined and sliced on the host: a device slice would compile a program per n_iter.
    result = result._replace(
        log_likelihood=jax.device_put(np.concatenate([
            np.asarray(jax.device_get(prev_history)),
            np.asarray(jax.device_get(result.log_likelihood))[:n_new]])),
        n_iter=jnp.asarray(n_prev + n_new, jnp.int32))
  elif _checks.is_concrete(result.n_iter):
    result = result._replace(log_likelihood=jax.device_put(
        np.asarray(jax.device_get(result.log_likelihood))[:int(result.n_iter)]))
  return result


def _is_result(init: Any) -> bool:
  return all(hasattr(init, f) for f in MixtureFitResult._fields) and isinstance(init, tuple)


def _without_missing(family: MixtureFamily, x: Any) -> Any:
  """x for the data checks: with a family of ``missing_values``, its NaN entries as 0."""
  if (not family.missing_values or not _checks.is_concrete(x) or sharding.is_global(x)
      or not np.issubdtype(np.asarray(x).dtype, np.floating)):
    return x
  x = np.asarray(x)
  return np.where(np.isnan(x), 0, x)


def check_data(family: MixtureFamily, x: Any) -> None:
  """``lvmjax.sharding.check_data`` of a fit's rows, NaN allowed for a family of
  ``missing_values``.

  Raises:
    ValueError: not 2-D, no rows, or non-finite values (NaN only without ``missing_values``).
  """
  sharding.check_data(_without_missing(family, x))


def place_rows(x: Any, sample_weight: Any, num_components: int, placement: Any = None):
  """Where a fit's rows go, and the dtype it computes in (the step every fit takes after its
  checks).

  ``placement`` is a mesh given or found on x (:func:`lvmjax.sharding.mesh_of`); without one,
  large data on a multi-core CPU take every core (:func:`lvmjax.sharding.auto_placement`).

  Returns:
    ``(x, w, placement, dtype)``: on one device (``placement`` None), x as a float ``jax.Array``
    and its weights (ones when ``sample_weight`` is None); on a mesh, ``x`` and
    ``sample_weight`` as given, for the fit to split. ``dtype`` is
    :func:`lvmjax._checks.computed_dtype` of the data.
  """
  if placement is None:  # no mesh given or found on x; large data on a multi-core CPU: every core
    placement = sharding.auto_placement(x, num_components)
  if placement is not None:
    return x, sample_weight, placement, _checks.computed_dtype(x.dtype)
  x, w = as_rows(x, sample_weight)
  return x, w, None, x.dtype


def as_rows(x: Any, sample_weight: Any = None) -> tuple[jax.Array, jax.Array]:
  """``x`` as a float ``jax.Array`` in the dtype it is computed in
  (:func:`lvmjax._checks.computed_dtype`), and its weights in that dtype (ones when
  ``sample_weight`` is None)."""
  x = jnp.asarray(x)
  x = x.astype(_checks.computed_dtype(x.dtype))
  w = (jnp.ones((x.shape[0],), x.dtype) if sample_weight is None
       else jnp.asarray(sample_weight).astype(x.dtype))
  return x, w


def fit(family: MixtureFamily, key: Key, x: ArrayLike, num_components: int, *,
        init: Any = "random", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
        sample_weight: ArrayLike | None = None, chunk_size: int | None = None,
        mesh: jax.sharding.Mesh | None = None, axis_name: str | None = None,
        fixed: tuple[str, ...] = ()) -> MixtureFitResult:
  r"""Fits a mixture of ``family`` components by EM, in one compiled call.

  Each iteration runs the E-step over chunks of rows (:func:`sum_stats`) and the family's
  M-step; the loop is :func:`run_em` (a ``lax.while_loop``): iteration i records the mean
  log-likelihood of the parameters it starts from and the fit stops when it changes by less than
  ``tol`` (absolute), as scikit-learn's ``GaussianMixture``. ``n_init`` restarts run as one
  ``vmap`` over keys; the largest final mean log-likelihood wins.

  Args:
    family: a :class:`MixtureFamily`.
    key: PRNG key for the initialisation.
    x: (N, D) data; float32 unless it is float64 with x64 enabled (integer data become float).
    num_components: K.
    init: a name in :data:`INITS` (or one the family's ``initialize`` knows), the parameters to
      start from, or a result of this function to continue (its ``n_iter``, history and
      convergence test carry on; ``max_iter`` counts all iterations, so a fit split into blocks
      equals the uninterrupted one: exactly for a family without ``data_shift``, up to the
      rounding of shifting the parameters back and forth for one with it).
    n_init: restarts (one when ``init`` is parameters or a result).
    max_iter: the most EM iterations (0 returns the initial parameters).
    tol: convergence threshold on the change of the mean log-likelihood.
    sample_weight: optional (N,) non-negative weights; integer weights equal repeating rows.
    chunk_size: rows per E-step chunk (memory O(chunk_size · K · D)).
    mesh: a ``jax.sharding.Mesh`` to split the rows over along ``axis_name`` (the whole fit is
      one ``shard_map`` with one ``psum`` of the statistics per iteration). A row-sharded
      ``jax.Array`` x is fitted this way without ``mesh``, and large data on a multi-core CPU
      are split by themselves (:func:`lvmjax.sharding.auto_placement`).
    axis_name: the mesh axis of the rows (default "data", else the mesh's first axis).
    fixed: names of parameter fields (of the family's NamedTuple or dataclass, e.g.
      ``("weights",)``) to keep at their initial values: after every M-step
      (``family.m_step_fixed``) they are put back, and the result holds them bit for bit as they
      came in (``init`` parameters or a result; with a named ``init``, the initialisation's
      values, after any ``data_shift`` is undone).

  Returns:
    :class:`MixtureFitResult` ``(params, log_likelihood, n_iter, converged, lower_bound)``.

  Raises:
    ValueError: bad x, weights or options (``fixed`` naming fields the parameters lack).
  """
  placement = sharding.mesh_of(x, mesh, axis_name)
  check_data(family, x)
  n, d = np.shape(x)
  num_components = _checks.check_positive_int(num_components, "num_components")
  n_init = _checks.check_positive_int(n_init, "n_init")
  max_iter = _checks.check_positive_int(max_iter, "max_iter", minimum=0)
  tol = _checks.check_nonnegative(tol, "tol")
  if n < num_components:
    raise ValueError(f"x has {n} points but num_components={num_components}: a mixture needs at "
                     "least as many points as components.")
  sharding.check_sample_weight(sample_weight, n)
  chunk = _checks.check_positive_int(chunk_size, "chunk_size") if chunk_size else (
      default_chunk_size(n, num_components, d))
  x, w, placement, _ = place_rows(x, sample_weight, num_components, placement)
  return fit_arrays(family, key, x, w, num_components, init=init, n_init=n_init,
                    max_iter=max_iter, tol=tol, chunk_size=chunk, placement=placement,
                    fixed=fixed)


# --------------------------------------------------------------------------------------------
# Streaming: each iteration is one pass over batches.


Batches = Callable[[], Iterable[tuple[Any, Any]]]


@functools.partial(jax.jit, static_argnames=("family_static", "chunk_size"), donate_argnums=(0,))
def _accumulate(acc, family_leaves, params, x, w, *, family_static, chunk_size):
  family = _join(family_leaves, family_static)
  xs, ws = chunk_rows(x, w, chunk_size)
  return jax.tree.map(jnp.add, acc, sum_stats(family, params, xs, ws))


@functools.partial(jax.jit, static_argnames=("family_static", "chunk_size", "mesh", "axis_name"),
                   donate_argnums=(0,))
def _accumulate_sharded(acc, family_leaves, params, x, w, *, family_static, chunk_size, mesh,
                        axis_name):
  family = _join(family_leaves, family_static)
  spec = P(axis_name)
  shard = sharding.Shard(axis_name, sharding.layout_for(x.shape[0], sharding.num_shards(
      mesh, axis_name)))

  def local(leaves, params, x, w):
    del leaves
    xs, ws = chunk_rows(x, w, chunk_size)
    return sum_stats(family, params, xs, ws, shard)

  stats = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), spec, spec), out_specs=P(),
                        check_vma=False)(family_leaves, params, x, w)
  return jax.tree.map(jnp.add, acc, stats)


def check_mesh(mesh: jax.sharding.Mesh | None) -> None:
  """With several processes, a streaming mesh must hold only this process's devices.

  Raises:
    ValueError: the mesh holds another process's devices.
  """
  if mesh is None or jax.process_count() == 1:
    return
  me = jax.process_index()
  if any(dev.process_index != me for dev in mesh.devices.flat):
    raise ValueError("With several processes each one streams its own batches on its own "
                     "devices, so the mesh must hold only this process's devices, e.g. "
                     "mesh=lvmjax.sharding.data_mesh(jax.local_devices()) (or mesh=None).")


def _local_pass(family, params, batches, num_features, batch_size, chunk_size, mesh, axis_name,
                check, dtype):
  """(statistics of this process's batches, number of rows read)."""
  dynamic, static = _split(family)
  placement = None if mesh is None else sharding.mesh_of(None, mesh, axis_name)
  k = int(np.shape(family.log_weights(params))[-1])
  d = num_features
  if placement is None:
    chunk = min(chunk_size or default_chunk_size(batch_size, k, d), batch_size)
    rows = -(-batch_size // chunk) * chunk
  else:
    shards = sharding.num_shards(*placement)
    chunk = min(chunk_size or default_chunk_size(batch_size, k, d), -(-batch_size // shards))
    rows = sharding.layout_for(batch_size, shards, chunk).padded_rows
    spec = sharding.row_sharding(*placement)
  acc = None
  seen = 0
  for xb, wb in batches():
    if check:
      data.check_batch(_without_missing(family, np.asarray(xb)), wb, d)
    if np.shape(xb)[0] == 0:
      continue
    seen += np.shape(xb)[0]
    xp, wp = data.pad_batch(xb, wb, rows, dtype)
    if acc is None:
      acc = zero_stats(family, params, jnp.asarray(xp[:chunk]), jnp.asarray(wp[:chunk]))
    if placement is None:
      acc = _accumulate(acc, dynamic, params, jnp.asarray(xp), jnp.asarray(wp),
                        family_static=static, chunk_size=chunk)
    else:
      acc = _accumulate_sharded(acc, dynamic, params, jax.device_put(xp, spec),
                                jax.device_put(wp, spec), family_static=static, chunk_size=chunk,
                                mesh=placement[0], axis_name=placement[1])
  if acc is None:
    acc = zero_stats(family, params, jnp.zeros((1, d), dtype), jnp.zeros((1,), dtype))
  return acc, seen


def streamed_stats(family: MixtureFamily, params: Any, batches: Batches, num_features: int, *,
                   batch_size: int, chunk_size: int | None = None,
                   mesh: jax.sharding.Mesh | None = None, axis_name: str | None = None,
                   check: bool = True, dtype: Any = None) -> Any:
  r"""E-step statistics of all batches, :math:`\sum_b S_b(\theta)`, all with the same params.

  With several processes (``jax.process_count() > 1``) every process passes its own batches and
  the result is summed over the processes (one small all-gather of the statistics); a bad batch
  on any process raises on all of them.

  Args:
    family: the component family.
    params: the E-step's parameters.
    batches: a callable returning a fresh iterable of ``(x (n, D), weights (n,) or None)`` with
      ``n <= batch_size`` (e.g. from :mod:`lvmjax.data`'s stream sources).
    num_features: D.
    batch_size: the largest batch; each is padded to it (weight 0) so one compiled function
      serves all.
    chunk_size: rows per E-step chunk on the device.
    mesh: optional mesh of this process's devices; each batch is split over its data axis.
    axis_name: the mesh's data axis.
    check: check every batch for shape, NaN and weights.
    dtype: float dtype of the computation (default that of the parameters' leaves).

  Returns:
    The summed statistics.

  Raises:
    ValueError: a bad batch, or no rows at all.
  """
  check_mesh(mesh)
  if dtype is None:
    dtype = jnp.result_type(*[a.dtype for a in jax.tree.leaves(params)], float)
  if jax.process_count() == 1:
    acc, seen = _local_pass(family, params, batches, num_features, batch_size, chunk_size, mesh,
                            axis_name, check, dtype)
    if seen == 0:
      raise ValueError("The data source yielded no rows.")
    return acc
  # Several processes: a bad batch on one process must stop all of them (not leave the others
  # waiting in the all-gather), so the error travels as a flag with the statistics.
  error = None
  try:
    acc, seen = _local_pass(family, params, batches, num_features, batch_size, chunk_size, mesh,
                            axis_name, check, dtype)
  except Exception as e:  # pylint: disable=broad-except
    error, seen = e, 0
    acc = zero_stats(family, params, jnp.zeros((1, num_features), dtype),
                     jnp.zeros((1,), dtype))
  leaves, treedef = jax.tree.flatten(acc)
  summed, seen, failed = sharding.process_sum(
      (tuple(np.asarray(v) for v in jax.device_get(leaves)), seen, int(error is not None)))
  if error is not None:
    raise error
  if failed:
    raise ValueError(f"{failed} other process(es) found bad data in their batches (see their "
                     "errors); this process's batches were fine.")
  if seen == 0:
    raise ValueError("The data sources of all processes yielded no rows.")
  return treedef.unflatten([jnp.asarray(v, a.dtype) for v, a in zip(summed, leaves)])


def fit_streaming(family: MixtureFamily, init: Any, batches: Batches, num_features: int, *,
                  max_iter: int = 100, tol: float = 1e-3, batch_size: int = 65536,
                  chunk_size: int | None = None, mesh: jax.sharding.Mesh | None = None,
                  axis_name: str | None = None, dtype: Any = None,
                  callback: Callable[[int, float], None] | None = None,
                  fixed: tuple[str, ...] = ()) -> MixtureFitResult:
  r"""EM over data streamed in batches: every iteration is one pass, :math:`\theta' =
  \mathrm{M}(\sum_b S_b(\theta))`, so the fit equals the in-memory one from the same start (up to
  the order of float additions) with memory independent of N.

  The loop is :func:`lvmjax.fixed_point.fixed_point` with the host driver (each step reads the
  data); its stopping rule is :func:`fit`'s. It also stops after a non-finite log-likelihood.

  Args:
    family: the component family.
    init: initial parameters, or a result of this function or :func:`fit` to continue.
    batches: a callable returning a fresh iterable of ``(x, weights or None)`` batches per pass.
    num_features: D.
    max_iter, tol: as :func:`fit`.
    batch_size, chunk_size, mesh, axis_name: as :func:`streamed_stats`.
    dtype: float dtype (default that of the initial parameters).
    callback: optional ``callback(iteration, mean_log_likelihood)`` after each pass.
    fixed: parameter fields kept at their values in ``init``, bit for bit (as :func:`fit`).

  Returns:
    :class:`MixtureFitResult`; ``log_likelihood`` has one entry per pass.
  """
  fixed = check_fixed(fixed, init.params if _is_result(init) else init)
  if _is_result(init):
    dtype = dtype or jnp.result_type(*[jnp.asarray(a).dtype
                                       for a in jax.tree.leaves(init.params)], float)
    start, _ = resume_state(init, dtype)
  else:
    dtype = dtype or jnp.result_type(*[jnp.asarray(a).dtype for a in jax.tree.leaves(init)],
                                     float)
    start = fp.start(jax.tree.map(lambda a: jnp.asarray(a, dtype), init), max_iter, dtype)
  dtype = jnp.dtype(dtype)
  def m_step_of(leaves, params, stats, static):
    family = _join(leaves, static)
    if not fixed:
      new = family.m_step(params, stats)
    else:
      new = keep_fields(family.m_step_fixed(params, stats, fixed), params, fixed)
    return new, family.objective(new, stats)
  m_step = jax.jit(m_step_of, static_argnums=3)
  dynamic, static = _split(family)

  def step(params):
    first = int(done[0]) == 0
    stats = streamed_stats(family, params, batches, num_features, batch_size=batch_size,
                           chunk_size=chunk_size, mesh=mesh, axis_name=axis_name, check=first,
                           dtype=dtype)
    done[0] += 1
    new, value = m_step(dynamic, params, stats, static)
    return new, jnp.asarray(float(value), dtype)

  def after(state):
    value = float(state.value)
    if callback is not None:
      callback(int(state.n_iter) - 1, value)
    return not np.isfinite(value)

  done = [0]
  state = fp.fixed_point(step, start, tol=tol, max_iter=max_iter, while_loop=fp.host_while_loop,
                         callback=after, dtype=dtype)
  n = int(state.n_iter)
  return MixtureFitResult(state.iterate, state.history[:n], state.n_iter, state.converged,
                          state.value)
