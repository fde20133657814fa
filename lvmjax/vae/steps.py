"""The VAE's steps: train state, the pure training step, S steps per call, the data-parallel
step, and the one evaluation of a trained model.

``lvmjax.vae.train.train_and_evaluate`` (data, checkpoints, logging) is built on these; user code
can build its own loop the same way::

  state = create_train_state(key, model, x[:100], optax.adam(1e-3))
  step = jit_train_step(model, optax.adam(1e-3), objective="iwae", num_samples=5)
  for i, batch in enumerate(batches):
    state, metrics = step(state, batch, key)     # randomness: fold_in(key, state.step)
  results = evaluate(model, state.params, key, x_test, batch_size=100)

The objective is a name from :data:`OBJECTIVES` (a registry: name -> function) or any callable
``objective(model, params, key, x) -> (N,)`` per-point values to maximise::

  def beta_annealed(model, params, key, x):      # e.g. a bound of your own
    return vae.elbo(model, params, key, x, beta=0.5)
  step = jit_train_step(model, optimizer, objective=beta_annealed)

Small models on CPU can run several steps per jitted call (one dispatch from Python for S
steps; the same numbers as S calls of the one-step function)::

  steps = jit_multi_train_step(model, optax.adam(1e-3))
  state, metrics = steps(state, batches, key)    # batches (S, B, ...); metrics[name] is (S,)

Data-parallel over a device mesh (batch split over devices, params replicated; XLA averages the
gradients, and JAX's partitionable threefry draws the one-device step's numbers, so the loss
trajectory equals the single-device one up to the order of float additions)::

  mesh = sharding.data_mesh()
  step = make_parallel_train_step(model, optimizer, mesh)
  state = replicate(state, mesh)
  for batch in batches:
    state, metrics = step(state, shard_batch(batch, mesh), key)

Several processes (after ``jax.distributed.initialize``): every process runs the same loop;
``shard_batch`` then takes this process's rows of the global batch (``local=True`` if each
process already holds only its own rows).

The modules ``lvmjax.vae.training`` and ``lvmjax.vae.parallel`` re-export these names.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Union

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.typing import ArrayLike

from lvmjax import _checks
from lvmjax import sharding
from lvmjax.types import DataBatchLike, Key, LogDensity
from lvmjax.vae import model as vae_model
from lvmjax.vae import vade

# XLA:CPU's copy insertion, by default, copies every donated parameter that the backward pass
# reads before the in-place optimizer update overwrites it (~1 MB per step for the Burda et al.
# MLP); its region analysis proves the copies unnecessary. Passed to jit only on CPU, and only if
# this jaxlib knows the option (see _cpu_compiler_options).
_CPU_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


@flax.struct.dataclass
class TrainState:
  """Everything a training run carries from step to step; a pytree (checkpoint it whole).

  Attributes:
    step: int32 scalar, the number of steps taken.
    params: the model's params pytree (float32).
    opt_state: the optax state.
  """
  step: jax.Array
  params: Any
  opt_state: Any


def create_train_state(key: Key, model: vae_model.VAE, example_x: DataBatchLike,
                       optimizer: optax.GradientTransformation) -> TrainState:
  """Initialises params from ``example_x`` ``(N, *data_shape)`` and the optimizer state; step 0.

  The key comes first, as in :func:`lvmjax.vae.init` and the fits: there are no params yet.
  """
  params = vae_model.init(key, model, example_x)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


# ----------------------------------------------------------------------------------------------
# objectives: a registry name -> function


def _elbo_objective(model, params, key, x, *, num_samples, beta, analytic_kl, compute_dtype):
  terms = vae_model.elbo_terms(model, params, key, x, num_samples, beta, analytic_kl,
                               compute_dtype=compute_dtype)
  return terms.elbo, {"reconstruction": terms.reconstruction, "kl": terms.kl}


def _iwae_objective(model, params, key, x, *, num_samples, beta, analytic_kl, compute_dtype):
  del beta, analytic_kl
  return vae_model.iwae_bound(model, params, key, x, num_samples,
                              compute_dtype=compute_dtype), {}


def _autoencoder_objective(model, params, key, x, *, num_samples, beta, analytic_kl,
                           compute_dtype):
  del key, num_samples, beta, analytic_kl
  return vae_model.autoencoder_log_likelihood(model, params, x, compute_dtype=compute_dtype), {}


def _vade_objective(model, params, key, x, *, num_samples, beta, analytic_kl, compute_dtype):
  del analytic_kl
  terms = vade.elbo_terms(model, params, key, x, num_samples, beta, compute_dtype=compute_dtype)
  return terms.elbo, {"reconstruction": terms.reconstruction, "kl": terms.kl}


#: The named objectives of :func:`make_train_step`: name -> function
#: ``f(model, params, key, x, *, num_samples, beta, analytic_kl, compute_dtype) ->
#: (values (N,), extras)``, per-point values to maximise and a dict of per-point values whose
#: batch means are reported as metrics. ``"elbo"``: :func:`lvmjax.vae.elbo` (extras
#: ``reconstruction``, ``kl``); ``"iwae"``: :func:`lvmjax.vae.iwae_bound` with k =
#: ``num_samples``; ``"autoencoder"``: :func:`lvmjax.vae.autoencoder_log_likelihood`;
#: ``"vade"``: VaDE's ELBO :func:`lvmjax.vae.vade.elbo` (a Gaussian-mixture prior; extras
#: ``reconstruction``, ``kl``).
#: Add an entry to name an objective of your own (or pass a callable to ``make_train_step``).
OBJECTIVES: dict[str, Callable[..., tuple[jax.Array, dict]]] = {
    "elbo": _elbo_objective,
    "iwae": _iwae_objective,
    "autoencoder": _autoencoder_objective,
    "vade": _vade_objective,
}

#: A user objective: ``objective(model, params, key, x) -> (N,)`` per-point values to maximise.
Objective = Callable[[vae_model.VAE, Any, Key, jax.Array], LogDensity]


def _objective_function(objective: Union[str, Objective], num_samples: int, beta: float,
                        analytic_kl: bool, compute_dtype: Any):
  """``f(model, params, key, x) -> (values, extras)`` for a registry name or a callable."""
  if callable(objective):
    def custom(model, params, key, x):
      return objective(model, params, key, vae_model._as_float(x)), {}  # pylint: disable=protected-access
    return custom
  return functools.partial(OBJECTIVES[objective], num_samples=num_samples, beta=beta,
                           analytic_kl=analytic_kl, compute_dtype=compute_dtype)


def make_train_step(model: vae_model.VAE, optimizer: optax.GradientTransformation,
                    objective: Union[str, Objective] = "elbo", num_samples: int = 1,
                    beta: Union[float, Callable[[jax.Array], Any]] = 1.0,
                    compute_dtype: Any = jnp.float32, analytic_kl: bool = True
                    ) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]]:
  r"""Returns a pure ``train_step(state, x, key) -> (state, metrics)``.

  The loss is the negative batch mean of the objective:

  * ``"elbo"``: :func:`lvmjax.vae.elbo` with ``num_samples``, ``beta``, ``analytic_kl``;
  * ``"iwae"``: :func:`lvmjax.vae.iwae_bound` with k = ``num_samples``;
  * ``"autoencoder"``: :func:`lvmjax.vae.autoencoder_log_likelihood` (deterministic);
  * another name added to :data:`OBJECTIVES`;
  * a callable ``objective(model, params, key, x) -> (N,)`` per-point values to maximise (``x``
    cast to float; params as trained, float32). ``num_samples``, ``beta``, ``analytic_kl`` and
    ``compute_dtype`` are the named objectives' options; a callable carries its own (e.g. with
    ``functools.partial``).

  The step's randomness is ``jax.random.fold_in(key, state.step)``, so a run resumed from a
  checkpoint draws the same numbers as an uninterrupted one. ``x`` may be any numeric dtype
  (e.g. uint8 bits); it is cast inside the step. Wrap the step in
  ``jax.jit(step, donate_argnums=0)`` (or use :func:`jit_train_step`).

  Args:
    model: the :class:`~lvmjax.vae.VAE`.
    optimizer: an optax gradient transformation.
    objective: a name of :data:`OBJECTIVES` or a callable (see above).
    num_samples: latent samples per point (k for IWAE), >= 1.
    beta: KL weight for ``"elbo"`` and ``"vade"``: a number, or a schedule ``beta(step)`` of the
      step count (e.g. ``optax.linear_schedule(0.0, 1.0, warmup_steps)``: the KL warm-up of
      Bowman et al. 2016 and Sønderby et al. 2016, which flexible priors such as the VampPrior
      need against posterior collapse); the metrics then include ``beta``.
    compute_dtype: dtype of activations (``jnp.bfloat16`` on GPU/TPU); params stay float32 and
      log-probabilities are computed in float32.
    analytic_kl: the prior's closed-form KL (where it has one) for ``"elbo"``.

  Returns:
    ``train_step``; its metrics are scalars: ``loss``, ``objective`` (batch mean of the bound),
    ``grad_norm`` and the batch means of the objective's extras (``reconstruction`` and ``kl``
    for ``"elbo"``).

  Raises:
    ValueError: unknown objective, num_samples < 1, negative beta.
  """
  if not callable(objective):
    _checks.check_choice(objective, "objective", tuple(OBJECTIVES))
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  schedule = beta if callable(beta) else None
  if schedule is None:
    _checks.check_nonnegative(beta, "beta")
  if compute_dtype is not None and jnp.dtype(compute_dtype) == jnp.float32:
    compute_dtype = None  # params are float32 already; no casts.

  def loss_fn(params, x, key, beta_now):
    objective_fn = _objective_function(objective, num_samples, beta_now, analytic_kl,
                                       compute_dtype)  # at trace time: beta_now may be traced
    values, extras = objective_fn(model, params, key, x)
    value = jnp.mean(values)
    aux = {"objective": value, **{name: jnp.mean(v) for name, v in extras.items()}}
    return -value, aux

  def train_step(state: TrainState, x: jax.Array, key: jax.Array):
    step_key = jax.random.fold_in(key, state.step)
    beta_now = beta if schedule is None else jnp.asarray(schedule(state.step), jnp.float32)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, step_key,
                                                                   beta_now)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": _global_norm(grads), **aux}
    if schedule is not None:
      metrics["beta"] = beta_now
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def _global_norm(tree: Any) -> jax.Array:
  """``optax.tree.norm(tree)`` as one concatenation and one dot product.

  The same value up to float rounding; on CPU one pass over a concatenated vector is cheaper than
  a square and a reduction per leaf (two small kernels each, 28 for the Burda et al. MLP).
  """
  leaves = [jnp.ravel(a) for a in jax.tree_util.tree_leaves(tree)]
  if not leaves:
    return jnp.zeros((), jnp.float32)
  v = jnp.concatenate(leaves) if len(leaves) > 1 else leaves[0]
  return jnp.sqrt(jnp.vdot(v, v).real)


@functools.lru_cache(maxsize=None)
def _cpu_compiler_options_for(backend: str) -> Optional[tuple]:
  if backend != "cpu":
    return None
  try:  # an XLA option this jaxlib may not know: compile a trivial function with it once
    jax.jit(lambda a: a + 1, compiler_options=_CPU_COMPILER_OPTIONS).lower(
        jnp.zeros((), jnp.float32)).compile()
  except Exception:  # pylint: disable=broad-except
    return None
  return tuple(_CPU_COMPILER_OPTIONS.items())


def _cpu_compiler_options() -> Optional[dict]:
  """``_CPU_COMPILER_OPTIONS`` when the default backend is CPU and XLA accepts them, else None."""
  options = _cpu_compiler_options_for(jax.default_backend())
  return None if options is None else dict(options)


def jit_train_step(model: vae_model.VAE, optimizer: optax.GradientTransformation, **kwargs):
  """``jax.jit(make_train_step(model, optimizer, **kwargs), donate_argnums=0)``.

  On CPU the jit also sets an XLA option (copy insertion by region analysis) that removes the
  copies of donated parameters; it changes no value.
  """
  return jax.jit(make_train_step(model, optimizer, **kwargs), donate_argnums=0,
                 compiler_options=_cpu_compiler_options())


def make_multi_train_step(model: vae_model.VAE, optimizer: optax.GradientTransformation,
                          unroll: int | bool = 1, **kwargs
                          ) -> Callable[..., tuple[TrainState, dict]]:
  """Returns a pure ``multi_train_step(state, xs, key, indices=None) -> (state, metrics)``.

  It runs ``S`` steps of :func:`make_train_step` (same keyword arguments) in one
  ``jax.lax.scan``: step ``s`` trains on batch ``xs[s]``, or, with ``indices`` of shape
  ``(S, B)``, on ``xs[indices[s]]`` (``xs`` then being a whole data set, e.g. kept on the
  device, so that only the indices travel; indices out of range are clipped). Every step draws
  its randomness from ``fold_in(key, state.step)`` as the one-step function does, so the result
  is that of ``S`` calls of ``train_step`` (bit for bit, in tests), and a run may mix the two
  (e.g. a last, shorter call). Jitted (:func:`jit_multi_train_step`), the ``S`` steps cost one
  dispatch from Python instead of ``S``, which matters for small models on CPU, where a step
  takes a few milliseconds (the Burda et al. MLP at batch 100 on 2 cores: ~10% more examples
  per second with 20 steps per call).

  Args:
    model: the :class:`~lvmjax.vae.VAE`.
    optimizer: an optax gradient transformation.
    unroll: ``jax.lax.scan``'s ``unroll`` (steps per loop iteration; ``True``: no loop).
    **kwargs: ``objective``, ``num_samples``, ``beta``, ``compute_dtype``, ``analytic_kl`` of
      :func:`make_train_step`.

  Returns:
    ``multi_train_step``; its metrics are those of ``train_step`` stacked: each ``(S,)``.
  """
  step = make_train_step(model, optimizer, **kwargs)

  def multi_train_step(state: TrainState, xs: jax.Array, key: jax.Array,
                       indices: Optional[jax.Array] = None):
    if indices is None:
      return jax.lax.scan(lambda s, x: step(s, x, key), state, xs, unroll=unroll)
    return jax.lax.scan(lambda s, i: step(s, jnp.take(xs, i, axis=0, mode="clip"), key), state,
                        jnp.asarray(indices), unroll=unroll)

  return multi_train_step


def jit_multi_train_step(model: vae_model.VAE, optimizer: optax.GradientTransformation,
                         unroll: int | bool = 1, **kwargs):
  """``jax.jit(make_multi_train_step(model, optimizer, unroll, **kwargs), donate_argnums=0)``.

  With the CPU option of :func:`jit_train_step`. ``S`` (the length of ``xs``, or of
  ``indices``) is part of the compiled shape: a different ``S`` compiles again.
  """
  return jax.jit(make_multi_train_step(model, optimizer, unroll, **kwargs), donate_argnums=0,
                 compiler_options=_cpu_compiler_options())


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7))
def _eval_batch(model, params, key, x, num_samples_ll, iwae_k, chunk_size, autoencoder):
  """Per-point figures of one evaluation batch (each ``(B,)``)."""
  if autoencoder:
    return {"reconstruction_log_likelihood": vae_model.autoencoder_log_likelihood(model, params, x)}
  k_elbo, k_iwae, k_ll = jax.random.split(key, 3)
  terms = vae_model.elbo_terms(model, params, k_elbo, x, 1)
  out = {"elbo": terms.elbo, "reconstruction": terms.reconstruction, "kl": terms.kl}
  for k in iwae_k:
    out[f"iwae_{k}"] = vae_model.iwae_bound(model, params, jax.random.fold_in(k_iwae, k), x, k)
  if num_samples_ll:
    out["log_likelihood"] = vae_model.log_likelihood(model, params, k_ll, x, num_samples_ll,
                                                     chunk_size)
  return out


def map_over_batches(batch_fn: Callable[[Key, jax.Array], dict], key: Key, x: np.ndarray,
                     batch_size: int, *, first_batch: int = 0,
                     progress: Optional[Callable[[int, int], None]] = None) -> dict:
  """Per-point outputs of ``batch_fn`` over the rows of x, one jitted batch at a time.

  The batched evaluation loop of the VAE families (:func:`evaluate`, ``hierarchical.evaluate``,
  ``ais.evaluate_ais``, VaDE's clustering): batch ``i`` is
  ``batch_fn(fold_in(key, first_batch + i), xb)`` -> dict of ``(batch_size, ...)`` arrays; the
  last batch is padded with copies of its last row (one compiled shape) and the padding dropped.

  Args:
    batch_fn: ``(key, xb) -> {name: (batch_size, ...) array}``, usually jitted.
    key: PRNG key.
    x: ``(N, ...)`` host array (or array-like).
    batch_size: rows per batch; more than N means one batch of N.
    first_batch: global index of the first batch (several processes share one evaluation).
    progress: optional callback ``progress(points_done, num_points)``.

  Returns:
    ``{name: (N, ...) host array}``, the rows in the order of x.
  """
  x = np.asarray(x)
  n = x.shape[0]
  batch_size = min(batch_size, n)
  parts = {}
  for i, start in enumerate(range(0, n, batch_size)):
    xb = x[start:start + batch_size]
    m = xb.shape[0]
    if m < batch_size:
      xb = np.concatenate([xb, np.repeat(xb[-1:], batch_size - m, axis=0)])
    out = batch_fn(jax.random.fold_in(key, first_batch + i), jnp.asarray(xb))
    for name, v in jax.device_get(out).items():
      parts.setdefault(name, []).append(np.asarray(v)[:m])
    if progress is not None:
      progress(start + m, n)
  return {name: np.concatenate(v) for name, v in parts.items()}


def sum_over_batches(batch_fn: Callable[[Key, jax.Array], dict], key: Key, x: np.ndarray,
                     batch_size: int, *, first_batch: int = 0,
                     progress: Optional[Callable[[int, int], None]] = None) -> tuple[dict, int]:
  """Sums over the rows of x of :func:`map_over_batches`' per-point figures (same arguments).

  Returns:
    ``(sums, n)``: ``{name: float sum over the N rows}`` (in float64) and N.
  """
  values = map_over_batches(batch_fn, key, x, batch_size, first_batch=first_batch,
                            progress=progress)
  return {name: float(np.sum(np.asarray(v, np.float64))) for name, v in values.items()}, len(x)


def evaluate(model: vae_model.VAE, params: Any, key: Key, x: DataBatchLike,
             batch_size: int = 100, num_samples_ll: int = 5000, iwae_k: Sequence[int] = (),
             chunk_size: int = 500, active_units_threshold: float = 0.01,
             progress: Optional[Callable[[int, int], None]] = None, *, first_batch: int = 0,
             across_processes: bool = False, autoencoder: bool = False) -> dict:
  """Test-set figures of a trained VAE, computed batch by batch (memory independent of N).

  The one evaluation of the VAE family: the launchers (``train_vae`` at the end of training and
  every ``eval_every`` steps, ``evaluate_vae`` on a checkpoint) call it too.

  Several processes (``jax.distributed``) can share one evaluation: each passes its own block of
  whole batches of the evaluation set (``x``, the global batch index of its first batch as
  ``first_batch``) and ``across_processes=True``; batch ``first_batch + i`` draws from
  ``fold_in(key, first_batch + i)`` as it would in one process, and the sums are added over the
  processes, so every process returns the figures of the whole set (equal to one process up to
  float rounding; the active units come from the summed moments of the posterior means,
  :func:`lvmjax.vae.posterior_mean_moments`, as in one process).

  Args:
    model, params: the VAE.
    key: PRNG key (batch ``i`` uses ``fold_in(key, i)``).
    x: ``(N, *data_shape)``; may be uint8 bits.
    batch_size: points per jitted batch; the last batch is padded (and the padding dropped).
    num_samples_ll: K importance samples for the log-likelihood estimate (0 to skip).
    iwae_k: extra IWAE bounds to report, e.g. ``(5, 50)``.
    chunk_size: samples per chunk in :func:`~lvmjax.vae.log_likelihood`.
    active_units_threshold: threshold of :func:`~lvmjax.vae.active_units`.
    progress: optional callback ``progress(points_done, num_points)``.
    first_batch: global index of this call's first batch (see above).
    across_processes: add the sums over all processes (every process must call it).
    autoencoder: the deterministic autoencoder's figures instead (its ELBO and log-likelihood
      have no meaning, its encoder variance being untrained): ``reconstruction_log_likelihood``
      (log p(x | z) at the encoder mean), ``active_units``, ``num_points``.

  Returns:
    dict of Python floats (means over x): ``elbo``, ``reconstruction``, ``kl``, ``iwae_<k>`` for
    each k, ``log_likelihood`` and ``nll`` (= -log_likelihood) when ``num_samples_ll > 0``,
    ``active_units`` (int), ``num_points``.
  """
  _checks.check_key(key)
  vae_model._check_x(x)  # pylint: disable=protected-access
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  if num_samples_ll and not autoencoder:
    num_samples_ll = _checks.check_positive_int(num_samples_ll, "num_samples_ll")
  chunk_size = _checks.check_positive_int(chunk_size, "chunk_size")
  iwae_k = tuple(_checks.check_positive_int(k, "iwae_k") for k in iwae_k)
  if autoencoder:
    num_samples_ll, iwae_k = 0, ()
  x = np.asarray(x)
  batch_size = min(batch_size, x.shape[0])
  sums, n = sum_over_batches(
      lambda k, xb: _eval_batch(model, params, k, xb, int(num_samples_ll), iwae_k,
                                int(chunk_size), bool(autoencoder)),
      key, x, batch_size, first_batch=first_batch, progress=progress)
  moments = vae_model.posterior_mean_moments(model, params, x, max(batch_size, 1000))
  if across_processes and jax.process_count() > 1:
    sums, moments = sharding.process_sum((sums, moments))
    n = int(moments.count)
  results = {name: float(v) / n for name, v in sums.items()}
  count, _ = vae_model.active_units_from_moments(moments, active_units_threshold)
  results["active_units"] = int(count)
  if "log_likelihood" in results:
    results["nll"] = -results["log_likelihood"]
  results["num_points"] = n
  return results


# ----------------------------------------------------------------------------------------------
# data-parallel over a device mesh


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Copies a pytree (a ``TrainState``, params, PRNG keys) to every device of ``mesh``.

  Works with several processes too (each passes the same values): the leaves go through host
  memory, and typed PRNG keys through their raw key data.
  """
  rep = sharding.replicated(mesh)

  def put(a):
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      data = put(jax.random.key_data(a))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    return jax.device_put(np.asarray(jax.device_get(a)), rep)

  return jax.tree.map(put, tree)


def check_batch_size(batch_size: int, mesh: Mesh, axis_name: str = sharding.DATA_AXIS) -> None:
  """Raises ValueError unless the global batch splits evenly over the data axis."""
  shards = sharding.num_shards(mesh, axis_name)
  if batch_size % shards:
    raise ValueError(f"The batch size {batch_size} must be a multiple of the {shards} devices "
                     f"of the mesh axis {axis_name!r}; use e.g. {shards * max(1, batch_size // shards)}.")


def shard_batch(x: ArrayLike, mesh: Mesh, axis_name: str = sharding.DATA_AXIS, *,
                local: bool = False) -> jax.Array:
  """Puts a batch on the mesh, split along its first axis.

  Args:
    x: the global batch (B, ...) (the same on every process), or, with ``local=True``, only
      this process's rows (B / num_processes, ...).
    mesh: the mesh.
    axis_name: its data axis.
    local: ``x`` holds only this process's rows.

  Returns:
    A (B, ...) ``jax.Array`` with sharding ``P(axis_name)``.

  Raises:
    ValueError: B is not a multiple of the number of devices on the data axis.
  """
  spec = sharding.row_sharding(mesh, axis_name)
  if jax.process_count() == 1:
    check_batch_size(np.shape(x)[0], mesh, axis_name)
    return jax.device_put(x, spec)
  x = np.asarray(x)
  if not local:
    check_batch_size(x.shape[0], mesh, axis_name)
    x = x[sharding.process_rows(x.shape[0])]
  return jax.make_array_from_process_local_data(spec, x)


def make_parallel_train_step(model: vae_model.VAE, optimizer: optax.GradientTransformation,
                             mesh: Mesh, axis_name: str = sharding.DATA_AXIS, *,
                             donate: bool = True, **kwargs
                             ) -> Callable[[TrainState, jax.Array, jax.Array],
                                           tuple[TrainState, dict]]:
  """The jitted data-parallel ``train_step(state, x, key) -> (state, metrics)``.

  Args:
    model: the VAE.
    optimizer: the optax optimizer.
    mesh: the device mesh.
    axis_name: the data axis the batch is split over (other mesh axes replicate).
    donate: donate the incoming state's buffers (as ``jit_train_step`` does).
    **kwargs: ``objective``, ``num_samples``, ``beta``, ``compute_dtype``, ``analytic_kl`` of
      :func:`make_train_step`.

  Returns:
    The step. ``x`` must be a multiple of the data-axis size in length; place it with
    :func:`shard_batch` (a host array is split on the way in, too). The returned state and
    metrics are replicated.
  """
  if axis_name not in mesh.axis_names:
    raise ValueError(f"axis_name={axis_name!r} is not an axis of the mesh {mesh.axis_names}.")
  step = make_train_step(model, optimizer, **kwargs)
  rep = sharding.replicated(mesh)
  data = sharding.row_sharding(mesh, axis_name)
  return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())
