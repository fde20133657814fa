"""What a run shows and leaves: a progress display, ``metrics.jsonl`` and ``config.json``.

* :class:`Progress`: a one-line progress bar (step, loss, steps/s, time left) when the output is a
  terminal, and one log line per report otherwise (files, CI, notebooks); silent with ``quiet``.
* :class:`MetricsWriter`: appends one JSON object per logged step to ``<workdir>/metrics.jsonl``.
* :func:`write_config_json` / :func:`read_metrics`.

Only the primary process (``lvmjax.distributed.is_primary()``) should write; pass ``enabled=False``
elsewhere.
"""
from __future__ import annotations

import collections
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Mapping, TextIO

from lvmjax import checkpoint


def format_duration(seconds: float) -> str:
  """``3725`` -> ``"1:02:05"``; ``"?"`` when unknown."""
  if seconds is None or not math.isfinite(seconds) or seconds < 0:
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}"


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


class Progress:
  """Progress of a loop of ``total`` steps.

  Call :meth:`update` with the number of completed steps (as often as each step: the bar redraws
  at most ``refresh_s`` apart) and with ``metrics`` whenever there are new values to show; in log
  mode (not a terminal) each call with metrics writes one line. Steps per second are measured
  over the last ``window_s`` seconds of updates (from the first update, so compilation before it
  does not count), and the time left is the remaining steps at that rate.

  Args:
    total: number of steps of the whole run.
    initial: steps already done (a resumed run).
    desc: a label, e.g. "train".
    quiet: show nothing.
    stream: where to draw (default ``sys.stdout``); the bar is drawn only if it is a terminal.
    refresh_s: least time between two redraws of the bar.
    window_s: the rate is measured over updates at most this old.

  Examples:
    >>> p = Progress(100, desc="train", quiet=True)
    >>> p.update(10, {"loss": 1.5})
    >>> p.close()
  """

  def __init__(self, total: int, *, initial: int = 0, desc: str = "", quiet: bool = False,
               stream: TextIO | None = None, refresh_s: float = 0.1, window_s: float = 30.0):
    self.total = int(total)
    self.desc = desc
    self.quiet = quiet
    self.stream = stream if stream is not None else sys.stdout
    try:
      self.is_terminal = self.stream.isatty()
    except (AttributeError, ValueError):
      self.is_terminal = False
    self.refresh_s = refresh_s
    self.metrics: dict[str, Any] = {}
    self.window_s = window_s
    self._history: collections.deque = collections.deque()
    self._start_time = None
    self._last_draw = 0.0
    self.step = int(initial)

  @property
  def steps_per_second(self) -> float:
    """Steps per second over the recent window (NaN before two updates)."""
    if len(self._history) < 2:
      return float("nan")
    (t0, s0), (t1, s1) = self._history[0], self._history[-1]
    return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else float("nan")

  @property
  def seconds_left(self) -> float:
    rate = self.steps_per_second
    return (self.total - self.step) / rate if rate > 0 else float("nan")

  def line(self) -> str:
    """The text of the current status (without the bar)."""
    parts = [f"{self.desc} " if self.desc else "", f"step {self.step}/{self.total}"]
    for k, v in self.metrics.items():
      parts.append(f"  {k} {_fmt(v)}")
    rate = self.steps_per_second
    if math.isfinite(rate):
      parts.append(f"  {rate:.1f} steps/s  {format_duration(self.seconds_left)} left")
    return "".join(parts)

  def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
    """Records that ``step`` steps are done, with optional new metric values to show."""
    now = time.perf_counter()
    if self._start_time is None:
      self._start_time = now
    self.step = int(step)
    self._history.append((now, self.step))
    while len(self._history) > 2 and now - self._history[1][0] > self.window_s:
      self._history.popleft()
    if metrics:
      self.metrics = {k: (float(v) if hasattr(v, "__float__") else v) for k, v in metrics.items()}
    if self.quiet:
      return
    if self.is_terminal:
      now = time.perf_counter()
      if metrics or now - self._last_draw >= self.refresh_s or self.step >= self.total:
        self._draw()
        self._last_draw = now
    elif metrics:
      print(self.line(), file=self.stream, flush=True)

  def _draw(self) -> None:
    width = 24
    frac = min(max(self.step / self.total, 0.0), 1.0) if self.total else 1.0
    filled = int(round(frac * width))
    bar = "#" * filled + "-" * (width - filled)
    text = f"\r|{bar}| {100 * frac:3.0f}% {self.line()}"
    try:
      columns = os.get_terminal_size(self.stream.fileno()).columns
    except (OSError, AttributeError, ValueError):
      columns = 0
    if columns < 40:
      columns = 120
    self.stream.write(text[:columns] + "\x1b[K")
    self.stream.flush()

  def close(self) -> None:
    """Ends the bar's line (terminal mode)."""
    if self.quiet:
      return
    if self.is_terminal:
      self._draw()
      self.stream.write("\n")
      self.stream.flush()


class MetricsWriter:
  """Appends one JSON object per logged step to ``<workdir>/metrics.jsonl``.

  Non-finite numbers are written as ``null`` (strict JSON). A resumed run first calls
  :meth:`truncate_after` with the checkpoint's step, so lines logged after that checkpoint by the
  interrupted run are not repeated.

  Args:
    workdir: the run's directory (created if needed).
    enabled: write nothing when False (processes other than 0).
    filename: the file's name.
  """

  def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True,
               filename: str = "metrics.jsonl"):
    self.path = pathlib.Path(workdir) / filename
    self.enabled = enabled
    if enabled:
      self.path.parent.mkdir(parents=True, exist_ok=True)

  def truncate_after(self, step: int | None, key: str = "step") -> None:
    """Drops records whose ``key`` is greater than ``step`` (all records if ``step`` is None)."""
    if not self.enabled or not self.path.exists():
      return
    records = [] if step is None else [r for r in read_jsonl(self.path) if r.get(key, 0) <= step]
    tmp = self.path.with_suffix(".tmp")
    with open(tmp, "w") as f:
      for r in records:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)

  def write(self, step: int, metrics: Mapping[str, Any], **extra: Any) -> None:
    """Writes ``{"step": step, **metrics, **extra}`` as one line."""
    if not self.enabled:
      return
    record = {"step": int(step)}
    record.update({k: _json_number(v) for k, v in {**metrics, **extra}.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")


def _json_number(v: Any) -> Any:
  if isinstance(v, (str, bool)) or v is None:
    return v
  try:
    f = float(v)
  except (TypeError, ValueError):
    return v
  if not math.isfinite(f):
    return None
  if hasattr(v, "dtype") and "int" in str(v.dtype) or isinstance(v, int):
    return int(f)
  return f


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The records of a JSON-lines file (skipping a torn last line from a killed run)."""
  out = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return out


def read_metrics(workdir: str | os.PathLike, filename: str = "metrics.jsonl") -> list[dict]:
  """The records of ``<workdir>/metrics.jsonl``."""
  path = pathlib.Path(workdir) / filename
  return read_jsonl(path) if path.exists() else []


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes ``obj`` as indented JSON, atomically (temporary file, then rename)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  with open(tmp, "w") as f:
    json.dump(checkpoint.config_to_dict(obj) if not isinstance(obj, (list, str)) else obj, f,
              indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def write_config_json(workdir: str | os.PathLike, config: Any) -> pathlib.Path:
  """Writes the run's config to ``<workdir>/config.json`` and returns the path."""
  path = pathlib.Path(workdir) / "config.json"
  write_json(path, checkpoint.config_to_dict(config))
  return path
