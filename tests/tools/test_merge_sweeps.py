"""tools/merge_sweeps.py: several sweep CSVs become one grid (CSV, heatmap, Markdown)."""
import csv

from tool_module import load_tool

from focal_plugin.stress import results as sweep


def row(mode, gamma, threshold, status, epochs, nonfinite_iter=None):
    base = dict.fromkeys(sweep.CSV_COLUMNS)
    base.update(mode=mode, gamma=gamma, alpha=0.5, threshold=threshold, noise=0.0, seed=0,
                positive_fraction=0.1 * (threshold + 1), max_epochs=100, iters_per_epoch=157,
                status=status, completed_epochs=epochs,
                nonfinite_epoch=None if nonfinite_iter is None else epochs + 1,
                nonfinite_iter=nonfinite_iter)
    return base


def test_merge_dedupes_skips_unfinished_and_tabulates(tmp_path, capsys):
    merge = load_tool('merge_sweeps')
    first, second = tmp_path / 'a.csv', tmp_path / 'b.csv'
    sweep.write_csv(first, [row('none', 0.1, 0, 'diverged', 21, 3432),
                            row('exact', 0.1, 0, 'completed', 100)])
    sweep.write_csv(second, [row('exact', 0.1, 0, 'diverged', 5, 800),  # duplicate
                             row('exact', 0.3, 2, 'completed', 100),
                             row('epsilon', 0.3, 2, 'error', 3)])       # unfinished
    out = tmp_path / 'merged'
    merge.main([str(first), str(second), '--out', str(out)])
    with open(out / 'results.csv', newline='') as f:
        merged = list(csv.DictReader(f))
    assert [(r['mode'], r['gamma'], r['threshold'], r['status']) for r in merged] == [
        ('none', '0.1', '0', 'diverged'), ('exact', '0.1', '0', 'completed'),
        ('exact', '0.3', '2', 'completed')]
    table = (out / 'tables.md').read_text()
    assert 'NaN at step 3432 (epoch 22)' in table
    assert '### exact: 2 cells run, 0 with a non-finite step' in table
    assert 'epsilon' not in table
    assert (out / 'completed_epochs_heatmap.png').stat().st_size > 1000
    printed = capsys.readouterr().out  # the dropped duplicate is said, naming its file
    assert f'duplicate cell dropped: exact gamma 0.1 TH 0 noise 0 seed 0 from {second}' in printed


def test_heatmap_colours_by_the_share_of_each_cells_own_budget(tmp_path, monkeypatch):
    """A cell that finished all of its 8 epochs is as green as one that finished its 12."""
    from focal_plugin.stress import figures
    short, long = row('exact', 0.1, 0, 'completed', 8), row('exact', 0.1, 1, 'completed', 12)
    short['max_epochs'], long['max_epochs'] = 8, 12
    failed = row('exact', 0.1, 2, 'diverged', 3, 400)
    failed['max_epochs'] = 12
    shown = []
    real_imshow = figures._pyplot().Axes.imshow

    def imshow(ax, grid, *args, **kwargs):
        shown.append((grid.copy(), kwargs.get('vmax')))
        return real_imshow(ax, grid, *args, **kwargs)

    monkeypatch.setattr(figures._pyplot().Axes, 'imshow', imshow)
    figures.plot_heatmaps([short, long, failed], str(tmp_path / 'h.png'))
    (grid, vmax), = shown
    assert vmax == 1 and list(grid[0]) == [1.0, 1.0, 0.25]
