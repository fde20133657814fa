"""lvmjax.sklearn._common: allow_nan in validate_x (missing values), to_device without compiling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvmjax.sklearn import GaussianMixture
from lvmjax.sklearn import _common
from tests import compile_count


@pytest.mark.parametrize("as_jax", [False, True])
def test_validate_x_allow_nan_lets_nan_through_but_not_inf(as_jax):
  x = np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]])
  wrap = jnp.asarray if as_jax else np.asarray
  out = _common.validate_x(GaussianMixture(), wrap(x.astype(np.float32)), reset=True,
                           allow_nan=True)
  assert np.isnan(np.asarray(out)[0, 1]) and np.asarray(out)[2, 1] == 5.0
  with pytest.raises(ValueError, match="NaN"):
    _common.validate_x(GaussianMixture(), wrap(x.astype(np.float32)), reset=True)
  x[1, 0] = np.inf
  with pytest.raises(ValueError, match="infinity"):
    _common.validate_x(GaussianMixture(), wrap(x.astype(np.float32)), reset=True,
                       allow_nan=True)


def test_to_device_of_numpy_compiles_nothing():
  x = np.arange(37 * 3, dtype=np.float32).reshape(37, 3)  # a shape no other test uses
  with compile_count.count_programs() as programs:
    out = _common.to_device(x)
  assert out.dtype == jnp.float32 and isinstance(out, jax.Array)
  np.testing.assert_array_equal(np.asarray(out), x)
  assert programs[0] == 0  # jnp.asarray of a NumPy array compiled a copy program per shape
