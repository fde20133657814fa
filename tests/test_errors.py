"""Errors that stop at the user's mistake: a ValueError at the API's door that names the fix."""
import pathlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvmjax import _checks
from lvmjax import gmm
from lvmjax import kmeans

REPO = pathlib.Path(__file__).resolve().parents[1]
KEY_FIX = r"jax\.random\.key\(0\)"


# ---------------------------------------------------------------------------------------------
# _checks: keys and data dtypes

@pytest.mark.parametrize("bad", [0, 3, None, 1.5, "key", np.zeros(2), np.zeros(3, np.uint32),
                                 np.zeros((2, 2), np.uint32)])
def test_check_key_refuses_what_is_not_one_key(bad):
  with pytest.raises(ValueError, match=KEY_FIX):
    _checks.check_key(bad)


def test_check_key_accepts_typed_and_legacy_keys_also_under_jit():
  _checks.check_key(jax.random.key(0))
  _checks.check_key(jax.random.PRNGKey(0))
  jax.jit(lambda k: _checks.check_key(k))(jax.random.key(1))  # tracers: shape and dtype suffice
  jax.vmap(lambda k: _checks.check_key(k))(jax.random.split(jax.random.key(0), 3))
  _checks.check_key(None, allow_none=True)
  with pytest.raises(ValueError, match=r"one PRNG key, got an array of keys of shape \(3,\)"):
    _checks.check_key(jax.random.split(jax.random.key(0), 3))


def test_check_float_dtype():
  for dtype in (np.float16, jnp.bfloat16):
    with pytest.raises(ValueError, match=r"x\.astype\(np\.float32\)"):
      _checks.check_float_dtype(jnp.zeros(3, dtype))
  with pytest.raises(ValueError, match="complex"):
    _checks.check_float_dtype(np.zeros(3, np.complex64))
  default = np.dtype(jnp.zeros(0).dtype)  # float32, float64 under x64
  for dtype in (np.int8, np.uint8, np.int64, bool):
    assert _checks.check_float_dtype(np.zeros(3, dtype)) == default
  assert _checks.check_float_dtype(np.zeros(3, np.float32)) == np.float32


# ---------------------------------------------------------------------------------------------
# The door of every public fit function

def _fits():
  from lvmjax import ppca  # pylint: disable=g-import-not-at-top
  from lvmjax.kmeans import minibatch  # pylint: disable=g-import-not-at-top
  return {
      "gmm.fit": lambda k, x: gmm.fit(k, x, 2, max_iter=2),
      "gmm.streaming.fit": lambda k, x: gmm.streaming.fit(k, x, 2, max_iter=2, batch_size=32),
      "gmm.online.fit": lambda k, x: gmm.online.fit(k, x, 2, batch_size=32),
      "kmeans.fit": lambda k, x: kmeans.fit(k, x, 2, max_iter=2),
      "kmeans.minibatch.fit": lambda k, x: minibatch.fit(k, x, 2, batch_size=32),
      "ppca.fit_em": lambda k, x: ppca.fit_em(k, x, 1, max_iter=2),
  }


_FIT_NAMES = ["gmm.fit", "gmm.streaming.fit", "gmm.online.fit", "kmeans.fit",
              "kmeans.minibatch.fit", "ppca.fit_em"]
_X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)


@pytest.mark.parametrize("name", _FIT_NAMES)
@pytest.mark.parametrize("bad_key", [0, np.zeros(2)])
def test_fit_with_an_int_where_a_key_belongs(name, bad_key):
  with pytest.raises(ValueError, match=KEY_FIX):
    _fits()[name](bad_key, _X)


@pytest.mark.parametrize("name", _FIT_NAMES + ["ppca.fit_ppca"])
@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_fit_with_16_bit_floats_says_to_convert(name, dtype):
  from lvmjax import ppca  # pylint: disable=g-import-not-at-top
  fit = (lambda k, x: ppca.fit_ppca(x, 1)) if name == "ppca.fit_ppca" else _fits()[name]
  with pytest.raises(ValueError, match=r"astype\(np\.float32\)"):
    fit(jax.random.key(0), jnp.asarray(_X, dtype))


@pytest.mark.parametrize("name", _FIT_NAMES + ["ppca.fit_ppca"])
def test_float64_data_without_x64_warns_that_it_is_computed_in_float32(name):
  from lvmjax import ppca  # pylint: disable=g-import-not-at-top
  fit = (lambda k, x: ppca.fit_ppca(x, 1)) if name == "ppca.fit_ppca" else _fits()[name]
  x64 = _X.astype(np.float64)
  fix = r"float64 but JAX's x64 mode is off.*astype\(np\.float32\)"
  with pytest.warns(UserWarning, match=fix) as got:
    fit(jax.random.key(0), x64)
  # Pointed at the caller's line (here), not at lvmjax's internals.
  assert {pathlib.Path(w.filename).name for w in got if "x64 mode" in str(w.message)} == {
      pathlib.Path(__file__).name}
  for data, enable in ((_X, False), (x64, True)):  # float32 data, or x64 on: nothing to say
    with jax.enable_x64(enable), warnings.catch_warnings():
      warnings.filterwarnings("error", message=".*x64 mode is off")
      fit(jax.random.key(0), data)


def test_data_on_an_accelerator_is_checked_where_it_lives(monkeypatch):
  # Arrays on a GPU/TPU are checked for NaN on the device (one count comes back) rather than
  # copied whole to the host. No accelerator here: the JAX arrays are treated as if off the host,
  # and the device counts must find what NumPy finds, with the same messages at the fit's door.
  calls = []
  nonfinite, nan = _checks._count_nonfinite, _checks.count_nan
  monkeypatch.setattr(_checks, "off_host", lambda x: isinstance(x, jax.Array))
  monkeypatch.setattr(_checks, "_count_nonfinite", lambda x: calls.append("finite") or nonfinite(x))
  monkeypatch.setattr(_checks, "count_nan", lambda x: calls.append("nan") or nan(x))
  x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
  x[[3, 7], [0, 2]] = [np.nan, np.nan]
  for data in (jnp.asarray(x), x):  # on the "device", then NumPy data checked on the host
    with pytest.raises(ValueError, match=r"x contains 2 NaN value\(s\)\. If they are missing"):
      gmm.fit(jax.random.key(0), data, 2)
    assert calls == ["nan"]
  x[7, 2] = np.inf
  for data in (jnp.asarray(x), x):
    with pytest.raises(ValueError, match=r"x contains 2 NaN or infinite value\(s\)"):
      _checks.check_data(data)
  assert calls == ["nan", "finite"]
  x[3, 0] = x[7, 2] = 0.0
  _checks.check_data(jnp.asarray(x))
  gmm.fit(jax.random.key(0), jnp.asarray(x), 2, max_iter=1)
  assert calls == ["nan", "finite", "finite", "nan", "finite"]


def test_integer_data_is_converted_as_documented():
  x = (np.abs(_X) * 10).astype(np.int32)
  res = kmeans.fit(jax.random.key(0), x, 2, max_iter=3)
  assert res.centroids.dtype == jnp.zeros(0).dtype  # the default float dtype


@pytest.mark.parametrize("which", ["init", "create_train_state"])
def test_vae_with_an_int_where_a_key_belongs(which):
  from lvmjax import vae  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  model = vae.VAE(vae.MLPEncoder(2, (8,)), vae.MLPDecoder(3, (8,)), vae.GaussianLikelihood())
  with pytest.raises(ValueError, match=KEY_FIX):
    if which == "init":
      vae.init(0, model, _X[:2])
    else:
      vae.create_train_state(0, model, _X[:2], optax.adam(1e-3))


# ---------------------------------------------------------------------------------------------
# gmm.check_params, and the density functions with concrete params

def _params(weights=(0.5, 0.5), covs=None, kind="full"):
  means = jnp.array([[0.0, 0.0], [3.0, 3.0]])
  if covs is None:
    covs = {"full": jnp.stack([jnp.eye(2)] * 2), "tied": jnp.eye(2), "diag": jnp.ones((2, 2)),
            "spherical": jnp.ones(2)}[kind]
  return gmm.GMMParams(jnp.asarray(weights), means, jnp.asarray(covs), kind)


@pytest.mark.parametrize("params,match", [
    (_params(weights=(0.5, 0.7)), "sum to one"),
    (_params(weights=(1.2, -0.2)), "non-negative"),
    (_params(weights=(0.5, np.nan)), "finite"),
    (_params(covs=np.array([1.0, -1.0]), kind="spherical"), "strictly positive"),
    (_params(covs=np.array([[1.0, 1.0], [1.0, 0.0]]), kind="diag"), "strictly positive"),
    (_params(covs=np.stack([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])), "not positive definite"),
    (_params(covs=np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]])), "not symmetric"),
    (_params(covs=-np.eye(2), kind="tied"), "not positive definite"),
    (_params(weights=(0.2, 0.3, 0.5)), r"weights must have shape \(K,\) = \(2,\)"),
    (_params(covs=np.ones(3), kind="spherical"), r"must have shape \(2,\)"),
    (_params(covs=np.stack([np.eye(3)] * 2)), r"must have shape \(2, 2, 2\)"),
])
def test_check_params_catches_invalid_mixtures(params, match):
  with pytest.raises(ValueError, match=match):
    gmm.check_params(params)


def test_check_params_accepts_valid_mixtures():
  for kind in gmm.COVARIANCE_TYPES:
    gmm.check_params(_params(kind=kind), 2)
  with pytest.raises(ValueError, match="data has 3 columns"):
    gmm.check_params(_params(), 3)


@pytest.mark.parametrize("fn", ["log_joint", "log_marginal", "posterior", "map_latent"])
def test_density_functions_refuse_invalid_concrete_params(fn):
  x = np.zeros((4, 2))
  with pytest.raises(ValueError, match="sum to one"):
    getattr(gmm, fn)(_params(weights=(0.5, 0.7)), x)
  with pytest.raises(ValueError, match="strictly positive"):
    getattr(gmm, fn)(_params(covs=np.array([1.0, -1.0]), kind="spherical"), x)
  # Under a user's jit the values are not inspected (traced), and valid params still work.
  assert jax.jit(getattr(gmm, fn))(_params(weights=(0.5, 0.7)), x).shape[0] == 4
  assert getattr(gmm, fn)(_params(), x).shape[0] == 4


def test_sample_and_fit_init_refuse_invalid_params():
  with pytest.raises(ValueError, match="sum to one"):
    gmm.sample_given(jax.random.key(0), _params(weights=(0.5, 0.7)), jnp.array([0, 1]))
  x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
  with pytest.raises(ValueError, match="not positive definite"):
    gmm.fit(jax.random.key(0), x, 2, init=_params(
        covs=np.stack([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])))


# ---------------------------------------------------------------------------------------------
# Files: a corrupt .npz; messages point to things that exist

def _broken_mnist(data_dir, how):
  rng = np.random.default_rng(0)
  path = data_dir / "mnist.npz"
  np.savez_compressed(path, x_train=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
                      y_train=rng.integers(0, 10, 50, dtype=np.uint8),
                      x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
                      y_test=rng.integers(0, 10, 20, dtype=np.uint8))
  raw = bytearray(path.read_bytes())
  if how == "truncated":
    raw = raw[:len(raw) // 2]
  else:  # a damaged byte range inside the first member
    raw[200:260] = bytes(60)
  path.write_bytes(bytes(raw))
  return path


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
@pytest.mark.parametrize("rows", [None, slice(5, 10)])
def test_a_broken_npz_names_the_file_and_the_fix(tmp_path, monkeypatch, how, rows):
  from lvmjax import data  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("LVMJAX_NO_DOWNLOAD", "1")
  path = _broken_mnist(tmp_path, how)
  with pytest.raises(ValueError) as info:
    data.load_dataset("mnist", "train", rows=rows, data_dir=tmp_path)
  msg = str(info.value)
  assert str(path) in msg and "not a readable .npz" in msg and "Delete it" in msg


def test_messages_and_docstrings_point_only_to_files_that_exist():
  texts = {p: p.read_text() for d in ("lvmjax", "experiments", "configs")
           for p in (REPO / d).rglob("*.py")}
  for path, text in texts.items():
    rel = path.relative_to(REPO)
    for machine_path in re.findall(r"(?<![\w.])/(?:work|home|Users)/[\w./-]+", text):
      pytest.fail(f"{rel} names a path of a development machine: {machine_path}")
    for name in set(re.findall(r"\b[\w./-]*[A-Za-z_]\.md\b", text)):
      base = pathlib.PurePosixPath(name).name
      assert (REPO / name).exists() or (path.parent / name).exists() or any(
          REPO.glob(f"*/{base}")) or (REPO / base).exists(), f"{rel} points to {name}, which " \
          "is not in the repository"
    assert not re.search(r"data's README|data README", text), f"{rel} points to a data README"
