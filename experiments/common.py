"""Flags and start-up shared by the launchers in ``experiments/``.

Every launcher takes ``--config`` (an ``ml_collections`` config file, with ``--config.key=value``
overrides), ``--workdir``, ``--quiet`` and the multi-host flags ``--coordinator_address``,
``--num_processes``, ``--process_id`` (passed to ``jax.distributed.initialize``; omit them on one
machine) or ``--distributed_auto`` (let JAX detect a Cloud TPU / SLURM cluster), and
``--cpu_devices`` (0: one JAX device per CPU core, so that a fit uses every core).

:func:`start` turns on JAX's persistent compilation cache (`lvmjax.compile_cache.enable`), so a
second run with the same shapes loads its compiled programs instead of compiling them; the
user's own ``JAX_COMPILATION_CACHE_DIR``, or ``LVMJAX_NO_COMPILE_CACHE=1``, wins.

Errors that are the user's (an unknown or badly typed config field, a config file that does not
load, missing data, a bad workdir, a bad value caught by the library's checks: ``ValueError``,
``OSError``, flag errors, a non-finite loss) end the launcher with one message on stderr, the
closest valid field name where one was mistyped, and exit status 1 or 2, without a traceback;
``--debug`` shows the traceback. A start that fails leaves no empty workdir behind.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import shutil
import sys
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")

#: Exit status of a launcher stopped by a command-line mistake found before parsing finished.
USAGE_EXIT_CODE = 2

# The workdir of the current start: its path and the topmost directory this start created.
# (Also the launcher's default config file, for messages.)
_WORKDIR: dict[str, str | None] = {"path": None, "created": None, "default_config": None}


def ensure_importable() -> None:
  """Puts the repository root on ``sys.path`` (for ``python experiments/x.py`` from a checkout)."""
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def _define_debug_flag() -> None:
  """``--debug``, for every launcher that imports this module (also those with their own flags)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "debug" not in flags.FLAGS:
    flags.DEFINE_bool("debug", False, "On an error, show the full Python traceback instead of a "
                      "one-line message.")
  _show_in_helpshort(["debug"])


def define_ais_flags() -> None:
  """The AIS options (``--ais_steps``, ``--ais_chains``, ``--ais_leapfrog``, ``--ais_init``,
  ``--ais_step_size``) of the launchers that estimate log p(x) by AIS; :func:`ais_options` reads
  them."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_integer("ais_steps", 1000, "AIS: intermediate distributions (HMC transitions).")
  flags.DEFINE_integer("ais_chains", 16, "AIS: chains per point.")
  flags.DEFINE_integer("ais_leapfrog", 10, "AIS: leapfrog steps per HMC transition.")
  flags.DEFINE_enum("ais_init", "prior", ["prior", "encoder"],
                    "AIS: anneal from p(z) or q(z|x).")
  flags.DEFINE_float("ais_step_size", 0.05, "AIS: initial step size (adapted towards 0.65 "
                     "acceptance per chain).")


def ais_options(f: Any) -> dict:
  """The keyword arguments of :func:`lvmjax.vae.log_likelihood_ais` from the flags of
  :func:`define_ais_flags` (``f``: ``absl.flags.FLAGS``)."""
  return dict(num_steps=f.ais_steps, num_chains=f.ais_chains, num_leapfrog=f.ais_leapfrog,
              init=f.ais_init, step_size=f.ais_step_size)


def _show_in_helpshort(names) -> None:
  """Makes flags defined here key flags of the launcher, so that ``--helpshort`` lists them."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  for name in names:
    if name in flags.FLAGS:
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def define_flags(default_config: str):
  """Defines the common flags; ``default_config`` is a file name in ``configs/``.

  A ``--config.<field>=...`` that names no field of the config stops the launcher here with the
  closest valid field name (no traceback unless ``--debug``).

  Returns:
    The config flag holder.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  install_error_handler()
  default_path = os.path.join(CONFIG_DIR, default_config)
  _WORKDIR["default_config"] = os.path.relpath(default_path, REPO_ROOT)
  # ml_collections reports a config that does not load, or an override of a field it does not
  # have, with a traceback (or two); say it in one line, with the field the user probably meant.
  problem = config_argument_problem(sys.argv[1:], default_path)
  if problem is not None and not _debug_requested():
    _fail(problem)
  holder = config_flags.DEFINE_config_file(
      "config", default_path,
      "Config file (configs/*.py), optionally with a variant: configs/x.py:smoke. Override "
      "fields with --config.<field>=<value>.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures. A "
                      "workdir with a checkpoint of the same config resumes from it.")
  flags.DEFINE_bool("quiet", False, "No progress display.")
  flags.DEFINE_string("coordinator_address", None,
                      "Multi-host: host:port of process 0 (jax.distributed.initialize).")
  flags.DEFINE_integer("num_processes", None, "Multi-host: total number of processes.")
  flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")
  flags.DEFINE_bool("distributed_auto", False,
                    "Multi-host: let jax.distributed.initialize() detect the cluster.")
  flags.DEFINE_integer("cpu_devices", 1,
                       "Host CPU devices for JAX (lvmjax.sharding.use_cpu_cores); 0: one per core. "
                       "With more than one device the fit runs data-parallel over them, which "
                       "uses every core of a CPU for EM and K-means (1: one device).")
  _define_debug_flag()
  _show_in_helpshort(["config", "workdir", "quiet", "cpu_devices", "coordinator_address",
                      "num_processes", "process_id", "distributed_auto", "debug"])
  return holder


def config_fields(config: Any, prefix: str = "") -> list[str]:
  """Every field of a ``ConfigDict`` as a dotted path (``"synthetic.seed"``), nested ones too."""
  names = []
  for key, value in config.items():
    name = prefix + key
    names.append(name)
    if hasattr(value, "items") and not isinstance(value, str):
      names += config_fields(value, name + ".")
  return names


def _config_argument(argv) -> str | None:
  """The value of ``--config`` in ``argv`` (``--config=x`` or ``--config x``), else None."""
  for i, arg in enumerate(argv):
    if arg.startswith(("--config=", "-config=")):
      return arg.split("=", 1)[1]
    if arg in ("--config", "-config") and i + 1 < len(argv):
      return argv[i + 1]
  return None


def load_config(spec: str) -> Any:
  """Loads ``path[:variant]`` as ``--config`` does: the file's ``get_config(variant)``."""
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_lvmjax_launcher_config", path)
  if module_spec is None or not os.path.exists(path):
    raise FileNotFoundError(f"Config file {path} does not exist (--config={spec}).")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def config_argument_problem(argv, default_config_path: str) -> str | None:
  """What is wrong with ``--config`` and its ``--config.<field>`` overrides in ``argv``, or None.

  A config file that does not load is named with its error; an override of a field the config
  does not have is named with the closest valid field (``difflib``) and the list of fields.
  """
  spec = _config_argument(argv) or default_config_path
  try:
    config = load_config(spec)
  except FileNotFoundError:
    return None  # ml_collections resolves paths its own way; it reports a file it cannot find
  except Exception as e:  # pylint: disable=broad-except
    return (f"The config file {spec} could not be loaded ({type(e).__name__}: "
            f"{str(e).rstrip('.')}). Pass --config=PATH or --config=PATH:VARIANT with a file of "
            "configs/.")
  fields = config_fields(config)
  lines = []
  for arg in argv:
    if not arg.startswith(("--config.", "-config.")):
      continue
    name = arg.split("config.", 1)[1].split("=", 1)[0]
    if name in fields:
      continue
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    guess = f" Did you mean --config.{close[0]}?" if close else ""
    lines.append(f"Unknown config field {name!r} in {arg}.{guess}")
  if not lines:
    return None
  top = sorted(f for f in fields if "." not in f)
  return " ".join(lines) + f" The fields of {spec} are: {', '.join(top)}."


def _debug_requested() -> bool:
  """``--debug`` was given (read from the parsed flags, else from the command line)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if flags.FLAGS.is_parsed() and "debug" in flags.FLAGS:
    return bool(flags.FLAGS.debug)
  return any(a in ("--debug", "-debug", "--debug=true", "--debug=True", "--debug=1")
             for a in sys.argv[1:])


def _is_users_error(exc: BaseException) -> bool:
  """Errors whose message says what the user should change: no traceback for these."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return (isinstance(exc, (ValueError, OSError, flags.Error, FloatingPointError))
          or _missing_config_field(exc) is not None)


def _missing_config_field(exc: BaseException) -> str | None:
  """The field name when ``exc`` is a ``ConfigDict`` lookup of a field the config lacks."""
  if not isinstance(exc, (AttributeError, KeyError)) or exc.__traceback__ is None:
    return None
  tb = exc.__traceback__
  while tb.tb_next is not None:
    tb = tb.tb_next
  if "ml_collections" not in tb.tb_frame.f_code.co_filename:
    return None
  text = str(exc.args[0] if exc.args else exc)
  return text.split("\n")[0].strip("'\" ")


def _error_text(exc: BaseException) -> str:
  field = _missing_config_field(exc)
  if field is not None:
    default = _WORKDIR.get("default_config")
    return (f"The config has no field {field!r}: is --config a config file for this launcher"
            + (f" (like its default, {default})" if default else "") + "?")
  return str(exc).strip() or type(exc).__name__


def _fail(message: str) -> None:
  """Prints ``message`` as the launcher's one error and exits with :data:`USAGE_EXIT_CODE`."""
  _remove_empty_workdir()
  print(f"Error: {message}\n(Run with --debug for the full traceback.)", file=sys.stderr,
        flush=True)
  sys.exit(USAGE_EXIT_CODE)


def _excepthook(exc_type, exc, tb) -> None:
  _remove_empty_workdir()
  if _debug_requested() or not _is_users_error(exc):
    sys.__excepthook__(exc_type, exc, tb)
    return
  text = _error_text(exc)
  print(f"Error ({exc_type.__name__}): {text}\n(Run with --debug for the full traceback.)",
        file=sys.stderr, flush=True)


def install_error_handler() -> None:
  """Makes an uncaught user's error end the launcher with its message alone (see module doc)."""
  if sys.excepthook is not _excepthook:
    sys.excepthook = _excepthook


def _remember_workdir(workdir: str) -> None:
  """Notes the topmost directory of ``workdir`` that does not exist yet (this start creates it)."""
  path = os.path.abspath(os.path.expanduser(workdir))
  created = None
  probe = path
  while not os.path.exists(probe):
    created = probe
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  _WORKDIR.update(path=path, created=created)


def _remove_empty_workdir() -> None:
  """Removes the directories this start created when no file was written in them."""
  created = _WORKDIR.get("created")
  if not created or not os.path.isdir(created):
    return
  for _, _, files in os.walk(created):
    if files:
      return
  shutil.rmtree(created, ignore_errors=True)


def start(argv=None) -> None:
  """Initializes multi-host JAX from the flags (nothing on a single process), logging, and the
  persistent compilation cache. With ``argv`` (what ``app.run`` passes to ``main``), positional
  arguments left over after the flags are a usage error first."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if argv is not None and len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from absl import logging  # pylint: disable=g-import-not-at-top
  from lvmjax import compile_cache  # pylint: disable=g-import-not-at-top
  from lvmjax import distributed  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  install_error_handler()
  if not f.workdir:
    raise flags.IllegalFlagValueError("--workdir is required, e.g. --workdir /tmp/lvmjax_run")
  _remember_workdir(f.workdir)
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())
  cpu_devices = f["cpu_devices"].value if "cpu_devices" in f else 1
  if cpu_devices < 0:
    raise flags.IllegalFlagValueError(f"--cpu_devices must be >= 0, got {cpu_devices}.")
  from lvmjax import sharding  # pylint: disable=g-import-not-at-top
  if cpu_devices != 1 or not sharding.cpu_device_count_fixed():
    # The flag wins over `import lvmjax`'s one device per core (its default 1: one device);
    # a count fixed in XLA_FLAGS or JAX_NUM_CPU_DEVICES stays unless the flag asks for another.
    sharding.use_cpu_cores(cpu_devices or None)
  distributed.maybe_initialize(f.coordinator_address, f.num_processes, f.process_id,
                               auto=f.distributed_auto)
  compile_cache.enable()


class _LibraryInfoFilter:
  """Hides the INFO chatter of Orbax and JAX internals (warnings and errors still show; run with
  ``-v 1`` to see everything)."""

  _NOISY = (os.sep + "orbax" + os.sep, os.sep + "jax" + os.sep, os.sep + "etils" + os.sep)

  def filter(self, record) -> bool:
    from absl import logging  # pylint: disable=g-import-not-at-top
    if record.levelno > 20 or logging.get_verbosity() >= 1:
      return True
    return not any(part in record.pathname for part in self._NOISY)


def main_for(config_holder, target: str, **kwargs):
  """The ``main`` that ``app.run`` calls in a launcher which runs one library function.

  ``target`` is ``"module:function"``, e.g. ``"lvmjax.gmm.train:fit_and_evaluate"``, called as
  ``function(config, workdir, quiet=..., **kwargs)`` after :func:`start`; its result's
  ``results`` are printed. The module is imported only then, once the flags have fixed the CPU
  devices (and ``--help`` never imports JAX).
  """
  module_name, function_name = target.split(":")

  def main(argv):
    from absl import flags  # pylint: disable=g-import-not-at-top
    start(argv)
    function = getattr(importlib.import_module(module_name), function_name)
    f = flags.FLAGS
    run = function(config_holder.value, f.workdir, quiet=f.quiet, **kwargs)
    print_results(run.results, f.workdir)

  return main


def print_results(results: dict, workdir: str) -> None:
  """Prints the final numbers and where the files are (process 0 only)."""
  from lvmjax import distributed  # pylint: disable=g-import-not-at-top
  if not distributed.is_primary():
    return
  print("Results:")
  for k, v in results.items():
    print(f"  {k}: {v:.6g}" if isinstance(v, float) else f"  {k}: {v}")
  print(f"Files in {os.path.abspath(workdir)}: "
        + ", ".join(sorted(os.listdir(workdir))), flush=True)


_define_debug_flag()
