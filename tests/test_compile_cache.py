"""JAX's persistent compilation cache (lvmjax.compile_cache): on for the drop-ins and launchers,
off for the math modules, the user's setting wins. Each case runs in a fresh Python process (the
cache is process-wide JAX state), with a timeout."""
import json
import os

from tests import processes

# A small drop-in fit; prints JAX's cache events and the cache directory JAX ended up with.
_DROP_IN = """
import collections, json
import jax, jax.monitoring
import numpy as np
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
from lvmjax.sklearn import GaussianMixture
x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
GaussianMixture(n_components=2, max_iter=3, init_params="random_from_data", random_state=0).fit(x)
print(json.dumps({"hits": events["/jax/compilation_cache/cache_hits"],
                  "misses": events["/jax/compilation_cache/cache_misses"],
                  "dir": jax.config.jax_compilation_cache_dir}))
"""

# The drop-ins' hook (every fit validates X first) and one small program, without a whole fit.
_HOOK = """
import collections, json
import jax, jax.monitoring, jax.numpy as jnp
import numpy as np
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
from lvmjax.sklearn import GaussianMixture, _common
_common.validate_x(GaussianMixture(), np.ones((4, 2)), reset=True)
jax.jit(lambda a: jnp.sin(a) * 3)(jnp.ones(3)).block_until_ready()
print(json.dumps({"hits": events["/jax/compilation_cache/cache_hits"],
                  "misses": events["/jax/compilation_cache/cache_misses"],
                  "dir": jax.config.jax_compilation_cache_dir}))
"""

# The math layer alone: a gmm.fit leaves JAX's cache settings as they were.
_MATH_ONLY = """
import json
import jax, jax.numpy as jnp
from lvmjax import gmm, kmeans, ppca
params = gmm.GMMParams(jnp.ones(2) / 2, jnp.zeros((2, 2)), jnp.ones(2), "spherical")
jax.jit(gmm.log_marginal)(params, jnp.ones((3, 2))).block_until_ready()
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir,
                  "min_time": jax.config.jax_persistent_cache_min_compile_time_secs}))
"""


def _run(code, tmp_path, **env):
  """``code`` in a fresh Python with its cache under ``tmp_path``; the JSON it prints last."""
  full = processes.environment(drop=("JAX_COMPILATION_CACHE_DIR", "LVMJAX_NO_COMPILE_CACHE"),
                               XDG_CACHE_HOME=str(tmp_path / "xdg"), **env)
  out = processes.python(code, timeout=240, env=full)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _entries(path):
  return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_second_process_loads_the_drop_ins_programs_from_the_cache(tmp_path):
  cache = tmp_path / "xdg" / "lvmjax" / "jax"
  first = _run(_DROP_IN, tmp_path)
  assert first["dir"] == str(cache)
  assert first["misses"] > 0 and first["hits"] == 0
  written = _entries(cache)
  assert len(written) >= first["misses"]  # small programs are cached too
  second = _run(_DROP_IN, tmp_path)
  assert second["misses"] == 0
  assert second["hits"] == first["misses"]
  assert _entries(cache) == written  # nothing compiled anew


def test_users_cache_dir_wins(tmp_path):
  mine = tmp_path / "mine"
  out = _run(_HOOK, tmp_path, JAX_COMPILATION_CACHE_DIR=str(mine),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  assert out["dir"] == str(mine)
  assert _entries(mine)  # JAX's cache on, in the user's directory
  assert not (tmp_path / "xdg" / "lvmjax").exists()


def test_opt_out_variable_leaves_jax_alone(tmp_path):
  assert _run(_HOOK, tmp_path)["misses"] > 0  # the check below can fail
  out = _run(_HOOK, tmp_path / "off", LVMJAX_NO_COMPILE_CACHE="1")
  assert out["dir"] is None and out["hits"] == out["misses"] == 0
  assert not (tmp_path / "off" / "xdg" / "lvmjax").exists()


def test_math_modules_change_no_jax_setting(tmp_path):
  out = _run(_MATH_ONLY, tmp_path)
  assert out == {"dir": None, "min_time": 1.0}
  assert not (tmp_path / "xdg" / "lvmjax").exists()


def test_enable_keeps_a_users_settings(tmp_path):
  code = """
import json, jax
jax.config.update("jax_persistent_cache_min_compile_time_secs", 5.0)
from lvmjax import compile_cache
first = compile_cache.enable()
print(json.dumps({"path": first, "again": compile_cache.enable("/elsewhere"),
                  "min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
                  "min_size": jax.config.jax_persistent_cache_min_entry_size_bytes}))
"""
  out = _run(code, tmp_path)
  assert out == {"path": str(tmp_path / "xdg" / "lvmjax" / "jax"),
                 "again": str(tmp_path / "xdg" / "lvmjax" / "jax"), "min_time": 5.0,
                 "min_size": -1}
  assert oct(os.stat(out["path"]).st_mode & 0o777) == oct(0o700)


def test_launcher_start_turns_it_on_unless_the_user_chose(tmp_path):
  code = """
import json, sys
sys.argv = ["fit_gmm", "--workdir", sys.argv[1]]
from absl import flags
from experiments import common
common.define_flags("gmm_digits.py")
flags.FLAGS(sys.argv)
common.start()
import jax
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir}))
"""
  default = _run(code.replace("sys.argv[1]", repr(str(tmp_path / "w1"))), tmp_path)
  assert default["dir"] == str(tmp_path / "xdg" / "lvmjax" / "jax")
  mine = str(tmp_path / "mine")
  out = _run(code.replace("sys.argv[1]", repr(str(tmp_path / "w2"))), tmp_path,
             JAX_COMPILATION_CACHE_DIR=mine)
  assert out["dir"] == mine


def test_release_programs_empties_the_caches_and_trims_on_glibc():
  import platform  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from lvmjax import compile_cache  # pylint: disable=g-import-not-at-top
  f = jax.jit(lambda x: jnp.cumsum(x) * 2.0)
  before = f(jnp.arange(5.0))
  assert f._cache_size() == 1
  trimmed = compile_cache.release_programs()
  assert f._cache_size() == 0
  assert trimmed == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
  assert jnp.array_equal(f(jnp.arange(5.0)), before)  # recompiled on the next call
