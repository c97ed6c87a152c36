"""The README/results figures stay legible: tools/plot_gradients.py's legend covers no curve,
and tools/plot_logit_extremes.py's (focal_plugin.stress.figures) runs that agree all stay
visible, with break-point lines in a colour of their own and in the legend."""

import matplotlib
from tool_module import load_tool

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from focal_plugin.stress.figures import (  # noqa: E402
    NEGATIVE_BREAK,
    POSITIVE_BREAK,
    logit_extremes_figure,
)


def the_legend(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1
    return legends[0]


def assert_legend_covers_no_data(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = the_legend(fig).get_window_extent(renderer)
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label().startswith('_') and len(line.get_xdata()) == 2:
                continue  # a reference line across the axes (axhline)
            points = line.get_transform().transform(line.get_xydata())
            assert box.count_contains(points) == 0, line.get_label()


def by_label(ax, label):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def test_gradient_figure_legend_covers_no_curve():
    tool = load_tool('plot_gradients')
    fig = tool.make_figure(0.5)
    try:
        for ax in fig.axes:
            exact = by_label(ax, 'exact (ours, default)')
            assert np.isfinite(exact.get_ydata()).all() and len(exact.get_xdata()) == 801
            none = by_label(ax, 'original (torchvision form)')
            # where they agree the original is drawn on top of, and narrower than, exact
            assert none.get_zorder() > exact.get_zorder()
            assert none.get_linewidth() < exact.get_linewidth()
        assert_legend_covers_no_data(fig)
        fig.canvas.draw()
        box = the_legend(fig).get_window_extent(fig.canvas.get_renderer())
        for ax in fig.axes:  # outside the panels altogether
            assert not box.overlaps(ax.get_window_extent(fig.canvas.get_renderer()))
    finally:
        plt.close(fig)


def test_logit_extremes_break_points_have_their_own_colour_and_both_runs_show():
    record = dict(iters_per_epoch=100, pos_logit_max=[2.0, 6.0, 9.0, 11.0, 12.0],
                  neg_logit_min=[-2.0, -6.0, None, -10.0, -12.0])
    fig = logit_extremes_figure({'none': record, 'exact': dict(record)})  # identical curves
    try:
        ax = fig.axes[0]
        lines = ax.get_lines()
        breaks = [line for line in lines if len(line.get_ydata()) == 2
                  and set(line.get_ydata()) <= {POSITIVE_BREAK, NEGATIVE_BREAK}]
        data = [line for line in lines if line not in breaks]
        assert len(breaks) == 2 and len(data) == 4
        for b in breaks:
            for line in data:  # not the same colour, nor a close shade of it
                distance = np.linalg.norm(np.subtract(to_rgb(b.get_color()),
                                                      to_rgb(line.get_color())))
                assert distance > 0.4, (b.get_color(), line.get_color(), line.get_label())
        labels = [t.get_text() for t in the_legend(fig).get_texts()]
        assert any('break point' in label for label in labels), labels
        assert any(label.startswith('none') for label in labels)
        assert any(label.startswith('exact') for label in labels)
        # the runs coincide: the one on top is narrower (and dashed), so both show
        none = [line for line in data if line.get_color() == data[0].get_color()]
        exact = [line for line in data if line not in none]
        assert len(none) == len(exact) == 2
        for top, bottom in zip(none, exact):
            assert top.get_zorder() > bottom.get_zorder()
            assert top.get_linewidth() < bottom.get_linewidth()
            assert top.get_linestyle() != bottom.get_linestyle()
            assert to_rgb(top.get_color()) != to_rgb(bottom.get_color())
        assert_legend_covers_no_data(fig)
    finally:
        plt.close(fig)
