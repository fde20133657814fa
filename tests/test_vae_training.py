"""Tests for lvmjax.vae.training: train_step (jit vs eager, resumption), learning, evaluate."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lvmjax import ppca, vae
from tests import test_vae as tv


def _binary_data(n=256, d=16, seed=0):
  """Noisy copies of 4 binary prototypes: a VAE with a 2-d latent can model them well."""
  rng = np.random.default_rng(seed)
  prototypes = rng.random((4, d)) < 0.5
  x = prototypes[rng.integers(0, 4, n)]
  flips = rng.random((n, d)) < 0.05
  return (x ^ flips).astype(np.uint8)


def _small_model(d=16):
  return vae.VAE(vae.MLPEncoder(2, (32,)), vae.MLPDecoder(d, (32,)), vae.BernoulliLikelihood())


def _copy(tree):
  return jax.tree_util.tree_map(lambda a: jnp.array(np.asarray(a)), tree)


# Slow: the default run checks jit against eager on the multi-step (a scan of these same steps)
# in test_multi_train_step_jit_equals_eager.
@pytest.mark.parametrize("objective,k", [pytest.param("elbo", 2, marks=pytest.mark.slow),
                                         pytest.param("iwae", 3, marks=pytest.mark.slow)])
def test_train_step_jit_equals_eager(objective, k):
  x = _binary_data(n=32)
  model = _small_model()
  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  step = vae.make_train_step(model, opt, objective=objective, num_samples=k)
  jitted = jax.jit(step, donate_argnums=0)
  key = jax.random.key(1)
  s_jit, s_eager = _copy(state), _copy(state)
  s_jit, m_jit = jitted(s_jit, x, key)
  with jax.disable_jit():
    s_eager, m_eager = step(s_eager, x, key)
  assert int(s_jit.step) == int(s_eager.step) == 1
  for a, b in zip(jax.tree_util.tree_leaves(s_jit.params),
                  jax.tree_util.tree_leaves(s_eager.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert set(m_jit) == set(m_eager)
  np.testing.assert_allclose(m_jit["loss"], m_eager["loss"], rtol=1e-5)
  np.testing.assert_allclose(m_jit["loss"], -m_jit["objective"], rtol=1e-6)


def test_resumed_run_draws_the_same_numbers():
  x = _binary_data(n=32)
  model = _small_model()
  opt = optax.adam(1e-2)
  step = vae.jit_train_step(model, opt, objective="elbo")
  key = jax.random.key(3)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  state, _ = step(state, x, key)
  saved = jax.device_get(state)                     # "checkpoint" after step 1
  state, m_run = step(state, x, key)
  resumed, m_resumed = step(jax.device_put(saved), x, key)
  np.testing.assert_array_equal(m_run["loss"], m_resumed["loss"])
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  # and the step number does change the noise
  other, m_other = step(jax.device_put(saved).replace(step=jnp.asarray(7, jnp.int32)), x, key)
  assert float(m_other["loss"]) != float(m_run["loss"])


@pytest.mark.parametrize("objective,k,unroll", [
    pytest.param("elbo", 1, 1, marks=pytest.mark.slow),
    pytest.param("elbo", 2, 2, marks=pytest.mark.slow), ("iwae", 3, True),
    pytest.param("autoencoder", 1, 1, marks=pytest.mark.slow)])
def test_multi_train_step_equals_repeated_steps(objective, k, unroll):
  # float32, jitted both ways: bit-for-bit the same state and metrics, on a stack of batches
  # and on batches picked by indices from a data set
  data = _binary_data(n=64)
  model = _small_model()
  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), model, data, opt)
  key = jax.random.key(1)
  kwargs = {"objective": objective, "num_samples": k}
  indices = np.random.default_rng(0).permutation(64)[:40].reshape(5, 8)
  xs = data[indices]                                               # (5, 8, 16) uint8
  step = vae.jit_train_step(model, opt, **kwargs)
  one_by_one, metrics = _copy(state), []
  for x in xs:
    one_by_one, m = step(one_by_one, x, key)
    metrics.append(m)
  multi = vae.jit_multi_train_step(model, opt, unroll=unroll, **kwargs)
  for args in [(xs, key), (jnp.asarray(data), key, jnp.asarray(indices))]:
    stacked, m_stacked = multi(_copy(state), *args)
    assert int(stacked.step) == 5
    for a, b in zip(jax.tree_util.tree_leaves(one_by_one), jax.tree_util.tree_leaves(stacked)):
      np.testing.assert_array_equal(a, b)
    assert set(m_stacked) == set(metrics[0])
    for name, values in m_stacked.items():
      assert values.shape == (5,)
      np.testing.assert_array_equal(values, np.stack([m[name] for m in metrics]))
  # a run may mix the two: 3 steps in one call, then 2 single steps
  mixed, _ = multi(_copy(state), xs[:3], key)
  for x in xs[3:]:
    mixed, _ = step(mixed, x, key)
  for a, b in zip(jax.tree_util.tree_leaves(one_by_one), jax.tree_util.tree_leaves(mixed)):
    np.testing.assert_array_equal(a, b)


def test_multi_train_step_jit_equals_eager():
  xs = _binary_data(n=48).reshape(3, 16, 16)
  model = _small_model()
  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), model, xs[0], opt)
  multi = vae.make_multi_train_step(model, opt, objective="elbo", num_samples=2)
  key = jax.random.key(1)
  s_jit, m_jit = jax.jit(multi)(_copy(state), xs, key)
  with jax.disable_jit():
    s_eager, m_eager = multi(_copy(state), xs, key)
  for a, b in zip(jax.tree_util.tree_leaves(s_jit), jax.tree_util.tree_leaves(s_eager)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for name in m_jit:
    np.testing.assert_allclose(m_jit[name], m_eager[name], rtol=1e-5)


def test_jit_train_step_options_change_no_value():
  # jit_train_step adds an XLA:CPU option (copy insertion by region analysis): same numbers as a
  # plain jit; and grad_norm is optax's global norm of the gradient
  x = _binary_data(n=32)
  model = _small_model()
  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  key = jax.random.key(1)
  step = vae.make_train_step(model, opt)
  a, m_a = vae.jit_train_step(model, opt)(_copy(state), x, key)
  b, m_b = jax.jit(step, donate_argnums=0)(_copy(state), x, key)
  for u, v in zip(jax.tree_util.tree_leaves((a, m_a)), jax.tree_util.tree_leaves((b, m_b))):
    np.testing.assert_array_equal(u, v)
  loss_fn = lambda p: -jnp.mean(vae.elbo(model, p, jax.random.fold_in(key, 0), x))
  grads = jax.grad(loss_fn)(state.params)
  np.testing.assert_allclose(m_a["grad_norm"], optax.tree.norm(grads), rtol=1e-5)


def _half_beta_elbo(model, params, key, x):
  """A user objective: (model, params, key, x) -> per-point values."""
  return vae.elbo(model, params, key, x, beta=0.5)


@pytest.mark.parametrize("objective", ["elbo", "iwae",
                                       pytest.param("autoencoder", marks=pytest.mark.slow),
                                       pytest.param(_half_beta_elbo, marks=pytest.mark.slow)])
def test_training_raises_the_objective(objective):
  x = _binary_data()
  model = _small_model()
  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  k = 5 if objective == "iwae" else 1
  step = vae.jit_train_step(model, opt, objective=objective, num_samples=k)
  score = jax.jit(lambda p, key: jnp.mean(
      vae.autoencoder_log_likelihood(model, p, x) if objective == "autoencoder"
      else vae.elbo(model, p, key, x, 10)))
  before = float(score(state.params, jax.random.key(9)))
  key = jax.random.key(1)
  for i in range(300):
    state, metrics = step(state, x[(i % 4) * 64:(i % 4 + 1) * 64], key)
  after = float(score(state.params, jax.random.key(9)))
  assert np.isfinite(float(metrics["loss"]))
  # 16 bits per point start near 16 log 2 = 11 nats; the prototypes need far fewer
  assert after > before + 3.0, (before, after)


def test_bfloat16_compute_keeps_float32_params():
  x = _binary_data(n=64)
  model = _small_model()
  opt = optax.adam(1e-3)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  key = jax.random.key(1)
  step32 = vae.jit_train_step(model, opt, objective="elbo")
  step16 = vae.jit_train_step(model, opt, objective="elbo", compute_dtype=jnp.bfloat16)
  s16, m16 = step16(_copy(state), x, key)
  s32, m32 = step32(_copy(state), x, key)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(s16.params))
  assert m16["loss"].dtype == jnp.float32
  np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=0.02)
  assert float(m16["loss"]) != float(m32["loss"])  # it did compute in bfloat16


def test_evaluate_on_exact_model(x64):
  rng = np.random.default_rng(0)
  model = tv._linear_vae()
  params_ppca, params = tv._ppca_and_vae_params(rng)
  x = np.asarray(ppca.sample(jax.random.key(0), params_ppca, 23)[0])
  exact = float(ppca.log_marginal(params_ppca, x).mean())
  res = vae.evaluate(model, params, jax.random.key(1), x, batch_size=10, num_samples_ll=50,
                     iwae_k=(5,), chunk_size=20)
  assert res["num_points"] == 23
  assert res["log_likelihood"] == pytest.approx(exact, rel=1e-9)
  assert res["nll"] == pytest.approx(-exact, rel=1e-9)
  assert res["iwae_5"] == pytest.approx(exact, rel=1e-9)
  assert res["elbo"] == pytest.approx(res["reconstruction"] - res["kl"], rel=1e-9)
  assert res["elbo"] == pytest.approx(exact, abs=0.5)
  kl = float(vae.gaussian_kl(*vae.encode(model, params, x)).mean())
  assert res["kl"] == pytest.approx(kl, rel=1e-9)
  assert res["active_units"] == 2


def test_evaluate_in_blocks_of_batches_adds_up_to_the_whole(x64):
  """What each process does with its block of evaluation batches: batch first_batch + i draws
  from fold_in(key, first_batch + i), so the blocks' sums are the whole set's."""
  model = _small_model()
  x = (np.random.default_rng(0).random((50, 16)) < 0.5).astype(np.float64)
  params = vae.init(jax.random.key(0), model, x[:2])
  key = jax.random.key(4)
  kw = dict(batch_size=10, num_samples_ll=7, iwae_k=(3,), chunk_size=4)
  whole = vae.evaluate(model, params, key, x, **kw)
  first = vae.evaluate(model, params, key, x[:30], first_batch=0, **kw)
  rest = vae.evaluate(model, params, key, x[30:], first_batch=3, **kw)
  for name in ("elbo", "kl", "iwae_3", "log_likelihood"):
    np.testing.assert_allclose((30 * first[name] + 20 * rest[name]) / 50, whole[name],
                               rtol=1e-12, err_msg=name)
  shifted = vae.evaluate(model, params, key, x[30:], first_batch=0, **kw)
  assert shifted["log_likelihood"] != rest["log_likelihood"]  # the keys follow the batch index


def test_map_over_batches_pads_keys_and_orders_the_rows():
  """The evaluation loop of every VAE family: batch i sees fold_in(key, first_batch + i), the
  last batch is padded to one compiled shape and its padding dropped, rows come back in order."""
  x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
  key = jax.random.key(5)
  seen = []

  def batch_fn(k, xb):
    seen.append(xb.shape)
    return {"row": xb, "u": jax.random.uniform(k, (xb.shape[0],))}

  done = []
  out = vae.steps.map_over_batches(batch_fn, key, x, 10, first_batch=2,
                                   progress=lambda i, n: done.append((i, n)))
  assert seen == [(10, 2)] * 3 and done == [(10, 23), (20, 23), (23, 23)]
  np.testing.assert_array_equal(out["row"], x)
  expected = [jax.random.uniform(jax.random.fold_in(key, 2 + i), (10,)) for i in range(3)]
  np.testing.assert_array_equal(out["u"], np.concatenate(expected)[:23])
  sums, n = vae.steps.sum_over_batches(batch_fn, key, x, 10, first_batch=2)
  assert n == 23 and sums["row"] == float(x.sum())


def test_bad_arguments_raise():
  model = _small_model()
  opt = optax.sgd(0.1)
  with pytest.raises(ValueError, match="objective"):
    vae.make_train_step(model, opt, objective="elbow")
  with pytest.raises(ValueError, match="num_samples"):
    vae.make_train_step(model, opt, num_samples=0)
  with pytest.raises(ValueError, match="beta"):
    vae.make_train_step(model, opt, beta=-0.5)
  x = _binary_data(n=8)
  with pytest.raises(ValueError, match="batch axis"):
    vae.create_train_state(jax.random.key(0), model, x[0], opt)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  with pytest.raises(ValueError, match="shape"):
    vae.jit_train_step(model, opt)(state, np.zeros((8, 9), np.float32), jax.random.key(0))
  with pytest.raises(ValueError, match="num_samples_ll"):
    vae.evaluate(model, state.params, jax.random.key(0), x, num_samples_ll=-1)


def test_train_steps_give_the_numbers_of_the_if_elif_objectives():
  # float32 losses of 3 jitted steps, as the implementation before the objective registry and
  # the pluggable prior computed them (commit ab14552; printed with float.hex)
  model = vae.VAE(vae.MLPEncoder(3, (8,)), vae.MLPDecoder(6, (8,)), vae.BernoulliLikelihood())
  x = (np.random.default_rng(20).random((5, 6)) < 0.5).astype(np.float32)
  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  old = {"elbo": ["0x1.5228860000000p+2", "0x1.27242e0000000p+2", "0x1.24a3d60000000p+2"],
         "iwae": ["0x1.f1078e0000000p+1", "0x1.08f1800000000p+2", "0x1.0a36ce0000000p+2"]}
  for objective, k in (("elbo", 2), ("iwae", 3)):
    step = vae.jit_train_step(model, opt, objective=objective, num_samples=k)
    s, losses = _copy(state), []
    for _ in range(3):
      s, m = step(s, x, jax.random.key(5))
      losses.append(float(m["loss"]))
    np.testing.assert_allclose(losses, [float.fromhex(h) for h in old[objective]], rtol=1e-6)


def test_objective_callable_and_registry_entry_equal_the_named_objective(monkeypatch):
  x = _binary_data(n=32)
  model = _small_model()
  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  key = jax.random.key(1)
  assert tuple(vae.OBJECTIVES) == ("elbo", "iwae", "autoencoder", "vade")
  named, m_named = vae.jit_train_step(model, opt, objective="elbo", beta=0.5)(_copy(state), x, key)
  custom, m_custom = vae.jit_train_step(model, opt, objective=_half_beta_elbo)(
      _copy(state), x, key)
  assert set(m_custom) == {"loss", "objective", "grad_norm"}
  np.testing.assert_allclose(m_custom["loss"], m_named["loss"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(custom), jax.tree.leaves(named)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # a name added to the registry
  monkeypatch.setitem(vae.OBJECTIVES, "half_elbo",
                      lambda model, params, key, x, **options: (_half_beta_elbo(
                          model, params, key, x), {}))
  registered, m_reg = vae.jit_train_step(model, opt, objective="half_elbo")(
      _copy(state), x, key)
  np.testing.assert_allclose(m_reg["loss"], m_named["loss"], rtol=1e-6)


def test_gaussian_prior_is_trained_with_the_networks():
  x = _binary_data(n=64)
  model = vae.VAE(vae.MLPEncoder(2, (32,)), vae.MLPDecoder(16, (32,)), vae.BernoulliLikelihood(),
                  prior=vae.GaussianPrior())
  opt = optax.adam(5e-2)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  prior0 = _copy(state.params["params"]["prior"])
  np.testing.assert_array_equal(prior0["mean"], 0.0)  # starts at N(0, I)
  step = vae.jit_train_step(model, opt, objective="elbo")
  for i in range(5):
    state, metrics = step(state, x, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["kl"]) >= 0.0
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), state.params["params"]["prior"],
                       prior0)
  assert moved["mean"] > 1e-3 and moved["log_scale"] > 1e-3, moved
  res = vae.evaluate(model, state.params, jax.random.key(2), x, batch_size=32, num_samples_ll=10)
  assert res["elbo"] <= res["log_likelihood"] + 1.0 and np.isfinite(res["log_likelihood"])


def test_evaluate_autoencoder_figures(x64):
  model = _small_model()
  x = (np.random.default_rng(0).random((25, 16)) < 0.5).astype(np.float64)
  params = vae.init(jax.random.key(0), model, x[:2])
  res = vae.evaluate(model, params, jax.random.key(4), x, batch_size=10, autoencoder=True)
  assert set(res) == {"reconstruction_log_likelihood", "active_units", "num_points"}
  np.testing.assert_allclose(res["reconstruction_log_likelihood"],
                             np.mean(vae.autoencoder_log_likelihood(model, params, x)), rtol=1e-12)
  assert res["active_units"] == int(vae.active_units(model, params, x)[0])
  assert res["num_points"] == 25


def test_beta_schedule_is_the_kl_weight_of_each_step():
  """A schedule beta(step) (KL warm-up) gives, at each step, the step of that constant beta."""
  x = _binary_data(n=32)
  model = _small_model()
  opt = optax.adam(1e-2)
  state = vae.create_train_state(jax.random.key(0), model, x, opt)
  key = jax.random.key(1)
  warmup = optax.linear_schedule(0.0, 1.0, 4)
  scheduled = vae.jit_train_step(model, opt, beta=warmup)
  s = _copy(state)
  for step, beta in enumerate([0.0, 0.25, 0.5]):
    fixed, m_fixed = vae.jit_train_step(model, opt, beta=beta)(_copy(s), x, key)
    s, m = scheduled(s, x, key)
    assert float(m["beta"]) == beta
    np.testing.assert_allclose(m["loss"], m_fixed["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(fixed.params)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(s.step) == step + 1
