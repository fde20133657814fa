"""The figures, tested by their data (matplotlib artists: axes, images, legends, ticks), not pixels."""
import numpy as np
import pytest
from matplotlib.image import AxesImage
from matplotlib.legend import Legend

from lvmjax import plotting


def _legend_texts(ax):
  return [t.get_text() for c in ax.get_children() if isinstance(c, Legend) for t in c.get_texts()]


def _image_axes(fig):
  return [ax for ax in fig.axes if any(isinstance(c, AxesImage) for c in ax.get_children())]


def _is_integer_ticks(values):
  return len(values) > 0 and np.allclose(values, np.round(values))


@pytest.mark.parametrize("k", [3, 10, 13])
def test_component_means_are_k_images_with_their_weights(k):
  rng = np.random.default_rng(k)
  means = rng.random((k, 64))
  weights = rng.dirichlet(np.ones(k))
  fig = plotting.plot_component_means(means, (8, 8), weights)
  image_axes = _image_axes(fig)
  assert len(image_axes) == k
  for i, ax in enumerate(image_axes):
    (img,) = [c for c in ax.get_children() if isinstance(c, AxesImage)]
    np.testing.assert_array_equal(img.get_array(), means[i].reshape(8, 8))
    assert ax.get_title() == f"k={i} w={weights[i]:.2f}"


def test_gmm_scatter_legend_says_what_an_ellipse_is():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 5))
  covs = np.stack([np.eye(5), 2 * np.eye(5)])
  fig = plotting.plot_gmm(x, np.array([0.3, 0.7]), x[:2], covs, "full",
                          assignments=rng.integers(0, 2, 200))
  texts = _legend_texts(fig.axes[0])
  assert "1-σ ellipse of component k, projected" in texts
  assert "2-σ ellipse of component k, projected" in texts
  assert "component means" in texts
  from matplotlib.patches import Ellipse  # pylint: disable=g-import-not-at-top
  assert sum(isinstance(p, Ellipse) for p in fig.axes[0].patches) == 4  # 2 components x (1, 2) σ
  fig2 = plotting.plot_gmm(x[:, :2], np.array([0.3, 0.7]), x[:2, :2], np.ones(2), "spherical")
  assert "1-σ ellipse of component k" in _legend_texts(fig2.axes[0])  # 2-D: not projected


def test_labels_are_categories_with_class_names_not_a_colour_bar():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 400)
  names = plotting.CLASS_NAMES["fashion_mnist"]
  fig = plotting.plot_latent_space(rng.normal(size=(400, 2)), labels, class_names=names)
  assert len(fig.axes) == 1  # no colour bar axes
  texts = _legend_texts(fig.axes[0])
  assert texts == [names[c] for c in np.unique(labels)]
  assert "Ankle boot" in texts and "T-shirt/top" in texts
  sizes = np.concatenate([c.get_sizes() for c in fig.axes[0].collections])
  assert sizes.min() >= 8  # points large enough to see
  fig = plotting.plot_gmm(rng.normal(size=(400, 3)), np.ones(2) / 2, np.zeros((2, 3)),
                          np.ones(2), "spherical", labels=labels, class_names=names)
  assert len(fig.axes) == 1 and set(names) <= set(_legend_texts(fig.axes[0]))
  assert plotting.class_names("fashion_mnist") == names and plotting.class_names("x") is None
  fig = plotting.plot_clusters(rng.normal(size=(300, 4)), np.zeros((3, 4)),
                               rng.integers(0, 3, 300))
  assert _legend_texts(fig.axes[0]) == ["cluster 0", "cluster 1", "cluster 2", "centroids"]
  # Beyond MAX_LEGEND_CATEGORIES categories: continuous colours with a colour bar.
  many = plotting.plot_latent_space(rng.normal(size=(400, 2)), rng.integers(0, 50, 400))
  assert len(many.axes) == 2


def test_log_likelihood_curve_clips_a_far_first_iteration_and_says_so():
  ll = [-2.2e6, 60.0, 68.0, 70.0, 70.5, 70.6]
  fig = plotting.plot_log_likelihood(ll)
  ax = fig.axes[0]
  lo, hi = ax.get_ylim()
  assert 50 < lo < 60 and 70.6 < hi < 75  # the readable part fills the axes
  assert any("iteration 1 below the axis (clipped)" in t for t in _legend_texts(ax))
  assert any(t.get_text() == "-2.2e+06" for t in ax.texts)
  fig.canvas.draw()
  assert _is_integer_ticks(ax.get_xticks())
  # An ordinary curve is not clipped.
  ax = plotting.plot_log_likelihood([-10.0, 50.0, 65.0, 69.0, 70.0]).axes[0]
  assert ax.get_ylim()[0] < -10 and not ax.texts


def test_iteration_and_k_axes_have_integer_ticks():
  figs = [plotting.plot_information_criteria([1, 2, 3], [3.0, 1.0, 2.0], [3.0, 2.0, 1.0]),
          plotting.plot_inertia([2, 3, 4], [10.0, 5.0, 4.0]),
          plotting.plot_log_likelihood([1.0, 2.0, 2.5])]
  for fig in figs:
    fig.canvas.draw()
    ticks = fig.axes[0].get_xticks()
    assert _is_integer_ticks(ticks), ticks
