"""The configuration matrix of GradientSanitizerHook: options a user combines, crossed with
faults, as a pairwise covering design (every pair of option values in some cell).

A cell trains the toy model twice through a real Runner: once with the hook under test, and
once without it but with :class:`RollbackHook`, an independent reference that puts back, at the
end of the faulty accumulation window, what the hook's contract says a dropped window leaves
(parameters, optimizer state, buffers). Both runs see the same data and the same fault.
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass

import torch
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper, OptimWrapper, OptimWrapperDict
from sanitizer_toys import (
    FaultInjectionHook,
    RecordHook,
    ToyDataset,
    ToyModel,
    make_runner,
)

from focal_plugin.hooks import NonFiniteTrainingError

# Values are listed cheapest first: on ties the generator picks the first one.
FACTORS = {
    'fault': ('grad_nan', 'loss_nan', 'input_nan', 'loss_inf', 'complex_nan', 'input_huge'),
    'policy': ('skip', 'sanitize', 'stop', 'raise', 'warn'),
    'wrapper': ('plain', 'amp_bf16', 'amp_scaler', 'dict'),
    'accumulation': (1, 3),
    'loop': ('iter', 'epoch'),
    'checkpoint': ('aligned', 'inside_window'),
    'clip_grad': (False, True),
    'compile': (False, True),
    'grows': (False, True),  # a head and its param group attached mid-run, before the fault
}

# Pairs no cell can hold, with the reason (asserted to be the only uncovered pairs).
IMPOSSIBLE = {
    (('accumulation', 1), ('checkpoint', 'inside_window')):
        'a window of one iteration has no inside: every checkpoint is at a window end',
    (('wrapper', 'amp_scaler'), ('fault', 'complex_nan')):
        "GradScaler.unscale_ is not implemented for complex gradients on CPU "
        "('_amp_foreach_non_finite_check_and_unscale_cpu' for ComplexFloat): a model with "
        'a complex parameter cannot train with a GradScaler there, fault or not',
}
# mmengine's CPU autocast accepts only bfloat16 (mmengine.runner.amp.autocast asserts it) and
# its default scaler, torch.cuda.amp.GradScaler, disables itself without a GPU: the
# 'amp_scaler' cell is bf16 autocast with the real torch.amp.GradScaler('cpu'), whose
# overflow handling (inf check, skipped step, lower scale) is the one fp16 training uses.

ITERS, FAULT_ITER, GROW_ITER = 20, 10, 4  # 1-based; 10 iterations per epoch


def _allowed(assignment: dict) -> bool:
    return not any(all(assignment.get(k) == v for k, v in pair) for pair in IMPOSSIBLE)


def required_pairs(factors: dict = FACTORS) -> set:
    pairs = set()
    for (f1, v1s), (f2, v2s) in itertools.combinations(factors.items(), 2):
        for v1, v2 in itertools.product(v1s, v2s):
            if _allowed({f1: v1, f2: v2}):
                pairs.add(((f1, v1), (f2, v2)))
    return pairs


def covered_pairs(cells: list[dict]) -> set:
    return {tuple(pair) for cell in cells
            for pair in itertools.combinations(cell.items(), 2)}


def pairwise(factors: dict = FACTORS) -> list[dict]:
    """A deterministic greedy covering design: each new cell starts from the first uncovered
    pair and fills the other factors with the value covering most uncovered pairs (the first,
    cheapest value on ties), never an impossible pair."""
    names = list(factors)
    uncovered = required_pairs(factors)
    cells = []
    while uncovered:
        (f1, v1), (f2, v2) = min(uncovered, key=lambda p: (names.index(p[0][0]),
                                                            factors[p[0][0]].index(p[0][1]),
                                                            names.index(p[1][0]),
                                                            factors[p[1][0]].index(p[1][1])))
        cell = {f1: v1, f2: v2}
        for name in names:
            if name in cell:
                continue
            best, gain = None, -1
            for value in factors[name]:
                trial = dict(cell, **{name: value})
                if not _allowed(trial):
                    continue
                new = sum(((a, b) in uncovered or (b, a) in uncovered)
                          for a, b in ((item, (name, value)) for item in cell.items()))
                if new > gain:
                    best, gain = value, new
            cell[name] = best
        cell = {name: cell[name] for name in names}
        uncovered -= {tuple(p) for p in itertools.combinations(cell.items(), 2)}
        uncovered -= {(b, a) for a, b in itertools.combinations(cell.items(), 2)}
        cells.append(cell)
    return cells


@dataclass(frozen=True)
class Window:
    """The accumulation window (1-based iterations) that holds the fault."""
    start: int
    end: int

    @classmethod
    def of(cls, accumulation: int) -> Window:
        start = (FAULT_ITER - 1) // accumulation * accumulation + 1
        return cls(start, min(start + accumulation - 1, ITERS))


class MatrixModel(ToyModel):
    """The toy model, optionally with a complex spectral filter on its input, trained by an
    ``OptimWrapperDict`` ('body': backbone, neck, filter; 'head': head, head_extra), and
    growing a second head (``head_extra``, with BatchNorm) during training."""

    def __init__(self, spectral: bool, split: bool):
        super().__init__()
        self.split = split
        self.spectral = nn_complex_filter() if spectral else None
        self.head_extra = None

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        if self.spectral is not None:
            spectrum = torch.fft.rfft(x.float(), dim=1) * self.spectral
            x = torch.fft.irfft(spectrum, n=x.shape[1], dim=1).to(x.dtype)
        if self.head_extra is None:
            return super().forward(x, data_samples, mode)
        features = self.neck(self.backbone(x))
        out = self.head(features) + self.head_extra(features)
        if mode != 'loss':
            return out
        losses = super().forward(x, data_samples, mode)  # the fault flags, the aux term
        target = torch.stack(list(data_samples['target']))
        losses['loss_reg'] = torch.nn.functional.mse_loss(out.float(), target.float())
        return losses

    def train_step(self, data, optim_wrapper):
        if not self.split:
            return super().train_step(data, optim_wrapper)
        body = optim_wrapper['body']
        with body.optim_context(self):
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode='loss')
        loss, log_vars = self.parse_losses(losses)
        body.update_params(loss)  # one backward fills both wrappers' gradients
        self._step_head(optim_wrapper)
        return log_vars

    @torch.compiler.disable
    def _step_head(self, optim_wrapper):
        # the head steps with the body's windows; kept out of tracing so that the window
        # counter, a Python int, does not recompile the graph at every iteration
        if optim_wrapper['body'].should_update():
            optim_wrapper['head'].step()
            optim_wrapper['head'].zero_grad()


def nn_complex_filter() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))


def body_and_head(model: MatrixModel) -> dict[str, list]:
    named = list(model.named_parameters())
    return dict(body=[p for n, p in named if not n.startswith('head')],
                head=[p for n, p in named if n.startswith('head')])


class GrowHook(Hook):
    """Attaches ``head_extra`` before iteration ``GROW_ITER`` and gives its parameters to the
    optimizer as a new param group (of the 'head' wrapper of an ``OptimWrapperDict``)."""

    priority = 'HIGHEST'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 != GROW_ITER:
            return
        torch.manual_seed(1)
        runner.model.head_extra = torch.nn.Sequential(
            torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
            torch.nn.Linear(8, 1))
        wrapper = runner.optim_wrapper
        wrapper = wrapper['head'] if isinstance(wrapper, OptimWrapperDict) else wrapper
        wrapper.optimizer.add_param_group(dict(params=list(runner.model.head_extra.parameters())))


def optim_wrapper_of(cell: dict, model: MatrixModel):
    """The cell's optim wrapper, built as a user's config would build it."""
    clip = dict(max_norm=1.0) if cell['clip_grad'] else None
    counts = cell['accumulation']

    def sgd(params):
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    if cell['wrapper'] == 'dict':
        return OptimWrapperDict(**{
            name: OptimWrapper(sgd(params), accumulative_counts=counts, clip_grad=clip)
            for name, params in body_and_head(model).items()})
    if cell['wrapper'] == 'plain':
        return OptimWrapper(sgd(model.parameters()), accumulative_counts=counts,
                            clip_grad=clip)
    wrapper = AmpOptimWrapper(optimizer=sgd(model.parameters()), dtype='bfloat16',
                              accumulative_counts=counts, clip_grad=clip)
    if cell['wrapper'] == 'amp_scaler':
        wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=2.0**8)
    return wrapper


def fault_injection(cell: dict) -> FaultInjectionHook:
    fault = cell['fault']
    if fault == 'complex_nan':
        return FaultInjectionHook({FAULT_ITER - 1: 'grad_nan'}, param='spectral')
    return FaultInjectionHook({FAULT_ITER - 1: fault})


class RollbackHook(Hook):
    """The reference: at the end of ``window``, put back the parameters of ``wrappers`` (and
    their optimizer state) and the buffers (``'all'``, ``'nonfinite'`` or ``'none'``) as they
    were before the window began. Priority above CheckpointHook and RecordHook."""

    priority = 'NORMAL'

    def __init__(self, window: Window, wrappers: list[str], buffers: str):
        self.window, self.wrappers, self.buffers = window, wrappers, buffers
        self._saved = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.window.start:
            self._saved = (copy.deepcopy(runner.model.state_dict()),
                           copy.deepcopy(runner.optim_wrapper.state_dict()))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 != self.window.end:
            return
        model_state, wrapper_state = self._saved
        model, wrapper = runner.model, runner.optim_wrapper
        params = dict(model.named_parameters())
        groups = (body_and_head(model) if isinstance(wrapper, OptimWrapperDict)
                  else {'': list(model.parameters())})
        with torch.no_grad():
            for name in self.wrappers:
                ids = {id(p) for p in groups[name]}
                for key, param in params.items():
                    if id(param) in ids:
                        param.copy_(model_state[key])
                if isinstance(wrapper, OptimWrapperDict):
                    wrapper[name].load_state_dict(wrapper_state[name])
                else:
                    wrapper.load_state_dict(wrapper_state)
            for key, buffer in model.named_buffers():
                bad = buffer.is_floating_point() and not bool(torch.isfinite(buffer).all())
                if self.buffers == 'all' or (self.buffers == 'nonfinite' and bad):
                    buffer.copy_(model_state[key])


def checkpoint_schedule(cell: dict) -> dict:
    """``make_runner`` arguments of the cell's checkpoints: 'aligned' saves only at window
    ends; 'inside_window' has a save at iteration 10, inside window 10-12."""
    by_epoch_loop = cell['loop'] == 'epoch'
    if cell['checkpoint'] == 'inside_window':
        return (dict(checkpoint_interval=1, checkpoint_by_epoch=True) if by_epoch_loop
                else dict(checkpoint_interval=5))
    if cell['accumulation'] == 1:
        return (dict(checkpoint_interval=1, checkpoint_by_epoch=True) if by_epoch_loop
                else dict(checkpoint_interval=5))
    return dict(checkpoint_interval=6, checkpoint_by_epoch=False)


def train(cell: dict, work_dir: str, hooked: bool, rollback: RollbackHook | None = None,
          resume: bool = False):
    """One run of the cell; returns (runner, RecordHook, the error it raised or None)."""
    torch.manual_seed(0)
    model = MatrixModel(spectral=cell['fault'] == 'complex_nan', split=cell['wrapper'] == 'dict')
    record = RecordHook()
    hooks = ([fault_injection(cell), record] + ([rollback] if rollback else [])
             + ([GrowHook()] if cell['grows'] else []))
    loop = dict(max_epochs=ITERS // 10) if cell['loop'] == 'epoch' else dict(max_iters=ITERS)
    extra = dict(cfg=dict(compile=dict(backend='eager'))) if hooked and cell['compile'] else {}
    if resume:
        extra['resume'] = True
    if hooked and cell['compile']:
        torch._dynamo.reset()  # a fresh model per cell: stay far from the recompile limit
    runner = make_runner(
        work_dir, dict(type='GradientSanitizerHook', policy=cell['policy']) if hooked else None,
        model=model, optim_wrapper=optim_wrapper_of(cell, model), dataset=ToyDataset(40),
        extra_hooks=tuple(hooks), **loop, **checkpoint_schedule(cell), **extra)
    try:
        runner.train()
        return runner, record, None
    except NonFiniteTrainingError as error:
        return runner, record, error


def iteration_of(path: str) -> int:
    """The 1-based iteration after which a checkpoint file was written."""
    name = path.rsplit('/', 1)[-1]
    number = int(re.search(r'(\d+)\.pth$', name).group(1))
    return number * 10 if name.startswith('epoch_') else number


def cell_id(cell: dict) -> str:
    return '-'.join(f'{v}' if not isinstance(v, bool) else (k if v else f'no_{k}')
                    for k, v in cell.items())
