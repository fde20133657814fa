"""The one iteration skeleton (lvmjax.fixed_point): eager == jit, resume == uninterrupted,
host loop == device loop, a step's own convergence rule, callbacks, vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvmjax import fixed_point as fp


def _newton(x):
  """Newton's iteration for sqrt(2); the monitored value is the iterate."""
  new = 0.5 * (x + 2.0 / x)
  return new, new


def _ema(state):
  """A contraction with a known trajectory: v_t = 1 - 2^-(t+1), converges by |dv| < tol."""
  v = 0.5 * (state + 1.0)
  return v, v


def test_stops_by_tol_and_records_history():
  out = fp.fixed_point(_ema, jnp.float32(0.0), tol=1e-3, max_iter=50)
  n = int(out.n_iter)
  want = 1.0 - 0.5 ** np.arange(1, n + 1)
  np.testing.assert_allclose(out.history[:n], want, rtol=1e-6)
  assert np.isnan(out.history[n:]).all() and out.history.shape == (50,)
  assert bool(out.converged)
  # the first step whose change is below tol: 2^-(t+1) < 1e-3 first at t = 9 (n_iter 10)
  assert n == 10
  assert float(out.value) == float(out.history[n - 1]) == float(out.iterate)


def test_eager_equals_jit():
  eager = fp.fixed_point(_newton, jnp.float32(3.0), tol=1e-6, max_iter=30)
  jitted = jax.jit(lambda x: fp.fixed_point(_newton, x, tol=1e-6, max_iter=30))(jnp.float32(3.0))
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_array_equal(a, b)
  assert int(eager.n_iter) < 30 and bool(eager.converged)


def test_host_loop_equals_device_loop_and_sees_concrete_values():
  seen = []

  def callback(state):
    seen.append((int(state.n_iter), float(state.value)))  # concrete on the host

  host = fp.fixed_point(_newton, jnp.float32(3.0), tol=1e-6, max_iter=30,
                        while_loop=fp.host_while_loop, callback=callback)
  device = fp.fixed_point(_newton, jnp.float32(3.0), tol=1e-6, max_iter=30)
  for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(device)):
    np.testing.assert_array_equal(a, b)
  assert [i for i, _ in seen] == list(range(1, int(host.n_iter) + 1))
  np.testing.assert_array_equal([v for _, v in seen], host.history[:int(host.n_iter)])


@pytest.mark.parametrize("loop", [jax.lax.while_loop, fp.host_while_loop])
@pytest.mark.parametrize("split", [1, 3, 6])
def test_resume_equals_uninterrupted(loop, split):
  full = fp.fixed_point(_ema, jnp.float32(0.0), tol=1e-4, max_iter=20, while_loop=loop)
  part = fp.fixed_point(_ema, jnp.float32(0.0), tol=1e-4, max_iter=split, while_loop=loop)
  assert int(part.n_iter) == split and not bool(part.converged)
  assert part.history.shape == (split,)
  rest = fp.fixed_point(_ema, part, tol=1e-4, max_iter=20, while_loop=loop)
  for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves(full)):
    np.testing.assert_array_equal(a, b)


def test_resume_under_jit_and_converged_state_is_final():
  run = jax.jit(lambda s: fp.fixed_point(_ema, s, tol=1e-4, max_iter=20))
  part = fp.fixed_point(_ema, jnp.float32(0.0), tol=1e-4, max_iter=4)
  full = fp.fixed_point(_ema, jnp.float32(0.0), tol=1e-4, max_iter=20)
  resumed = run(part)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(full)):
    np.testing.assert_array_equal(a, b)
  again = run(resumed)  # converged: nothing more runs
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(full)):
    np.testing.assert_array_equal(a, b)


def test_step_with_its_own_convergence_rule():
  # Count up by one; "converged" when the count reaches 5, whatever tol says.
  def step(c):
    c = c + 1
    return c, c.astype(jnp.float32), c >= 5

  out = fp.fixed_point(step, jnp.int32(0), tol=1e9, max_iter=10)
  assert int(out.iterate) == 5 and int(out.n_iter) == 5 and bool(out.converged)
  np.testing.assert_array_equal(out.history[:5], [1, 2, 3, 4, 5])


def test_max_iter_zero_and_limit():
  out = fp.fixed_point(_ema, jnp.float32(0.0), tol=0.0, max_iter=0)
  assert int(out.n_iter) == 0 and not bool(out.converged) and out.history.shape == (0,)
  assert float(out.iterate) == 0.0 and float(out.value) == -np.inf
  out = fp.fixed_point(_ema, jnp.float32(0.0), tol=0.0, max_iter=7)
  assert int(out.n_iter) == 7 and not bool(out.converged)


def test_callback_stops_the_loop():
  stop = lambda s: s.n_iter >= 3  # pylint: disable=unnecessary-lambda-assignment
  for loop in (jax.lax.while_loop, fp.host_while_loop):
    out = fp.fixed_point(_ema, jnp.float32(0.0), tol=0.0, max_iter=10, while_loop=loop,
                         callback=stop)
    assert int(out.n_iter) == 3 and not bool(out.converged)


def test_vmap_over_starts_and_traced_tol():
  run = jax.vmap(lambda x, tol: fp.fixed_point(_newton, x, tol=tol, max_iter=40))
  x0 = jnp.array([0.5, 30.0, 30.0], jnp.float32)
  tols = jnp.array([1e-6, 1e-6, 1e-1], jnp.float32)
  out = run(x0, tols)
  for i in range(3):
    one = fp.fixed_point(_newton, x0[i], tol=tols[i], max_iter=40)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(jax.tree.map(lambda a: a[i], out))):
      np.testing.assert_array_equal(a, b)
  assert int(out.n_iter[2]) < int(out.n_iter[1])


def _sqrt_fits(driver, a, b, start, max_iter=60):
  """Newton for sqrt(a) from ``start``, closing over a batched float ``a`` and a batched int
  ``b`` (a tracer of another dtype must be hoisted too) and an unbatched array."""
  offset = jnp.arange(2.0)  # unbatched closed-over constant

  def step(state):
    x, count = state
    new = 0.5 * (x + a / x) + 0 * offset.sum() + 0 * b
    return (new, count + b), new

  return fp.fixed_point(step, (start, jnp.int32(0)), tol=1e-5, max_iter=max_iter,
                        while_loop=driver)


@pytest.mark.parametrize("slots", [1, 3, 8, None])
def test_refilling_vmap_equals_lax_while_loop_member_by_member(x64, slots):
  # Iteration counts from 2 to max_iter (a start already converged, some cut at max_iter=12):
  # with few lanes every lane is refilled many times; each member must get exactly the result
  # of its own lax.while_loop.
  rng = np.random.default_rng(0)
  num = 37
  a = rng.uniform(0.5, 1e8, num)
  a[5] = 1.0
  b = rng.integers(1, 4, num).astype(np.int32)
  start = np.sqrt(a) * 10 ** rng.uniform(-4, 4, num)  # near to far from the root
  start[5] = 1.0  # already the root: converged after two steps
  driver = lambda c, f, i: fp.refilling_while_loop(c, f, i, slots=slots)  # pylint: disable=unnecessary-lambda-assignment
  for max_iter in (60, 12):
    run = lambda d: jax.jit(jax.vmap(lambda a, b, s: _sqrt_fits(d, a, b, s, max_iter)))(a, b, start)  # pylint: disable=unnecessary-lambda-assignment,cell-var-from-loop
    ours, ref = run(driver), run(jax.lax.while_loop)
    for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
      np.testing.assert_array_equal(x, y)
    n_iter = np.asarray(ref.n_iter)
    assert n_iter.min() == 2 and len(set(n_iter.tolist())) > 5
  assert np.any(~np.asarray(ref.converged))  # max_iter=12 cut some members short


def test_refilling_unbatched_nested_and_broadcast(x64):
  a = jnp.asarray(np.random.default_rng(1).uniform(1.0, 1e6, (6, 5)))
  b = jnp.ones((6, 5), jnp.int32)
  ref = jax.vmap(jax.vmap(lambda a, b: _sqrt_fits(jax.lax.while_loop, a, b, 1.0)))(a, b)
  # vmap of vmap: the inner batches of 5 run as lanes of a refilling outer loop of 2 lanes.
  driver = lambda c, f, i: fp.refilling_while_loop(c, f, i, slots=2)  # pylint: disable=unnecessary-lambda-assignment
  ours = jax.jit(jax.vmap(jax.vmap(lambda a, b: _sqrt_fits(driver, a, b, 1.0))))(a, b)
  for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(x, y)
  # Unbatched it is lax.while_loop; a batched start with unbatched data is broadcast.
  one = _sqrt_fits(None, a[0, 0], b[0, 0], 1.0)
  np.testing.assert_array_equal(one.iterate[0], ref.iterate[0][0, 0])
  starts = jnp.asarray([1.0, 10.0, 1e3, 5.0])
  many = jax.vmap(lambda s: _sqrt_fits(driver, a[0, 0], b[0, 0], s))(starts)
  np.testing.assert_allclose(many.iterate[0], jnp.sqrt(a[0, 0]), rtol=1e-12)
  assert len(set(np.asarray(many.n_iter).tolist())) > 1


def test_bad_arguments():
  with pytest.raises(ValueError, match="max_iter"):
    fp.fixed_point(_ema, jnp.float32(0.0), tol=0.0, max_iter=-1)
  part = fp.fixed_point(_ema, jnp.float32(0.0), tol=0.0, max_iter=5)
  with pytest.raises(ValueError, match="larger max_iter"):
    fp.fixed_point(_ema, part, tol=0.0, max_iter=3)


def test_host_step_needs_no_tracing():
  calls = []

  def step(x):  # a host program: converts to float, so it cannot be traced
    calls.append(float(x))
    return jnp.float32(0.5 * (float(x) + 1.0)), jnp.float32(0.5 * (float(x) + 1.0))

  out = fp.fixed_point(step, jnp.float32(0.0), tol=1e-3, max_iter=50,
                       while_loop=fp.host_while_loop, dtype=jnp.float32)
  assert int(out.n_iter) == 10 == len(calls)
