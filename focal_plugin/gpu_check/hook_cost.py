"""The ``hook`` section: what ``GradientSanitizerHook``'s audit costs inside a training loop.

A ResNet-50 (torchvision; a small conv net without it) trained with SGD on random images, batch
64 on CUDA (ResNet-18 at batch 4, 64x64, on the CPU), timed per step with and without the
audit the hook runs between backward and ``optimizer.step``: one fused finite check of every
gradient and the loss (:func:`focal_plugin.hooks.finite_check.any_nonfinite`) and its one host
read. Steps alternate between the two so that drift hits both alike. Needs mmengine (the hook
package); without it the section says so.
"""
from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

from ._common import log
from .speed import timer


def _model(device: str):
    try:
        from torchvision.models import resnet18, resnet50
        return (resnet50() if device == 'cuda' else resnet18()).to(device), 'torchvision ResNet'
    except ImportError:
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, 2, 1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(64, 128, 3, 2, 1), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(128, 1000))
        return net.to(device), 'a small conv net (no torchvision)'


def hook_cost(device: str, quick: bool) -> tuple:
    header = ['model', 'batch', 'step ms without the audit', 'step ms with the audit',
              'audit overhead']
    try:
        from focal_plugin.hooks.finite_check import any_nonfinite
    except ImportError as err:
        return header, [['skipped: needs mmengine (the hook package)', str(err), '', '', '']], []
    torch.manual_seed(0)
    model, name = _model(device)
    batch, size = (64, 224) if device == 'cuda' else (4, 64)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    params = [p for p in model.parameters()]
    seconds = timer(device)

    def step(audit):
        def run():
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            if audit and any(any_nonfinite([[p.grad for p in params], [loss.detach()]])):
                return  # not reached with finite data; the hook would act here
            optimizer.step()
        return run

    rounds = 6 if quick else 30
    for _ in range(2):
        step(True)(), step(False)()
    times = {False: [], True: []}
    for _ in range(rounds):
        for audit in (False, True):
            times[audit].append(seconds(step(audit)))
    off, on = (statistics.median(times[a]) * 1e3 for a in (False, True))
    log(f'hook: {rounds} alternating steps each')
    return header, [[name, batch, f'{off:.2f}', f'{on:.2f}', f'{(on / off - 1) * 100:+.1f} %']], [
        f'Median of {rounds} steps each, alternating; forward + cross-entropy + backward + SGD '
        'step. Reference at commit 8087270 on an H200 (same measurement, ResNet-50, batch 64): '
        '35.07 vs 35.92 ms, +2.4 %.']
