"""Figures: labels that do not cover each other."""

from __future__ import annotations

import itertools

from matplotlib.backends.backend_agg import FigureCanvasAgg

from uncertainty_mtl.reporting.plots import label_points, new_figure


def test_labels_of_close_points_do_not_overlap():
    fig, (ax,) = new_figure(1, width=6.5, height=4.5)
    points = [(1.0, 7.3, "equal"), (1.1, 7.35, "dwa"), (1.55, 7.4, "upgrad"), (1.6, 7.8, "gls")]
    ax.plot([p[0] for p in points], [p[1] for p in points], "o")
    ax.set_xlim(0.5, 3.5)
    ax.set_ylim(0, 18)
    label_points(ax, points)
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert sorted(t.get_text() for t in ax.texts) == ["dwa", "equal", "gls", "upgrad"]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
