r"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) for log p(x).

AIS (Neal, 2001) estimates the normalising constant of the posterior,
:math:`p(x) = \int p(z)\,p(x \mid z)\,dz`, by moving chains through a sequence of distributions
from a start :math:`q_0` (the prior, or the encoder's :math:`q(z \mid x)`) to the posterior along
the geometric path

.. math::
   f_t(z) = q_0(z)^{1 - \beta_t}\, p(x, z)^{\beta_t}, \qquad 0 = \beta_0 < \beta_1 < \dots
   < \beta_T = 1,

which from the prior is :math:`f_t(z) = p(z)\,p(x \mid z)^{\beta_t}`. A chain starts at
:math:`z_0 \sim q_0`, and at step t adds
:math:`(\beta_t - \beta_{t-1})\,[\log p(x, z_{t-1}) - \log q_0(z_{t-1})]` to its log-weight and
moves by one HMC transition that leaves :math:`f_t` invariant (blackjax's HMC kernel). Each
weight is an unbiased estimate of p(x); with C chains per point

.. math::
   \log \hat p(x) = \log \frac1C \sum_{c=1}^C w_c, \qquad
   \log w_c = \sum_{t=1}^T (\beta_t - \beta_{t-1})\,
     \bigl[\log p(x, z^{(c)}_{t-1}) - \log q_0(z^{(c)}_{t-1})\bigr],

a stochastic lower bound on log p(x) (:math:`E \log \hat p \le \log p`), tighter than importance
sampling with the encoder for the same cost (Wu, Burda, Salakhutdinov & Grosse, 2016).

The step size of each chain adapts during the run towards an acceptance rate of 0.65, as in Wu
et al.'s code: a moving average of the chain's acceptance probability (decay 0.9) multiplies the
step size by 1.02 when above the target and by 0.98 when below, within ``[1e-4, 0.5]`` (the
step size at step t depends only on the chain's past, so each transition still leaves
:math:`f_t` invariant and the weights stay unbiased).

BDMC (Grosse, Ghahramani & Adams, 2015): on data simulated from the model, the latent the data
was drawn with is an exact posterior sample. AIS run backwards from it, from
:math:`\beta = 1` to 0, gives weights with :math:`E[w_{\mathrm{rev}}] = 1 / p(x)`, so
:math:`-\log \frac1C \sum_c w_{\mathrm{rev}, c}` is a stochastic *upper* bound. The forward
(lower) and reverse (upper) estimates bracket log p(x); their gap bounds the error of both.

Everything is written against a small generic interface, :class:`AISTarget` (a log-prior, a
log-likelihood, a prior sampler and an optional initial proposal for *one* data point; the latent
may be any pytree), so it serves any model: :func:`vae_target` builds it for a
:class:`lvmjax.vae.VAE` with any prior; :mod:`lvmjax.vae.hierarchical` builds it for the
two-stochastic-layer model. The chains of a point run as one ``vmap``, the points as another.

References:
  Neal (2001), Annealed importance sampling. Grosse, Ghahramani & Adams (2015), Sandwiching the
  marginal likelihood using bidirectional Monte Carlo. Wu, Burda, Salakhutdinov & Grosse (2016),
  On the quantitative analysis of decoder-based generative models.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lvmjax import _checks
from lvmjax.types import DataBatchLike, Key, LogDensity
from lvmjax.vae import model as vae_model
from lvmjax.vae import priors
from lvmjax.vae import steps as vae_steps

Params = Any
PyTree = Any

#: Step-size adaptation of Wu et al.'s code: (target acceptance, moving-average decay,
#: increase factor, decrease factor, smallest and largest step size).
TARGET_ACCEPTANCE = 0.65
_AVG_DECAY = 0.9
_STEP_INC, _STEP_DEC = 1.02, 0.98
_STEP_MIN, _STEP_MAX = 1e-4, 0.5
INITS = ("prior", "encoder")
SCHEDULES = ("sigmoid", "linear")


class AISTarget(NamedTuple):
  r"""What AIS needs of a model for **one** data point x; every function is of one latent z.

  z may be any pytree of arrays (e.g. ``(z1, z2)`` for two stochastic layers); AIS flattens it
  with ``jax.flatten_util.ravel_pytree``.

  Attributes:
    log_prior: ``z -> ()``, :math:`\log p(z)`.
    log_likelihood: ``z -> ()``, :math:`\log p(x \mid z)`.
    sample_prior: ``key -> z``, one draw from p(z).
    initial_sample: optional ``key -> z``, one draw from a proposal :math:`q_0` to start from
      (e.g. the encoder's q(z | x)); None: start from the prior.
    initial_log_prob: ``z -> ()``, :math:`\log q_0(z)` (normalised); needed with
      ``initial_sample``.
  """
  log_prior: Callable[[PyTree], jax.Array]
  log_likelihood: Callable[[PyTree], jax.Array]
  sample_prior: Callable[[jax.Array], PyTree]
  initial_sample: Optional[Callable[[jax.Array], PyTree]] = None
  initial_log_prob: Optional[Callable[[PyTree], jax.Array]] = None


class AISResult(NamedTuple):
  """The chains of one AIS run for one point.

  Attributes:
    log_marginal: ``()``: forward: :math:`\\log \\frac1C \\sum_c w_c`, the estimate of log p(x)
      (a stochastic lower bound); reverse: :math:`-\\log \\frac1C \\sum_c w_{\\mathrm{rev},c}`
      (a stochastic upper bound).
    log_weights: ``(C,)`` each chain's log-weight.
    acceptance: ``(C,)`` each chain's mean HMC acceptance probability over the run.
    step_size: ``(C,)`` each chain's final (adapted) step size.
    positions: the chains' final latents, a pytree with a leading ``(C,)`` axis (forward: draws
      whose weighted set approximates the posterior).
  """
  log_marginal: jax.Array
  log_weights: jax.Array
  acceptance: jax.Array
  step_size: jax.Array
  positions: PyTree


class BDMCResult(NamedTuple):
  """BDMC on data simulated from the model (each ``(N,)`` except ``x``).

  Attributes:
    lower: forward AIS estimates, stochastic lower bounds on log p(x).
    upper: reverse AIS estimates from the exact latents, stochastic upper bounds.
    x: ``(N, *data_shape)`` the simulated data.
  """
  lower: jax.Array
  upper: jax.Array
  x: jax.Array


# ----------------------------------------------------------------------------------------------
# schedules


def annealing_schedule(num_steps: int, schedule: str = "sigmoid", *, radius: float = 4.0,
                       dtype: Any = None) -> jax.Array:
  r"""The inverse temperatures :math:`0 = \beta_0 < \dots < \beta_T = 1`: ``(T + 1,)``.

  ``"sigmoid"`` (Grosse et al. 2015; Wu et al. 2016):
  :math:`\beta_t \propto \sigma(r\,(2t/T - 1)) - \sigma(-r)`, rescaled to end at 1, which
  spends more steps near both ends; ``"linear"``: :math:`\beta_t = t / T`.

  Args:
    num_steps: T >= 1 intermediate distributions.
    schedule: ``"sigmoid"`` or ``"linear"``.
    radius: r of the sigmoid schedule.
    dtype: float dtype (default: JAX's default float).

  Returns:
    ``(T + 1,)`` increasing, from exactly 0 to exactly 1.
  """
  num_steps = _checks.check_positive_int(num_steps, "num_steps")
  _checks.check_choice(schedule, "schedule", SCHEDULES)
  dtype = dtype or jnp.zeros(()).dtype
  if schedule == "linear":
    return jnp.linspace(0.0, 1.0, num_steps + 1, dtype=dtype)
  s = jax.nn.sigmoid(jnp.linspace(-radius, radius, num_steps + 1, dtype=dtype))
  betas = (s - s[0]) / (s[-1] - s[0])
  return betas.at[0].set(0.0).at[-1].set(1.0)


# ----------------------------------------------------------------------------------------------
# the generic sampler (one point)


class AISOptions(NamedTuple):
  """The settings of an AIS run (see :func:`ais` for their meaning); hashable, so static under jit."""
  num_steps: int = 1000
  num_chains: int = 16
  num_leapfrog: int = 10
  step_size: float = 0.05
  schedule: Union[str, tuple] = "sigmoid"
  adapt_step_size: bool = True
  target_acceptance: float = TARGET_ACCEPTANCE
  step_size_jitter: float = 0.2


def make_options(**kwargs) -> AISOptions:
  """Checks the AIS settings (ValueError at the door) and returns them as :class:`AISOptions`."""
  unknown = set(kwargs) - set(AISOptions._fields)
  if unknown:
    raise ValueError(f"Unknown AIS option(s) {sorted(unknown)}; expected some of "
                     f"{list(AISOptions._fields)}.")
  o = AISOptions(**kwargs)
  _checks.check_positive_int(o.num_steps, "num_steps")
  _checks.check_positive_int(o.num_chains, "num_chains")
  _checks.check_positive_int(o.num_leapfrog, "num_leapfrog")
  if not (isinstance(o.step_size, (int, float, np.floating, np.integer))
          and _STEP_MIN <= float(o.step_size) <= _STEP_MAX):
    raise ValueError(f"step_size must be a number in [{_STEP_MIN}, {_STEP_MAX}] (the range the "
                     f"adaptation keeps it in), got {o.step_size!r}.")
  if not 0.0 < float(o.target_acceptance) < 1.0:
    raise ValueError(f"target_acceptance must be in (0, 1), got {o.target_acceptance!r}.")
  if not 0.0 <= float(o.step_size_jitter) < 1.0:
    raise ValueError(f"step_size_jitter must be in [0, 1), got {o.step_size_jitter!r}.")
  schedule = o.schedule
  if not isinstance(schedule, str):
    b = np.asarray(schedule, np.float64)
    if (b.ndim != 1 or b.shape[0] != o.num_steps + 1 or b[0] != 0.0 or b[-1] != 1.0
        or np.any(np.diff(b) < 0)):
      raise ValueError("schedule must be 'sigmoid', 'linear' or num_steps + 1 inverse temperatures "
                       f"rising from exactly 0 to exactly 1; got {schedule!r}.")
    schedule = tuple(float(v) for v in b)
  else:
    _checks.check_choice(schedule, "schedule", SCHEDULES)
  return o._replace(schedule=schedule, num_steps=int(o.num_steps), num_chains=int(o.num_chains),
                    num_leapfrog=int(o.num_leapfrog), step_size=float(o.step_size),
                    adapt_step_size=bool(o.adapt_step_size),
                    target_acceptance=float(o.target_acceptance),
                    step_size_jitter=float(o.step_size_jitter))


def _annealed_chain(key, z0, base_fn, delta_fn, betas, o: AISOptions):
  """One chain from z0 along betas: returns (log_weight, acceptance, step_size, z).

  f_beta(z) = base(z) + beta * delta(z); step i adds (betas[i] - betas[i-1]) * delta(z) at the
  current z, then moves z by one blackjax HMC transition leaving f_{betas[i]} invariant.
  """
  kernel = blackjax.mcmc.hmc.build_kernel()
  dtype = z0.dtype
  inv_mass = jnp.ones_like(z0)

  def log_f_and_delta(z, beta):
    d = delta_fn(z)
    return base_fn(z) + beta * d, d

  def body(carry, inputs):
    z, log_w, step_size, avg_acc, acc_sum = carry
    beta_prev, beta, k = inputs
    (log_f, d), grad = jax.value_and_grad(log_f_and_delta, has_aux=True)(z, beta)
    log_w = log_w + (beta - beta_prev) * d
    state = blackjax.mcmc.hmc.HMCState(z, log_f, grad)
    k_jitter, k_hmc = jax.random.split(k)
    # a random step size (independent of z, so f_beta stays invariant) breaks the periodic
    # trajectories of a fixed step size and leapfrog count
    eps = step_size * (1.0 + o.step_size_jitter * jax.random.uniform(k_jitter, (), dtype, -1.0, 1.0))
    state, info = kernel(k_hmc, state, lambda u: log_f_and_delta(u, beta)[0], eps, inv_mass,
                         o.num_leapfrog)
    acc = jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0).astype(dtype)
    if o.adapt_step_size:
      avg_acc = _AVG_DECAY * avg_acc + (1.0 - _AVG_DECAY) * acc
      step_size = jnp.clip(jnp.where(avg_acc > o.target_acceptance, step_size * _STEP_INC,
                                     step_size * _STEP_DEC), _STEP_MIN, _STEP_MAX)
    return (state.position, log_w, step_size, avg_acc, acc_sum + acc), None

  num = betas.shape[0] - 1
  init = (z0, jnp.zeros((), dtype), jnp.asarray(o.step_size, dtype),
          jnp.asarray(o.target_acceptance, dtype), jnp.zeros((), dtype))
  (z, log_w, step_size, _, acc_sum), _ = jax.lax.scan(
      body, init, (betas[:-1], betas[1:], jax.random.split(key, num)))
  return log_w, acc_sum / num, step_size, z


def _densities(target: AISTarget, unravel, use_initial: bool):
  """(base, delta) of the path f_b = base + b * delta, on flat latents."""
  log_prior = lambda u: target.log_prior(unravel(u))  # pylint: disable=unnecessary-lambda-assignment
  log_lik = lambda u: target.log_likelihood(unravel(u))  # pylint: disable=unnecessary-lambda-assignment
  if not use_initial:
    return log_prior, log_lik
  log_q0 = lambda u: target.initial_log_prob(unravel(u))  # pylint: disable=unnecessary-lambda-assignment
  return log_q0, lambda u: log_prior(u) + log_lik(u) - log_q0(u)


def _run(target: AISTarget, key: jax.Array, starts: Optional[PyTree], o: AISOptions,
         use_initial: bool, reverse: bool) -> AISResult:
  """Forward AIS from q0 (starts None) or reverse AIS from given latents (C leading axis)."""
  key_init, key_chains = jax.random.split(key)
  if starts is None:
    sampler = target.initial_sample if use_initial else target.sample_prior
    starts = jax.vmap(sampler)(jax.random.split(key_init, o.num_chains))
  example = jax.tree.map(lambda a: a[0], starts)
  flat0, unravel = ravel_pytree(example)
  dtype = jnp.promote_types(flat0.dtype, jnp.float32)
  flat = jax.vmap(lambda s: ravel_pytree(s)[0])(starts).astype(dtype)
  base_fn, delta_fn = _densities(target, lambda u: unravel(u.astype(flat0.dtype)), use_initial)
  if isinstance(o.schedule, str):
    betas = annealing_schedule(o.num_steps, o.schedule, dtype=dtype)
  else:
    betas = jnp.asarray(o.schedule, dtype)
  if reverse:
    betas = betas[::-1]
  chain = lambda k, z: _annealed_chain(k, z, base_fn, delta_fn, betas, o)  # pylint: disable=unnecessary-lambda-assignment
  log_w, acc, steps, z = jax.vmap(chain)(jax.random.split(key_chains, flat.shape[0]), flat)
  log_mean_w = jax.nn.logsumexp(log_w) - jnp.log(jnp.asarray(log_w.shape[0], dtype))
  positions = jax.vmap(lambda u: unravel(u.astype(flat0.dtype)))(z)
  return AISResult(-log_mean_w if reverse else log_mean_w, log_w, acc, steps, positions)


def _check_target(target: Any, use_initial: bool) -> None:
  if not isinstance(target, AISTarget):
    raise ValueError(f"target must be an lvmjax.vae.ais.AISTarget, got {type(target).__name__}.")
  if use_initial and (target.initial_sample is None or target.initial_log_prob is None):
    raise ValueError("This target has no initial proposal: give AISTarget(initial_sample=..., "
                     "initial_log_prob=...) or anneal from the prior.")


def _broadcast_chains(z: PyTree, num_chains: int) -> PyTree:
  return jax.tree.map(lambda a: jnp.broadcast_to(a, (num_chains,) + jnp.shape(a)), z)


def ais(target: AISTarget, key: Key, *, from_initial: bool = False, **options) -> AISResult:
  r"""AIS estimate of log p(x) for one data point, from the prior or from ``target``'s proposal.

  .. math::
     \log \hat p(x) = \log \frac1C \sum_c \exp \sum_{t=1}^T (\beta_t - \beta_{t-1})
       \bigl[\log p(x, z^{(c)}_{t-1}) - \log q_0(z^{(c)}_{t-1})\bigr]

  with :math:`q_0` the prior (then the bracket is :math:`\log p(x \mid z)`) or, with
  ``from_initial``, ``target.initial_sample``/``initial_log_prob``. Not jitted (wrap it, and
  ``vmap`` it over points by building the target inside the vmapped function).

  Args:
    target: the :class:`AISTarget` of the point.
    key: PRNG key; chain c of the run draws from its own key split from it.
    from_initial: start from ``target``'s proposal instead of the prior.
    **options: the fields of :class:`AISOptions`: ``num_steps`` (T intermediate distributions,
      i.e. HMC transitions per chain; 1000), ``num_chains`` (C chains, one ``vmap``; 16),
      ``num_leapfrog`` (leapfrog steps per transition; 10), ``step_size`` (each chain's initial
      leapfrog step size; 0.05), ``schedule`` (``"sigmoid"``, ``"linear"`` or T + 1 inverse
      temperatures from 0 to 1), ``adapt_step_size`` (towards ``target_acceptance``, 0.65),
      ``step_size_jitter`` (each transition's step size is drawn uniformly within this
      fraction of the chain's; 0.2).

  Returns:
    :class:`AISResult`.

  Raises:
    ValueError: bad options, or ``from_initial`` without a proposal in ``target``.
  """
  _checks.check_key(key)
  _check_target(target, from_initial)
  return _run(target, key, None, make_options(**options), from_initial, reverse=False)


def reverse_ais(target: AISTarget, key: Key, z_exact: PyTree, *, from_initial: bool = False,
                **options) -> AISResult:
  r"""Reverse AIS from an exact posterior sample: a stochastic upper bound on log p(x).

  Every chain starts at ``z_exact`` (an exact draw from p(z | x), e.g. the latent simulated data
  was drawn with) and runs the forward chain's transitions in reverse order, from
  :math:`\beta_T = 1` down to :math:`\beta_0 = 0`:

  .. math::
     \log w_{\mathrm{rev}} = \sum_{t=1}^T (\beta_{t-1} - \beta_t)
       \bigl[\log p(x, z_t) - \log q_0(z_t)\bigr], \qquad E[w_{\mathrm{rev}}] = 1 / p(x),

  so :math:`-\log \frac1C \sum_c w_{\mathrm{rev},c} \ge \log p(x)` in expectation.

  Args:
    target: the :class:`AISTarget` of the point.
    key: PRNG key.
    z_exact: the exact posterior latent (a pytree like ``target.sample_prior``'s draws).
    from_initial: anneal towards ``target``'s proposal instead of the prior.
    **options: as in :func:`ais` (use the forward run's).

  Returns:
    :class:`AISResult` whose ``log_marginal`` is the upper bound.
  """
  _checks.check_key(key)
  _check_target(target, from_initial)
  o = make_options(**options)
  return _run(target, key, _broadcast_chains(z_exact, o.num_chains), o, from_initial,
              reverse=True)


def bdmc_bounds(target: AISTarget, key: Key, z_exact: PyTree, *, from_initial: bool = False,
                **options) -> tuple[jax.Array, jax.Array]:
  """``(lower, upper)`` on log p(x) for one simulated point: forward :func:`ais` and
  :func:`reverse_ais` from ``z_exact``, with the same options."""
  key_fwd, key_rev = jax.random.split(key)
  lower = ais(target, key_fwd, from_initial=from_initial, **options).log_marginal
  upper = reverse_ais(target, key_rev, z_exact, from_initial=from_initial, **options).log_marginal
  return lower, upper


# ----------------------------------------------------------------------------------------------
# VAEs


def vae_target(model: vae_model.VAE, params: Params, x: jax.Array) -> AISTarget:
  r"""The :class:`AISTarget` of one point ``x`` (data shape, no batch axis) under a VAE.

  log p(z) is the model's prior (any prior of :mod:`lvmjax.vae.priors`, or a user prior with
  ``log_prob``/``sample``), log p(x | z) its decoder and likelihood, and the proposal the
  encoder's :math:`q(z \mid x) = \mathcal{N}(\mu(x), \operatorname{diag} \sigma^2(x))`.
  """
  latent_dim = getattr(model.encoder, "latent_dim", None)
  xb = x[None]

  def _apply(*args, method, what):  # a shape mismatch is a ValueError that says which part
    return vae_model._apply(model, params, *args, method=method, what=what)  # pylint: disable=protected-access

  def log_prior(z):
    return _apply(z[None], method="prior_log_prob", what="prior")[0]

  def log_likelihood(z):
    return _apply(z[None], method="decode", what="decoder").log_prob(xb)[0]

  def sample_prior(key):
    return _apply(key, 1, latent_dim, method="prior_sample", what="prior")[0]

  mean, log_variance = (a[0] for a in _apply(xb, method="encode", what="encoder"))
  mean = mean.astype(jnp.promote_types(mean.dtype, jnp.float32))
  log_variance = log_variance.astype(mean.dtype)

  def initial_sample(key):
    return mean + jnp.exp(0.5 * log_variance) * jax.random.normal(key, mean.shape, mean.dtype)

  def initial_log_prob(z):
    return priors.diag_gaussian_log_prob(z, mean, log_variance)

  return AISTarget(log_prior, log_likelihood, sample_prior, initial_sample, initial_log_prob)


def _target_fn(model: Any, params: Params) -> Callable[[jax.Array], AISTarget]:
  """x (one point) -> AISTarget for a VAE, or for any model with ``ais_target(params, x)``."""
  if isinstance(model, vae_model.VAE):
    return lambda x: vae_target(model, params, x)
  if callable(getattr(model, "ais_target", None)):
    return lambda x: model.ais_target(params, x)
  raise ValueError(f"model must be an lvmjax.vae.VAE or have a method ais_target(params, x) -> "
                   f"AISTarget (e.g. vae.hierarchical.HierarchicalVAE); got {type(model).__name__}.")


def log_likelihood_ais(model: Any, params: Params, key: Key, x: DataBatchLike, *,
                       num_steps: int = 1000, num_chains: int = 16, num_leapfrog: int = 10,
                       init: str = "prior", **options) -> LogDensity:
  r"""AIS estimate of log p(x) per point (Wu et al., 2016), with blackjax's HMC transitions.

  .. math::
     \log \hat p(x) = \log \frac1C \sum_{c=1}^C w_c, \qquad
     f_t(z) = q_0(z)^{1-\beta_t}\, p(x, z)^{\beta_t}

  (see :func:`ais`); :math:`q_0` is the prior (``init="prior"``: :math:`f_t = p(z)\,p(x \mid
  z)^{\beta_t}`) or the encoder's q(z | x) (``init="encoder"``, which Wu et al. found as accurate
  with a tenth of the steps). A stochastic lower bound: :math:`E \log \hat p(x) \le \log p(x)`.
  Point n draws from ``jax.random.split(key, N)[n]``, so a point's estimate does not depend on
  the others. Not jitted: wrap it in ``jax.jit`` (the options are Python values), or use
  :func:`evaluate_ais` for a data set in batches.

  Args:
    model: a :class:`lvmjax.vae.VAE` (any prior), or a model with ``ais_target(params, x)``
      such as :class:`lvmjax.vae.hierarchical.HierarchicalVAE`.
    params: its params.
    key: PRNG key.
    x: ``(N, *data_shape)``.
    num_steps: T intermediate distributions (HMC transitions per chain).
    num_chains: C chains per point, run as one ``vmap``.
    num_leapfrog: leapfrog steps per HMC transition.
    init: ``"prior"`` or ``"encoder"``.
    **options: the other fields of :class:`AISOptions` (``step_size``, ``schedule``,
      ``adapt_step_size``, ``target_acceptance``, ``step_size_jitter``).

  Returns:
    ``(N,)`` estimates of log p(x) in nats.

  Raises:
    ValueError: x without a batch axis or not finite, a bad key, non-positive sizes, an unknown
      ``init``, ``schedule`` or option.

  Examples:
    >>> from lvmjax import vae
    >>> model = vae.VAE(vae.MLPEncoder(latent_dim=2, hidden=(8,)),
    ...                 vae.MLPDecoder(output_dim=4, hidden=(8,)), vae.BernoulliLikelihood())
    >>> params = vae.init(jax.random.key(0), model, jnp.zeros((1, 4)))
    >>> vae.log_likelihood_ais(model, params, jax.random.key(1), jnp.ones((3, 4)),
    ...                        num_steps=10, num_chains=2, num_leapfrog=2).shape
    (3,)
  """
  _checks.check_key(key)
  vae_model._check_x(x)  # pylint: disable=protected-access
  _checks.check_choice(init, "init", INITS)
  o = make_options(num_steps=num_steps, num_chains=num_chains, num_leapfrog=num_leapfrog,
                   **options)
  make_target = _target_fn(model, params)
  x = vae_model._as_float(x)  # pylint: disable=protected-access

  def one(k, xi):
    return _run(make_target(xi), k, None, o, init == "encoder", reverse=False).log_marginal

  return jax.vmap(one)(jax.random.split(key, x.shape[0]), x)


def bdmc(model: Any, params: Params, key: Key, num_points: int, *, num_steps: int = 1000,
         num_chains: int = 16, num_leapfrog: int = 10, init: str = "prior",
         **options) -> BDMCResult:
  r"""Bidirectional Monte Carlo on data simulated from the model (Grosse et al., 2015).

  Draws :math:`(z_n, x_n) \sim p(z)\,p(x \mid z)` (:func:`lvmjax.vae.sample`, or the model's
  ``sample_joint``), then runs forward AIS on each :math:`x_n` (a stochastic lower bound on
  :math:`\log p(x_n)`) and reverse AIS from :math:`z_n`, an exact posterior sample
  (:func:`reverse_ais`, a stochastic upper bound). The true :math:`\log p(x_n)` lies between them
  in expectation; the gap ``upper - lower`` bounds the error of AIS with these settings on data
  like this.

  Args:
    model: a :class:`lvmjax.vae.VAE` or a model with ``ais_target(params, x)`` and
      ``sample_joint(params, key, n) -> (x, z)`` (the hierarchical VAE).
    params: its params.
    key: PRNG key (data, forward chains and reverse chains draw from split keys).
    num_points: N points to simulate.
    num_steps: as in :func:`log_likelihood_ais`, for both directions.
    num_chains: as in :func:`log_likelihood_ais`.
    num_leapfrog: as in :func:`log_likelihood_ais`.
    init: as in :func:`log_likelihood_ais`.
    **options: as in :func:`log_likelihood_ais`.

  Returns:
    :class:`BDMCResult` ``(lower (N,), upper (N,), x)``.

  Raises:
    ValueError: as :func:`log_likelihood_ais`; num_points < 1.
  """
  _checks.check_key(key)
  num_points = _checks.check_positive_int(num_points, "num_points")
  _checks.check_choice(init, "init", INITS)
  o = make_options(num_steps=num_steps, num_chains=num_chains, num_leapfrog=num_leapfrog,
                   **options)
  make_target = _target_fn(model, params)
  key_data, key_fwd, key_rev = jax.random.split(key, 3)
  if isinstance(model, vae_model.VAE):
    x, z = vae_model.sample(model, params, key_data, num_points)
  else:
    x, z = model.sample_joint(params, key_data, num_points)
  x = vae_model._as_float(x)  # pylint: disable=protected-access

  def one(kf, kr, xi, zi):
    target = make_target(xi)
    lower = _run(target, kf, None, o, init == "encoder", reverse=False).log_marginal
    upper = _run(target, kr, _broadcast_chains(zi, o.num_chains), o, init == "encoder",
                 reverse=True).log_marginal
    return lower, upper

  lower, upper = jax.vmap(one)(jax.random.split(key_fwd, num_points),
                               jax.random.split(key_rev, num_points), x, z)
  return BDMCResult(lower, upper, x)


def evaluate_ais(model: Any, params: Params, key: Key, x: DataBatchLike, batch_size: int = 100,
                 progress: Optional[Callable[[int, int], None]] = None,
                 return_values: bool = False, **kwargs) -> dict:
  """:func:`log_likelihood_ais` over a data set in jitted batches (memory independent of N).

  Batch i draws from ``fold_in(key, i)``; the last batch is padded (the padding dropped).

  Args:
    model, params: the model.
    key: PRNG key.
    x: ``(N, *data_shape)``.
    batch_size: points per jitted batch.
    progress: optional callback ``progress(points_done, num_points)``.
    return_values: also return each point's estimate, ``values`` (a float64 NumPy array of shape
      (N,), in the order of x), e.g. to pair two estimators on the same points.
    **kwargs: the options of :func:`log_likelihood_ais` (``num_steps``, ``num_chains``,
      ``num_leapfrog``, ``init``, ...).

  Returns:
    dict of Python numbers: ``log_likelihood_ais`` (mean over x), ``nll_ais``,
    ``log_likelihood_ais_sem`` (standard error of that mean over points), ``ais_<option>`` for
    each option given, ``num_points``; with ``return_values``, ``values``.
  """
  _checks.check_key(key)
  vae_model._check_x(x)  # pylint: disable=protected-access
  batch_size = _checks.check_positive_int(batch_size, "batch_size")
  init = kwargs.get("init", "prior")
  _checks.check_choice(init, "init", INITS)
  # checked before compiling, and made hashable (a schedule given as an array becomes a tuple)
  o = make_options(**{k: v for k, v in kwargs.items() if k != "init"})
  options = (("init", init),) + tuple(o._asdict().items())
  v = np.asarray(vae_steps.map_over_batches(
      lambda k, xb: {"v": _ais_batch(model, params, k, xb, options)}, key, x, batch_size,
      progress=progress)["v"], np.float64)
  n = len(v)
  mean = float(np.mean(v))
  out = {"log_likelihood_ais": mean, "nll_ais": -mean,
         "log_likelihood_ais_sem": float(np.std(v, ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
         **{f"ais_{k}": val for k, val in kwargs.items() if isinstance(val, (int, float, str))},
         "num_points": n}
  if return_values:
    out["values"] = v
  return out


@vae_model._one_program(static_argnums=(0, 4))  # pylint: disable=protected-access
def _ais_batch(model, params, key, xb, options):
  """One :func:`evaluate_ais` batch; ``options`` its ``(name, value)`` pairs. Module
  level, so that a second evaluation with the same model and options reuses its program."""
  return log_likelihood_ais(model, params, key, xb, **dict(options))


__all__ = ["AISTarget", "AISOptions", "AISResult", "BDMCResult", "annealing_schedule",
           "make_options", "ais", "reverse_ais",
           "bdmc_bounds", "vae_target", "log_likelihood_ais", "bdmc", "evaluate_ais",
           "TARGET_ACCEPTANCE"]
