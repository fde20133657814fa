"""Recording which model sizes a run fits, for tests that check what a launcher fits again."""


def record_sizes(monkeypatch, module, name: str = "fit") -> list:
  """Replaces ``module.<name>(key, x, size, ...)`` (``gmm.fit``, ``kmeans.fit``) by a wrapper that
  appends ``size`` (the number of components or clusters) to the list returned, then calls it."""
  sizes = []
  original = getattr(module, name)

  def recording(key, x, size, *args, **kwargs):
    sizes.append(size)
    return original(key, x, size, *args, **kwargs)

  monkeypatch.setattr(module, name, recording)
  return sizes
