"""Figures for GMM, K-means and VAE runs, as matplotlib ``Figure`` objects (numpy in, Figure out).

The figures are built without ``pyplot`` (``matplotlib.figure.Figure``), so they need no display,
leave no global state, and save through the Agg canvas; in a notebook, show one with
``display(fig)`` or by leaving it as a cell's last expression. :func:`save_figure` writes a PNG.
Data above two dimensions is drawn in the plane of its first two principal components.
"""
from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

# matplotlib is imported by the functions that draw (on the first figure), not with this module:
# a launcher that draws only at its end does not hold matplotlib's ~30 MB while XLA compiles.
if TYPE_CHECKING:
  from matplotlib.figure import Figure

#: Class names of the labelled datasets of :mod:`lvmjax.data`, for legends (label i -> name i).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(i) for i in range(10)),
    "dynamic_mnist": tuple(str(i) for i in range(10)),
    "digits": tuple(str(i) for i in range(10)),
}

#: Most categories drawn with distinct colours and a legend; more get a continuous colour bar.
MAX_LEGEND_CATEGORIES = 20


def class_names(dataset: str | None) -> tuple[str, ...] | None:
  """The names of a dataset's classes (``CLASS_NAMES``), or None when it has none listed."""
  return CLASS_NAMES.get(dataset or "")


def _new_figure(**kwargs: Any) -> Figure:
  """A pyplot-free ``matplotlib.figure.Figure(**kwargs)``."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return Figure(**kwargs)


def integer_ticks(axis) -> None:
  """Puts ticks only at integers on ``axis`` (e.g. ``ax.xaxis``), for iterations or K."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  axis.set_major_locator(ticker.MaxNLocator(integer=True))


def _point_size(num_points: int) -> float:
  """Marker area (points^2) of a scatter of ``num_points``: large enough to see, small enough
  not to hide each other."""
  return 28.0 if num_points < 500 else (16.0 if num_points < 2000 else 8.0)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> pathlib.Path:
  """Writes ``fig`` as a PNG to ``path`` (creating directories) and returns the path."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=dpi, bbox_inches="tight")
  return path


def show(fig_or_path: Figure | str | os.PathLike) -> None:
  """Shows a figure (or a PNG file) inline in Jupyter/Colab; does nothing without IPython.

  Works for the pyplot-free figures of this module whatever the notebook's matplotlib backend.
  """
  try:
    from IPython.display import Image, display  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  if hasattr(fig_or_path, "savefig"):  # a Figure
    import io  # pylint: disable=g-import-not-at-top
    buf = io.BytesIO()
    fig_or_path.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    display(Image(buf.getvalue()))
  else:
    display(Image(filename=str(fig_or_path)))


def pca_basis(x: np.ndarray, num_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """The mean (D,) and the top principal directions (num_components, D) of ``x``."""
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  basis = vt[:num_components]
  if basis.shape[0] < num_components:  # fewer points than components: pad with zeros
    basis = np.concatenate([basis, np.zeros((num_components - basis.shape[0], x.shape[1]))])
  return mean, basis


def project_2d(x: np.ndarray, mean: np.ndarray | None = None,
               basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``x`` in two dimensions: itself when D <= 2, else its first two principal components.

  Returns:
    (x2 (N, 2), mean (D,), basis (2, D)) so that other points project as ``(y - mean) @ basis.T``.
  """
  x = np.asarray(x, np.float64)
  d = x.shape[1]
  if mean is None or basis is None:
    if d <= 2:
      mean, basis = np.zeros(d), np.eye(2, d)
    else:
      mean, basis = pca_basis(x, 2)
  return (x - mean) @ basis.T, mean, basis


def full_covariances(covariances: np.ndarray, covariance_type: str, num_components: int,
                     num_features: int) -> np.ndarray:
  """(K, D, D) covariances from scikit-learn's layout for "full", "tied", "diag" or "spherical"."""
  c = np.asarray(covariances, np.float64)
  eye = np.eye(num_features)
  if covariance_type == "full":
    return c
  if covariance_type == "tied":
    return np.broadcast_to(c, (num_components, num_features, num_features))
  if covariance_type == "diag":
    return c[:, :, None] * eye
  if covariance_type == "spherical":
    return c[:, None, None] * eye
  raise ValueError(f"Unknown covariance_type {covariance_type!r}.")


def _ellipse(ax, mean2, cov2, n_std, **kw):
  vals, vecs = np.linalg.eigh(cov2)
  vals = np.maximum(vals, 0.0)
  angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
  width, height = 2 * n_std * np.sqrt(vals[-1]), 2 * n_std * np.sqrt(vals[0])
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  ax.add_patch(patches.Ellipse(mean2, width, height, angle=angle, **kw))


def _scatter(ax, x2, labels, size=None, names: Sequence[str] | None = None,
             legend_title: str = "label", extra_handles: Sequence[Any] = ()):
  """Points in grey, or coloured by integer category with a legend of the categories' names.

  The legend (right of the axes) also lists ``extra_handles``. With more than
  :data:`MAX_LEGEND_CATEGORIES` categories the colours are continuous and the returned scatter
  needs a colour bar; otherwise returns None.
  """
  size = size or _point_size(len(x2))
  if labels is None:
    ax.scatter(x2[:, 0], x2[:, 1], s=size, c="0.4", alpha=0.5, linewidths=0)
    _legend_right(ax, list(extra_handles), None)
    return None
  labels = np.asarray(labels).astype(np.int64)
  cats = np.unique(labels)
  if len(cats) > MAX_LEGEND_CATEGORIES:
    _legend_right(ax, list(extra_handles), None)
    return ax.scatter(x2[:, 0], x2[:, 1], s=size, c=labels, cmap="viridis", alpha=0.7,
                      linewidths=0)
  palette = "tab10" if cats.max(initial=0) < 10 else "tab20"
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps[palette]
  handles = []
  for c in cats:
    sel = labels == c
    name = names[c] if names is not None and 0 <= c < len(names) else str(c)
    handles.append(ax.scatter(x2[sel, 0], x2[sel, 1], s=size, color=cmap(int(c) % cmap.N),
                              alpha=0.75, linewidths=0, label=name))
  _legend_right(ax, handles + list(extra_handles), legend_title)
  return None


def _legend_right(ax, handles, title):
  if handles:
    ax.legend(handles=handles, title=title, fontsize=7, title_fontsize=8, markerscale=1.3,
              loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def plot_gmm(x: np.ndarray, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
             covariance_type: str = "full", labels: np.ndarray | None = None,
             assignments: np.ndarray | None = None, title: str | None = None,
             max_points: int = 3000, class_names: Sequence[str] | None = None) -> Figure:
  """The data with each component's 1- and 2-standard-deviation ellipse.

  Above two dimensions the data, means and covariances are projected on the data's first two
  principal components P (covariances as ``P Σ Pᵀ``): each ellipse is then the projection of the
  component's ellipsoid, ``{y : (y - P μ_k)ᵀ (P Σ_k Pᵀ)⁻¹ (y - P μ_k) = r²}`` for r = 1 (thick) and
  r = 2 (thin), in the component's colour, more opaque for a heavier component. The legend says so.

  Args:
    x: (N, D) data.
    weights, means, covariances: the mixture in scikit-learn's layout.
    covariance_type: "full", "tied", "diag" or "spherical".
    labels: optional (N,) integer classes to colour the points by (with a legend of
      ``class_names``).
    assignments: optional (N,) component index of each point (e.g. the MAP component); points
      then take their component's ellipse colour (``labels`` is ignored).
    title: the axes title.
    max_points: draw at most this many points (a fixed random subset).
    class_names: names of the label values, for the legend (e.g. ``CLASS_NAMES["fashion_mnist"]``).

  Returns:
    The figure.
  """
  x = np.asarray(x, np.float64)
  means = np.asarray(means, np.float64)
  k, d = means.shape
  covs = full_covariances(covariances, covariance_type, k, d)
  x2, mean, basis = project_2d(x)
  if len(x2) > max_points:
    keep = np.random.default_rng(0).choice(len(x2), max_points, replace=False)
    x2 = x2[keep]
    labels = None if labels is None else np.asarray(labels)[keep]
    assignments = None if assignments is None else np.asarray(assignments)[keep]
  from matplotlib import lines  # pylint: disable=g-import-not-at-top
  fig = _new_figure(figsize=(7.5, 5))
  ax = fig.add_subplot()
  m2 = (means - mean) @ basis.T
  c2 = basis @ covs @ basis.T
  w = np.asarray(weights, np.float64)
  colors = [f"C{i % 10}" for i in range(k)]
  for i in range(k):
    alpha = 0.25 + 0.6 * w[i] / w.max()
    for n_std in (1.0, 2.0):
      _ellipse(ax, m2[i], c2[i], n_std, fill=False, lw=1.8 if n_std == 1 else 0.9,
               edgecolor=colors[i], alpha=alpha, zorder=2.5)
  ax.scatter(m2[:, 0], m2[:, 1], marker="x", c="k", s=40, zorder=3)
  projected = "" if d <= 2 else ", projected"
  handles = [
      lines.Line2D([], [], color="0.3", lw=1.8, label=f"1-σ ellipse of component k{projected}"),
      lines.Line2D([], [], color="0.3", lw=0.9, label=f"2-σ ellipse of component k{projected}"),
      lines.Line2D([], [], color="k", marker="x", ls="", label="component means"),
  ]
  sc = None
  if assignments is not None:
    ax.scatter(x2[:, 0], x2[:, 1], s=_point_size(len(x2)), linewidths=0, alpha=0.6,
               c=[f"C{int(a) % 10}" for a in np.asarray(assignments)])
    handles.append(lines.Line2D([], [], color="C0", marker="o", ls="", alpha=0.6,
                                label="point: colour of its\nMAP component k"))
    _legend_right(ax, handles, "ellipse colour = component k")
  else:
    sc = _scatter(ax, x2, labels, names=class_names, extra_handles=handles)
  if sc is not None:
    fig.colorbar(sc, ax=ax, label="label")
  plane = "" if d <= 2 else " (first two principal components)"
  ax.set_xlabel("x1" if d <= 2 else "PC 1")
  ax.set_ylabel("x2" if d <= 2 else "PC 2")
  ax.set_title(title or f"GMM, K={k}, {covariance_type} covariances{plane}", fontsize=10)
  ax.autoscale_view()
  return fig


def plot_component_means(means: np.ndarray, image_shape: Sequence[int],
                         weights: np.ndarray | None = None, title: str | None = None,
                         num_cols: int | None = None) -> Figure:
  r"""Each component's mean as an image, one panel per component, its weight in the panel title.

  For image data (e.g. the 8x8 digits) this is what a mixture learned: K prototype images
  (:math:`\mu_k`, reshaped to ``image_shape``), titled ``k=3 w=0.12``. All panels share one grey
  scale (black = the smallest value of any mean, white = the largest).

  Args:
    means: (K, H*W) component means.
    image_shape: (H, W) of one image.
    weights: optional (K,) mixing weights for the titles.
    title: the figure title.
    num_cols: panels per row (default: up to 10).

  Returns:
    The figure, with exactly K image axes (one per component, in component order).
  """
  means = np.asarray(means, np.float64)
  k = means.shape[0]
  h, w = int(image_shape[0]), int(image_shape[1])
  images = means.reshape(k, h, w)
  cols = num_cols or min(10, k)
  rows = -(-k // cols)
  fig = _new_figure(figsize=(1.15 * cols + 0.2, 1.3 * rows + 0.5))
  lo, hi = float(images.min()), float(images.max())
  for i in range(k):
    ax = fig.add_subplot(rows, cols, i + 1)
    ax.imshow(images[i], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    label = f"k={i}" + ("" if weights is None else f" w={float(np.asarray(weights)[i]):.2f}")
    ax.set_title(label, fontsize=8)
  fig.suptitle(title or f"Component means ({k} components; w = mixing weight)", fontsize=10)
  fig.tight_layout()
  return fig


def plot_clusters(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray,
                  title: str | None = None, max_points: int = 3000) -> Figure:
  """Points coloured by cluster (a legend names each cluster), with the centroids (PCA plane
  above 2-D)."""
  x2, mean, basis = project_2d(x)
  labels = np.asarray(labels)
  if len(x2) > max_points:
    keep = np.random.default_rng(0).choice(len(x2), max_points, replace=False)
    x2, labels = x2[keep], labels[keep]
  fig = _new_figure(figsize=(7, 5))
  ax = fig.add_subplot()
  c2 = (np.asarray(centroids, np.float64) - mean) @ basis.T
  cents = ax.scatter(c2[:, 0], c2[:, 1], marker="X", c="k", s=90, zorder=3, label="centroids")
  sc = _scatter(ax, x2, labels, names=[f"cluster {i}" for i in range(len(c2))],
                legend_title="K-means cluster", extra_handles=[cents])
  if sc is not None:
    fig.colorbar(sc, ax=ax, label="cluster")
  d = np.shape(x)[1]
  ax.set_xlabel("x1" if d <= 2 else "PC 1")
  ax.set_ylabel("x2" if d <= 2 else "PC 2")
  ax.set_title(title or f"K-means, K={len(c2)}", fontsize=10)
  return fig


def plot_log_likelihood(log_likelihood: Sequence[float], title: str | None = None,
                        test_value: float | None = None) -> Figure:
  """Mean per-point training log-likelihood against EM iteration (integer ticks).

  The first iterations of EM can start far below the rest (e.g. -2.2e6 then values near 70),
  which would flatten the curve into a line. When the points before the curve settles lie more
  than 50 times the spread of the later points below them, the y-axis is clipped to the later
  points and each clipped point is drawn as a triangle on the lower edge, labelled with its
  value; the legend says how many were clipped.

  Returns:
    The figure.
  """
  ll = np.asarray(log_likelihood, np.float64)
  its = np.arange(1, len(ll) + 1)
  fig = _new_figure(figsize=(6, 4))
  ax = fig.add_subplot()
  low = _clipped_start(ll)
  ax.plot(its, ll, marker="o", ms=3, label="train")
  if test_value is not None:
    ax.axhline(test_value, color="C1", ls="--", label=f"test (final) {test_value:.3f}")
  if low:
    rest = ll[low:]
    top = max(rest.max(), test_value if test_value is not None else -np.inf)
    bottom = min(rest.min(), test_value if test_value is not None else np.inf)
    pad = 0.08 * (top - bottom) if top > bottom else 1.0
    ax.set_ylim(bottom - pad, top + pad)
    edge = bottom - 0.6 * pad
    ax.plot(its[:low], np.full(low, edge), "v", color="C3", ms=7, ls="",
            label=f"iteration{'s' if low > 1 else ''} 1" + (f"-{low}" if low > 1 else "")
            + " below the axis (clipped)")
    for i in range(low):
      ax.annotate(f"{ll[i]:.3g}", (its[i], edge), textcoords="offset points", xytext=(6, 4),
                  fontsize=7, color="C3")
  integer_ticks(ax.xaxis)
  ax.set_xlabel("EM iteration")
  ax.set_ylabel("mean log-likelihood per point")
  ax.set_title(title or "EM log-likelihood", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def _clipped_start(ll: np.ndarray, ratio: float = 50.0, max_clipped: int = 3) -> int:
  """How many leading values to clip so that the rest is readable (0: none)."""
  ll = ll[np.isfinite(ll)]
  # The rest keeps at least 3 points and half of them, so that its shape is still the curve's.
  for low in range(1, min(max_clipped, len(ll) - max(3, (len(ll) + 1) // 2)) + 1):
    rest = ll[low:]
    spread = rest.max() - rest.min()
    if rest.min() - ll[:low].min() > ratio * max(spread, 1e-12):
      # clip only as many as needed: the smallest ``low`` whose rest is compact
      return low
  return 0


def plot_information_criteria(ks: Sequence[int], bic: Sequence[float], aic: Sequence[float],
                              true_k: int | None = None, title: str | None = None) -> Figure:
  """BIC and AIC against the number of components K, with each minimum marked."""
  ks, bic, aic = (np.asarray(v) for v in (ks, bic, aic))
  fig = _new_figure(figsize=(6, 4))
  ax = fig.add_subplot()
  for vals, name, color in ((bic, "BIC", "C0"), (aic, "AIC", "C1")):
    ax.plot(ks, vals, marker="o", color=color, label=name)
    best = int(np.argmin(vals))
    ax.scatter([ks[best]], [vals[best]], s=150, facecolors="none", edgecolors=color, lw=2)
  if true_k is not None:
    ax.axvline(true_k, color="0.5", ls=":", label=f"true K = {true_k}")
  integer_ticks(ax.xaxis)
  ax.set_xlabel("number of components K")
  ax.set_ylabel("criterion (lower is better)")
  ax.set_title(title or f"Model selection: BIC picks K={ks[np.argmin(bic)]}, "
               f"AIC picks K={ks[np.argmin(aic)]}", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def plot_inertia(ks: Sequence[int], inertia: Sequence[float]) -> Figure:
  """K-means inertia against K (the "elbow" plot)."""
  fig = _new_figure(figsize=(6, 4))
  ax = fig.add_subplot()
  ax.plot(ks, inertia, marker="o")
  integer_ticks(ax.xaxis)
  ax.set_xlabel("number of clusters K")
  ax.set_ylabel("inertia (sum of squared distances)")
  ax.set_title("K-means inertia against K", fontsize=10)
  ax.grid(alpha=0.3)
  return fig


def image_grid(images: np.ndarray, image_shape: Sequence[int], num_cols: int,
               pad: int = 1) -> np.ndarray:
  """Tiles (N, H*W) images into one (rows*(H+pad)+pad, cols*(W+pad)+pad) array, grey (0.5) between."""
  h, w = image_shape[:2]
  images = np.asarray(images, np.float64).reshape(-1, h, w)
  n = len(images)
  rows = -(-n // num_cols)
  grid = np.full((rows * (h + pad) + pad, num_cols * (w + pad) + pad), 0.5)
  for i, img in enumerate(images):
    r, c = divmod(i, num_cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
  return grid


def plot_image_grid(images: np.ndarray, image_shape: Sequence[int], num_cols: int = 10,
                    title: str | None = None) -> Figure:
  """A grid of images (e.g. samples from the prior), grey levels in [0, 1]."""
  grid = image_grid(images, image_shape, num_cols)
  fig = _new_figure(figsize=(0.6 * num_cols + 0.4, 0.6 * grid.shape[0] / (image_shape[0] + 1) + 0.6))
  ax = fig.add_subplot()
  ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.set_axis_off()
  ax.set_title(title or "Samples", fontsize=10)
  return fig


def plot_reconstructions(x: np.ndarray, x_reconstructed: np.ndarray, image_shape: Sequence[int],
                         title: str | None = None) -> Figure:
  """Inputs (top row of each pair) above their reconstructions (bottom row)."""
  x = np.asarray(x)
  xr = np.asarray(x_reconstructed)
  num_cols = min(10, len(x))
  rows = []
  for start in range(0, len(x), num_cols):
    chunk = slice(start, start + num_cols)
    pad = num_cols - len(x[chunk])
    blank = np.full((pad, x.shape[1]), 0.5)
    rows += [np.concatenate([x[chunk], blank]), np.concatenate([xr[chunk], blank])]
  fig = plot_image_grid(np.concatenate(rows), image_shape, num_cols,
                        title or "Inputs (odd rows) and reconstructions (even rows)")
  return fig


def plot_latent_space(z: np.ndarray, labels: np.ndarray | None = None,
                      title: str | None = None, max_points: int = 5000,
                      class_names: Sequence[str] | None = None, name: str = "z") -> Figure:
  """Latent codes (e.g. posterior means) coloured by label; PCA plane above two dimensions.

  Up to :data:`MAX_LEGEND_CATEGORIES` label values get distinct colours and a legend naming them
  (``class_names[label]``, e.g. ``CLASS_NAMES["fashion_mnist"]``; default: the label value).
  ``name`` names the latent on the axes (e.g. "z2" for a two-layer model's top layer).
  """
  z = np.asarray(z, np.float64)
  if z.ndim == 1 or z.shape[1] == 1:
    z = np.concatenate([z.reshape(-1, 1), np.zeros((len(z), 1))], axis=1)
  z2, _, _ = project_2d(z)
  if len(z2) > max_points:
    keep = np.random.default_rng(0).choice(len(z2), max_points, replace=False)
    z2, labels = z2[keep], (None if labels is None else np.asarray(labels)[keep])
  fig = _new_figure(figsize=(7, 5))
  ax = fig.add_subplot()
  sc = _scatter(ax, z2, labels, names=class_names)
  if sc is not None:
    fig.colorbar(sc, ax=ax, label="label")
  d = z.shape[1]
  ax.set_xlabel(f"{name}, dimension 1" if d <= 2 else f"PC 1 of {name}")
  ax.set_ylabel(f"{name}, dimension 2" if d <= 2 else f"PC 2 of {name}")
  ax.set_title(title or ("Latent space" + ("" if d <= 2 else f" ({d}-D, PCA projection)")),
               fontsize=10)
  return fig


def plot_interpolation(images: np.ndarray, image_shape: Sequence[int],
                       title: str | None = None) -> Figure:
  """One or more interpolation strips: (num_strips, num_steps, H*W) or (num_steps, H*W)."""
  images = np.asarray(images)
  if images.ndim == 2:
    images = images[None]
  num_steps = images.shape[1]
  return plot_image_grid(
      images.reshape(-1, images.shape[-1]), image_shape, num_steps,
      title or "Each row: decoded points on the line between two inputs' posterior means")


def plot_training_curves(records: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None,
                         x_key: str = "step", title: str | None = None) -> Figure:
  """Each metric in ``keys`` (default: all numeric ones) against ``x_key``, one panel per metric.

  Records lacking a metric (e.g. evaluation metrics logged less often) are skipped for it.
  """
  records = list(records)
  if keys is None:
    keys = []
    for r in records:
      for k, v in r.items():
        if k != x_key and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
          keys.append(k)
  keys = list(keys) or ["(none)"]
  cols = min(3, len(keys))
  rows = -(-len(keys) // cols)
  fig = _new_figure(figsize=(4.2 * cols, 3.2 * rows))
  for i, key in enumerate(keys):
    ax = fig.add_subplot(rows, cols, i + 1)
    pts = [(r[x_key], r[key]) for r in records if r.get(key) is not None and x_key in r]
    if pts:
      xs, ys = zip(*pts)
      ax.plot(xs, ys, marker="." if len(xs) < 50 else None)
    ax.set_xlabel(x_key)
    ax.set_title(key, fontsize=10)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig
