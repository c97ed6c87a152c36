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

MODES = [('none', 'original (torchvision form)', 'tab:red', '-'),
         ('epsilon', 'epsilon = 1e-3 (published fix)', 'tab:orange', '--'),
         ('exact', 'exact (ours, default)', 'tab:blue', ':')]


def gradient(x: torch.Tensor, target: float, gamma: float, stabilizer: str) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(x, torch.full_like(x, target), alpha=0.25, gamma=gamma,
                              stabilizer=stabilizer)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('--gamma', type=float, default=0.5, help='focal loss gamma')
    parser.add_argument('--out', default='results/gradient_vs_logit.png',
                        help='the PNG to write')
    args = parser.parse_args()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, target, x in ((axes[0], 1.0, torch.linspace(0, 40, 801)),
                          (axes[1], 0.0, torch.linspace(-40, 0, 801))):
        for mode, label, color, style in MODES:
            g = gradient(x, target, args.gamma, mode).abs()
            finite = torch.isfinite(g)
            ax.semilogy(x[finite], g[finite].clamp(min=1e-30), style, color=color, label=label)
            if (~finite).any():
                ax.plot(x[~finite][::20], torch.full_like(x[~finite][::20], 1e2), 'x',
                        color=color, label=f'{mode}: gradient is NaN')
        kind = 'positive (t = 1)' if target == 1 else 'negative (t = 0)'
        ax.set_title(f'{kind}, gamma = {args.gamma}, float32')
        ax.set_xlabel('logit x')
        ax.grid(True, which='both', alpha=0.3)
    axes[0].set_ylabel('|d loss / d x|')
    axes[1].legend(loc='lower left', fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
