"""The figures of a sweep: completed-epochs heatmaps (gamma x class ratio, one panel per loss
mode and noise level), training-loss curves with a cross at the first non-finite step, and the
most confident logits per epoch against the original loss's float32 break points."""
from .cells import FINISHED
from .grid import MODES


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_heatmaps(rows, path):
    import numpy as np
    plt = _pyplot()

    modes = [m for m in MODES if any(r['mode'] == m for r in rows)]
    noises = sorted({r['noise'] for r in rows})
    gammas = sorted({r['gamma'] for r in rows})
    thresholds = sorted({r['threshold'] for r in rows})
    max_epochs = max((r['max_epochs'] or 0) for r in rows) or 1
    fig, axes = plt.subplots(len(modes), len(noises), squeeze=False, layout='constrained',
                             figsize=(1.1 * len(thresholds) * len(noises) + 2,
                                      (0.3 * len(gammas) + 1.1) * len(modes) + 0.3))
    for i, mode in enumerate(modes):
        for j, noise in enumerate(noises):
            ax = axes[i][j]
            grid = np.full((len(gammas), len(thresholds)), np.nan)
            labels = np.full(grid.shape, '–', dtype=object)  # '–': not run / failed to run
            fractions = {}
            for r in rows:
                if r['mode'] != mode or r['noise'] != noise or r['status'] not in FINISHED:
                    continue
                at = gammas.index(r['gamma']), thresholds.index(r['threshold'])
                # coloured by the share of its own budget: a cell that finished all of its
                # 8 epochs is as green as one that finished its 12
                grid[at] = r['completed_epochs'] / (r['max_epochs'] or max_epochs)
                # ✓: no non-finite step within the run; a number alone: epochs before it
                labels[at] = f"{r['completed_epochs']}" + (
                    ' ✓' if r['status'] == 'completed' else '')
                if r['positive_fraction'] is not None:
                    fractions[r['threshold']] = r['positive_fraction']
            image = ax.imshow(grid, cmap='RdYlGn', vmin=0, vmax=1, aspect='auto')
            for (gi, ti), text in np.ndenumerate(labels):
                ax.text(ti, gi, text, ha='center', va='center', fontsize=7)
            ax.set_xticks(range(len(thresholds)),
                          [f'{t}\n{fractions[t]:.0%}' if t in fractions else f'{t}'
                           for t in thresholds], fontsize=7)
            ax.set_yticks(range(len(gammas)), [f'{g:g}' for g in gammas], fontsize=7)
            ax.set_title(f'{mode}, noise {noise}', fontsize=9)
            ax.set_xlabel('threshold TH (positive fraction)', fontsize=8)
            ax.set_ylabel('γ', fontsize=8)
    colorbar = fig.colorbar(image, ax=axes, shrink=0.8)
    colorbar.set_label('share of its own epoch budget completed before the first\n'
                       'non-finite step (numbers: epochs; ✓ = none within the run)', fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)


def plot_loss_curves(curves, path):
    plt = _pyplot()

    styles = {'none': '-', 'epsilon': '--', 'exact': ':'}  # overlapping curves stay visible
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for curve in curves:
        losses = curve['train_loss']
        epochs = list(range(1, len(losses) + 1))
        line, = ax.plot(epochs, losses, styles.get(curve['mode'], '-'), label=curve['label'])
        nonfinite = curve['nonfinite']
        if nonfinite:
            # Where the failure happened, in (fractional) epochs, at the end of the curve.
            x = nonfinite['iteration'] / curve['iters_per_epoch']
            y = losses[-1] if losses else nonfinite.get('last_finite_loss')
            ax.plot([x], [y], marker='x', markersize=12, markeredgewidth=2.5,
                    color=line.get_color(), linestyle='none')
    ax.set_yscale('log')
    ax.set_xlabel('epoch')
    ax.set_ylabel('mean training loss per epoch')
    ax.set_title('Training loss (× = first non-finite step)')
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)


# Where torchvision's formula breaks in float32 (tests/functional/test_sigmoid_focal.py):
# sigmoid(x) == 1 above this logit (positives), 1 - (1 - p) == 0 below that one (negatives).
POSITIVE_BREAK, NEGATIVE_BREAK = 16.64, -17.33


# one colour per run; grey and black are kept for the break points
RUN_COLORS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:purple', 'tab:brown', 'tab:pink',
              'tab:olive', 'tab:cyan')
BREAK_COLOR = 'black'


def _run_styles(count):
    """Line styles of ``count`` runs, the first given on top. Runs that agree (the original and
    the exact loss agree wherever the original is finite) draw the same curve: the later a run,
    the wider, lighter and lower it is drawn, and the first is a thin dashed line, so each one
    still shows where they coincide."""
    if count == 1:
        return [dict(linestyle='-', linewidth=1.5, alpha=1.0, zorder=3)]
    return [dict(linestyle='--' if i == 0 else '-', linewidth=1.5 + 3.0 * i,
                 alpha=1.0 if i == 0 else max(0.25, 0.55 - 0.15 * (i - 1)),
                 zorder=3 + count - i) for i in range(count)]


def logit_extremes_figure(records):
    """``records``: {label: divergence record}. Per epoch, the smallest logit of a negative
    and the largest of a positive, against optimizer steps, with the break points. Returns the
    figure (matplotlib, Agg)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = _run_styles(len(records))
    for (label, record), color, style in zip(records.items(), RUN_COLORS * len(records),
                                             styles):
        steps = record['iters_per_epoch']
        for key in ('pos_logit_max', 'neg_logit_min'):
            values = record.get(key) or []
            xs = [(i + 1) * steps for i, v in enumerate(values) if v is not None]
            ax.plot(xs, [v for v in values if v is not None], color=color,
                    label=f'{label}: largest positive / smallest negative logit'
                    if key == 'pos_logit_max' else None, **style)
    for i, (y, text) in enumerate(((POSITIVE_BREAK, 'sigmoid(x) == 1 in float32'),
                                   (NEGATIVE_BREAK, '1 - (1 - p) == 0 in float32'))):
        ax.axhline(y, color=BREAK_COLOR, linestyle=':', linewidth=1.2, zorder=2,
                   label=None if i else 'break points of the original loss (float32)')
        ax.text(0, y, f' {text} ({y:+g})', color=BREAK_COLOR, fontsize=7, va='bottom')
    ax.set_xlabel('optimizer step')
    ax.set_ylabel('logit')
    ax.set_title('Most confident logits per epoch vs the original loss\'s break points')
    # below the axes: the curves can be anywhere between the break points
    ax.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.14), ncol=2,
              frameon=False)
    return fig


def plot_logit_extremes(records, path):
    """:func:`logit_extremes_figure`, written to ``path``."""
    plt = _pyplot()
    fig = logit_extremes_figure(records)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)
