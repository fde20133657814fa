"""Training pieces for the VAE family: train state, one pure training step, evaluation.

``lvmjax.vae.train.train_and_evaluate`` (data, checkpoints, logging) is built on these; user code
can build its own loop the same way::

  state = create_train_state(key, model, x[:100], optax.adam(1e-3))
  step = jit_train_step(model, optax.adam(1e-3), objective="iwae", num_samples=5)
  for i, batch in enumerate(batches):
    state, metrics = step(state, batch, key)     # randomness: fold_in(key, state.step)
  results = evaluate(model, state.params, key, x_test, batch_size=100)

Small models on CPU can run several steps per jitted call (one dispatch from Python for S
steps; the same numbers as S calls of the one-step function)::

  steps = jit_multi_train_step(model, optax.adam(1e-3))
  state, metrics = steps(state, batches, key)    # batches (S, B, ...); metrics[name] is (S,)
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lvmjax import _checks
from lvmjax import sharding
from lvmjax.vae import model as vae_model

OBJECTIVES = ("elbo", "iwae", "autoencoder")

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


def create_train_state(key: jax.Array, model: vae_model.VAE, example_x: jax.typing.ArrayLike,
                       optimizer: optax.GradientTransformation) -> TrainState:
  """Initialises params from ``example_x`` (N, *data_shape) and the optimizer state; step 0."""
  params = vae_model.init(key, model, example_x)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def make_train_step(model: vae_model.VAE, optimizer: optax.GradientTransformation,
                    objective: str = "elbo", num_samples: int = 1, beta: float = 1.0,
                    compute_dtype: Any = jnp.float32, analytic_kl: bool = True
                    ) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]]:
  r"""Returns a pure ``train_step(state, x, key) -> (state, metrics)``.

  The loss is the negative batch mean of the objective:

  * ``"elbo"``: :func:`lvmjax.vae.elbo` with ``num_samples``, ``beta``, ``analytic_kl``;
  * ``"iwae"``: :func:`lvmjax.vae.iwae_bound` with k = ``num_samples``;
  * ``"autoencoder"``: :func:`lvmjax.vae.autoencoder_log_likelihood` (deterministic).

  The step's randomness is ``jax.random.fold_in(key, state.step)``, so a run resumed from a
  checkpoint draws the same numbers as an uninterrupted one. ``x`` may be any numeric dtype
  (e.g. uint8 bits); it is cast inside the step. Wrap the step in
  ``jax.jit(step, donate_argnums=0)`` (or use :func:`jit_train_step`).

  Args:
    model: the :class:`~lvmjax.vae.VAE`.
    optimizer: an optax gradient transformation.
    objective: ``"elbo"``, ``"iwae"`` or ``"autoencoder"``.
    num_samples: latent samples per point (k for IWAE), >= 1.
    beta: KL weight for ``"elbo"``.
    compute_dtype: dtype of activations (``jnp.bfloat16`` on GPU/TPU); params stay float32 and
      log-probabilities are computed in float32.
    analytic_kl: closed-form KL for ``"elbo"``.

  Returns:
    ``train_step``; its metrics are scalars: ``loss``, ``objective`` (batch mean of the bound),
    ``grad_norm`` and, for ``"elbo"``, ``reconstruction`` and ``kl``.

  Raises:
    ValueError: unknown objective, num_samples < 1, negative beta.
  """
  _checks.check_choice(objective, "objective", OBJECTIVES)
  num_samples = _checks.check_positive_int(num_samples, "num_samples")
  _checks.check_nonnegative(beta, "beta")
  if compute_dtype is not None and jnp.dtype(compute_dtype) == jnp.float32:
    compute_dtype = None  # params are float32 already; no casts.

  def loss_fn(params, x, key):
    if objective == "elbo":
      terms = vae_model.elbo_terms(model, params, key, x, num_samples, beta, analytic_kl,
                                   compute_dtype=compute_dtype)
      value = jnp.mean(terms.elbo)
      aux = {"objective": value, "reconstruction": jnp.mean(terms.reconstruction),
             "kl": jnp.mean(terms.kl)}
    elif objective == "iwae":
      value = jnp.mean(vae_model.iwae_bound(model, params, key, x, num_samples,
                                            compute_dtype=compute_dtype))
      aux = {"objective": value}
    else:
      value = jnp.mean(vae_model.autoencoder_log_likelihood(model, params, x,
                                                            compute_dtype=compute_dtype))
      aux = {"objective": value}
    return -value, aux

  def train_step(state: TrainState, x: jax.Array, key: jax.Array):
    step_key = jax.random.fold_in(key, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, step_key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": _global_norm(grads), **aux}
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


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _eval_batch(model, params, key, x, num_samples_ll, iwae_k, chunk_size):
  k_elbo, k_iwae, k_ll = jax.random.split(key, 3)
  terms = vae_model.elbo_terms(model, params, k_elbo, x, 1)
  out = {"elbo": terms.elbo, "reconstruction": terms.reconstruction, "kl": terms.kl}
  for k in iwae_k:
    out[f"iwae_{k}"] = vae_model.iwae_bound(model, params, jax.random.fold_in(k_iwae, k), x, k)
  if num_samples_ll:
    out["log_likelihood"] = vae_model.log_likelihood(model, params, k_ll, x, num_samples_ll,
                                                     chunk_size)
  return out


def evaluate(model: vae_model.VAE, params: Any, key: jax.Array, x: jax.typing.ArrayLike,
             batch_size: int = 100, num_samples_ll: int = 5000, iwae_k: Sequence[int] = (),
             chunk_size: int = 500, active_units_threshold: float = 0.01,
             progress: Optional[Callable[[int, int], None]] = None, *, first_batch: int = 0,
             across_processes: bool = False) -> dict:
  """Test-set figures of a trained VAE, computed batch by batch (memory independent of N).

  Several processes (``jax.distributed``) can share one evaluation: each passes its own block of
  whole batches of the evaluation set (``x``, the global batch index of its first batch as
  ``first_batch``) and ``across_processes=True``; batch ``first_batch + i`` draws from
  ``fold_in(key, first_batch + i)`` as it would in one process, and the sums are added over the
  processes, so every process returns the figures of the whole set (equal to one process up to
  float rounding; the active units come from summed first and second moments of the posterior
  means).

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

  Returns:
    dict of Python floats (means over x): ``elbo``, ``reconstruction``, ``kl``, ``iwae_<k>`` for
    each k, ``log_likelihood`` and ``nll`` (= -log_likelihood) when ``num_samples_ll > 0``,
    ``active_units`` (int), ``num_points``.
  """
  vae_model._check_key(key)
  vae_model._check_x(x)
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  if num_samples_ll:
    num_samples_ll = _checks.check_positive_int(num_samples_ll, "num_samples_ll")
  chunk_size = _checks.check_positive_int(chunk_size, "chunk_size")
  iwae_k = tuple(_checks.check_positive_int(k, "iwae_k") for k in iwae_k)
  x = np.asarray(x)
  n = x.shape[0]
  batch_size = min(batch_size, n)
  sums = {}
  for i, start in enumerate(range(0, n, batch_size)):
    xb = x[start:start + batch_size]
    m = xb.shape[0]
    if m < batch_size:
      xb = np.concatenate([xb, np.repeat(xb[-1:], batch_size - m, axis=0)])
    out = _eval_batch(model, params, jax.random.fold_in(key, first_batch + i), jnp.asarray(xb),
                      int(num_samples_ll), iwae_k, int(chunk_size))
    for name, v in jax.device_get(out).items():
      sums[name] = sums.get(name, 0.0) + float(np.sum(np.asarray(v, np.float64)[:m]))
    if progress is not None:
      progress(start + m, n)
  if across_processes and jax.process_count() > 1:
    encode_batch = max(batch_size, 1000)
    means = np.concatenate([np.asarray(vae_model.encode(model, params, x[i:i + encode_batch])[0],
                                       np.float64) for i in range(0, n, encode_batch)])
    sums, total, m1, m2 = sharding.process_sum(
        (sums, n, means.sum(axis=0), np.square(means).sum(axis=0)))
    results = {name: float(v) / total for name, v in sums.items()}
    variances = m2 / total - np.square(m1 / total)
    results["active_units"] = int(np.sum(variances > active_units_threshold))
    n = int(total)
  else:
    results = {name: v / n for name, v in sums.items()}
    count, _ = vae_model.active_units(model, params, x, active_units_threshold,
                                      batch_size=max(batch_size, 1000))
    results["active_units"] = int(count)
  if "log_likelihood" in results:
    results["nll"] = -results["log_likelihood"]
  results["num_points"] = n
  return results
