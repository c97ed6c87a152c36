"""Plot d(focal loss)/d(logit) of the three stabilizer modes in float32 (README figure).

    .venv/bin/python tools/plot_gradients.py --gamma 0.5 --out results/gradient_vs_logit.png

Where the original ('none') gradient is NaN the plot marks it with red crosses.
"""
import argparse

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from focal_plugin.cli import HelpFormatter  # noqa: E402
from focal_plugin.functional import sigmoid_focal_loss  # noqa: E402

# (mode, label, colour, style): drawn in this order, each above the last. Where the modes agree
# (most of both panels) the curves coincide, so 'exact' is a wide, light band at the bottom and
# 'none' a thin solid line on top of it: both stay visible.
MODES = [('exact', 'exact (ours, default)', 'tab:blue', dict(linewidth=5, alpha=0.35)),
         ('epsilon', 'epsilon = 1e-3 (published fix)', 'tab:orange',
          dict(linestyle='--', linewidth=1.5)),
         ('none', 'original (torchvision form)', 'tab:red', dict(linewidth=1.2))]


def gradient(x: torch.Tensor, target: float, gamma: float, stabilizer: str) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(x, torch.full_like(x, target), alpha=0.25, gamma=gamma,
                              stabilizer=stabilizer)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad


def make_figure(gamma: float):
    """The figure: |d loss / d x| of each mode for a positive and a negative, in float32; one
    legend below both panels, outside the data."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, target, x in ((axes[0], 1.0, torch.linspace(0, 40, 801)),
                          (axes[1], 0.0, torch.linspace(-40, 0, 801))):
        for z, (mode, label, color, style) in enumerate(MODES):
            g = gradient(x, target, gamma, mode).abs()
            finite = torch.isfinite(g)
            ax.semilogy(x[finite], g[finite].clamp(min=1e-30), color=color, label=label,
                        zorder=2 + z, **style)
            if (~finite).any():
                ax.plot(x[~finite][::20], torch.full_like(x[~finite][::20], 1e2), 'x',
                        color=color, label=f'{mode}: gradient is NaN', zorder=2 + z)
        kind = 'positive (t = 1)' if target == 1 else 'negative (t = 0)'
        ax.set_title(f'{kind}, gamma = {gamma}, float32')
        ax.set_xlabel('logit x')
        ax.grid(True, which='both', alpha=0.3)
    axes[0].set_ylabel('|d loss / d x|')
    handles, labels = axes[1].get_legend_handles_labels()  # both panels have every entry
    fig.legend(handles, labels, loc='lower center', ncol=len(labels), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # the bottom strip holds the legend
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('--gamma', type=float, default=0.5, help='focal loss gamma')
    parser.add_argument('--out', default='results/gradient_vs_logit.png',
                        help='the PNG to write')
    args = parser.parse_args()
    fig = make_figure(args.gamma)
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
