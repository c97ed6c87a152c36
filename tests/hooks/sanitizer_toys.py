"""Small real training setups for the GradientSanitizerHook tests (and the DDP script).

Everything trains through MMEngine's real ``Runner``, loops, optim wrappers, CheckpointHook and
MessageHub. Faults are injected from outside the hook under test: a test hook registers a
tensor hook on a parameter (NaN/Inf in its gradient), flips a flag the model reads (NaN/Inf in
a loss term), or writes NaN into a parameter.
"""
from __future__ import annotations

import glob
import os.path as osp
import uuid

import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import focal_plugin  # noqa: F401  (registers GradientSanitizerHook)

NAN = float('nan')
INF = float('inf')


class ToyDataset(Dataset):
    """Regression samples with per-sample metainfo (an ``img_path`` like detection data)."""

    def __init__(self, size: int = 64, seed: int = 0, poison: dict | None = None):
        generator = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(size, 4, generator=generator)
        weights = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        self.targets = self.inputs @ weights + 0.1 * torch.randn(size, 1, generator=generator)
        for index, value in (poison or {}).items():  # a corrupt sample, e.g. an Inf pixel
            self.inputs[index, 0] = value

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.inputs[index],
                    data_samples=dict(target=self.targets[index],
                                      img_path=f'toy/sample_{index:03d}.png', sample_idx=index))


class ToyModel(BaseModel):
    """backbone/neck/head like a detector; BatchNorm so that buffers exist."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True))
        self.neck = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Linear(16, 1)
        self.loss_fault: str | None = None  # set by FaultInjectionHook for one iteration

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        out = self.head(self.neck(self.backbone(x)))
        self.last_output_dtype = out.dtype  # bfloat16 under CPU autocast
        if mode != 'loss':
            return out
        # pseudo_collate (the Runner's default) turns the per-sample dicts into a dict of lists
        target = torch.stack(list(data_samples['target']))
        losses = dict(loss_reg=F.mse_loss(out.float(), target.float()),
                      loss_aux=0.01 * out.float().pow(2).mean())
        if self.loss_fault == 'nan':
            losses['loss_aux'] = losses['loss_aux'] * NAN
        elif self.loss_fault == 'inf':
            losses['loss_aux'] = losses['loss_aux'] + INF
        elif self.loss_fault == 'detached_nan':
            # a logged loss term outside the autograd graph: loss NaN, gradients finite
            losses['loss_detached'] = torch.tensor(NAN)
        losses['acc'] = torch.tensor(NAN)  # not a loss term (no 'loss' in its name): ignored
        return losses


class SpectralToyModel(ToyModel):
    """ToyModel with a complex64 parameter: a spectral filter applied after ``rfft`` (the
    complex parameters of FNO-style layers and learned frequency filters)."""

    def __init__(self):
        super().__init__()
        self.spectral = nn.Parameter(torch.ones(3, dtype=torch.complex64))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        filtered = torch.fft.irfft(torch.fft.rfft(x.float(), dim=1) * self.spectral, n=4, dim=1)
        return super().forward(filtered.to(x.dtype), data_samples, mode)


class GrowingToyModel(ToyModel):
    """ToyModel whose training may attach a second head (with BatchNorm) mid-run, as
    progressive unfreezing or a head added by a hook does."""

    def __init__(self):
        super().__init__()
        self.extra = None

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if self.extra is None:
            return super().forward(inputs, data_samples, mode)
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        features = self.neck(self.backbone(x))
        out = self.head(features) + self.extra(features)
        if mode != 'loss':
            return out
        target = torch.stack(list(data_samples['target']))
        return dict(loss_reg=F.mse_loss(out.float(), target.float()))


class AttachHeadHook(Hook):
    """Attaches ``GrowingToyModel.extra`` before iteration ``at`` (0-based) and adds its
    parameters to the optimizer as a new param group."""

    priority = 'HIGHEST'

    def __init__(self, at: int):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != self.at:
            return
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        torch.manual_seed(1)
        model.extra = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                    nn.Linear(8, 1))
        runner.optim_wrapper.optimizer.add_param_group(
            dict(params=list(model.extra.parameters())))


class ToyMSE(BaseMetric):
    """Validation metric of the toy regression (a real MMEngine metric, for val loops)."""

    def process(self, data_batch, data_samples) -> None:
        target = torch.stack(list(data_batch['data_samples']['target']))
        out = torch.stack([torch.as_tensor(s) for s in data_samples]).float()
        self.results.append(float(((out - target) ** 2).mean()))

    def compute_metrics(self, results) -> dict:
        # `validations` only grows: with save_best='validations' every best save is due
        self.validations = getattr(self, 'validations', 0) + 1
        return dict(mse=sum(results) / len(results), validations=self.validations)


class ValRecordHook(Hook):
    """The epoch/iteration counters and metrics of every validation (lowest priority)."""

    priority = 'LOWEST'

    def __init__(self):
        self.validations: list[dict] = []

    def after_val_epoch(self, runner, metrics=None):
        self.validations.append(dict(epoch=runner.epoch, iter=runner.iter, metrics=metrics))


class FaultInjectionHook(Hook):
    """Injects faults at chosen (0-based) iterations.

    ``faults`` maps an iteration to one of: ``'grad_nan'``, ``'grad_inf'`` (into the gradient
    of ``param``), ``'loss_nan'``, ``'loss_inf'``, ``'loss_detached_nan'`` (into a loss term),
    ``'param_nan'`` (into ``param`` itself, in ``before_train_iter``),
    ``'param_nan_after_step'`` (in ``after_train_iter``, with a priority above the hook under
    test), ``'input_nan'`` or ``'input_huge'`` (the second sample of this iteration's batch
    only: a NaN pixel, or the whole sample times 1e30, finite). ``ranks`` restricts injection
    to some ranks.
    """

    priority = 'HIGH'

    def __init__(self, faults: dict, param: str = 'neck.0.weight', ranks=None):
        self.faults = dict(faults)
        self.param = param
        self.ranks = ranks
        self.injected: list[tuple[int, str]] = []
        self._handle = None

    def _target(self, runner) -> nn.Parameter:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        return dict(model.named_parameters())[self.param]

    def _active(self) -> bool:
        from mmengine.dist import get_rank
        return self.ranks is None or get_rank() in self.ranks

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        fault = self.faults.get(runner.iter)
        if fault is None or not self._active():
            return
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        if fault in ('grad_nan', 'grad_inf'):
            value = NAN if fault == 'grad_nan' else INF

            def corrupt(grad, value=value):
                grad = grad.clone()
                grad.view(-1)[:3] = value
                return grad
            self._handle = self._target(runner).register_hook(corrupt)
        elif fault.startswith('loss_'):
            model.loss_fault = fault[len('loss_'):]
        elif fault == 'param_nan':
            with torch.no_grad():
                self._target(runner).view(-1)[0] = NAN
        elif fault in ('input_nan', 'input_huge'):
            inputs = data_batch['inputs']  # a copy: the dataset's tensor stays clean
            inputs[1] = inputs[1].clone()
            if fault == 'input_nan':
                inputs[1][0] = NAN
            else:
                inputs[1].mul_(1e30)
        self.injected.append((runner.iter, fault))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        model.loss_fault = None
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.faults.get(runner.iter) == 'param_nan_after_step' and self._active():
            with torch.no_grad():
                self._target(runner).view(-1)[0] = NAN
            self.injected.append((runner.iter, 'param_nan_after_step'))


class RecordHook(Hook):
    """Records, after every iteration, what the tests need to check (lowest priority)."""

    priority = 'LOWEST'

    def __init__(self):
        self.finite_after_iter: list[bool] = []
        self.states: list[dict] = []  # model state_dict after each iteration
        self.momenta: list[list] = []  # SGD momentum buffers after each iteration
        self.scales: list[float] = []
        self.logged_counters: list[dict] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.states.append(state)
        self.finite_after_iter.append(all_finite(state))
        optimizer = getattr(runner.optim_wrapper, 'optimizer', None)
        if optimizer is not None:
            buffers = [optimizer.state.get(p, {}).get('momentum_buffer')
                       for group in optimizer.param_groups for p in group['params']]
            self.momenta.append([b.clone() if isinstance(b, torch.Tensor) else None
                                 for b in buffers])
        scaler = getattr(runner.optim_wrapper, 'loss_scaler', None)
        if scaler is not None:
            self.scales.append(float(scaler.get_scale()))
        hub = runner.message_hub
        self.logged_counters.append({
            key: hub.get_scalar(key).current()
            for key in ('train/nonfinite_skipped', 'train/nonfinite_events',
                        'train/nonfinite_sanitized', 'train/amp_overflow')
            if key in hub.log_scalars
        })


def build_model(seed: int = 0) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel()


def make_runner(work_dir: str,
                hook: dict | None = None,
                model: nn.Module | None = None,
                max_iters: int = 12,
                max_epochs: int | None = None,
                optim_wrapper=None,
                extra_hooks: tuple = (),
                checkpoint_interval: int = 4,
                max_keep_ckpts: int = -1,
                batch_size: int = 4,
                dataset_size: int = 64,
                dataset: Dataset | None = None,
                checkpoint_by_epoch: bool | None = None,
                val: bool = False,
                save_best: str | None = None,
                **runner_kwargs) -> Runner:
    """A real Runner around the toy model; ``hook`` is the GradientSanitizerHook config."""
    model = model if model is not None else build_model()
    by_epoch = max_epochs is not None
    train_cfg = (dict(by_epoch=True, max_epochs=max_epochs) if by_epoch else
                 dict(by_epoch=False, max_iters=max_iters))
    custom_hooks = ([hook] if hook is not None else []) + list(extra_hooks)
    if val:  # validate after every epoch / every checkpoint_interval iterations
        runner_kwargs.update(
            val_dataloader=dict(dataset=ToyDataset(8, seed=1),
                                sampler=dict(type='DefaultSampler', shuffle=False),
                                batch_size=4, num_workers=0),
            val_evaluator=[ToyMSE()], val_cfg=dict())
        train_cfg['val_interval'] = 1 if by_epoch else checkpoint_interval
    return Runner(
        model=model,
        work_dir=work_dir,
        experiment_name=f'gs_{uuid.uuid4().hex[:12]}',  # fresh logger/MessageHub per runner
        train_dataloader=dict(
            dataset=dataset if dataset is not None else ToyDataset(dataset_size),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=batch_size,
            num_workers=0),
        optim_wrapper=optim_wrapper if optim_wrapper is not None else dict(
            optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=train_cfg,
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=checkpoint_interval,
                            by_epoch=by_epoch if checkpoint_by_epoch is None
                            else checkpoint_by_epoch, max_keep_ckpts=max_keep_ckpts,
                            save_best=save_best, rule='greater' if save_best else None),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom_hooks,
        randomness=dict(seed=0),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        **runner_kwargs)


def sanitizer_of(runner: Runner):
    from focal_plugin.hooks import GradientSanitizerHook
    return next(h for h in runner.hooks if isinstance(h, GradientSanitizerHook))


def model_state(runner: Runner) -> dict:
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def all_finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values()
               if v.is_floating_point() or v.is_complex())


def checkpoints(work_dir: str) -> list[str]:
    return sorted(glob.glob(osp.join(work_dir, '*.pth')))


def checkpoint_is_finite(path: str) -> bool:
    state = torch.load(path, map_location='cpu', weights_only=False)['state_dict']
    return all_finite(state)


def current_iter_from_hub() -> int:
    return MessageHub.get_current_instance().get_info('iter')


class TwoOptimizerToyModel(ToyModel):
    """Trained by an ``OptimWrapperDict``: 'body' (backbone+neck) and 'head'."""

    def train_step(self, data, optim_wrapper):
        body, head = optim_wrapper['body'], optim_wrapper['head']
        with body.optim_context(self):
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode='loss')
        loss, log_vars = self.parse_losses(losses)
        body.update_params(loss)  # one backward fills both groups' gradients
        head.step()
        head.zero_grad()
        return log_vars


def two_optimizer_wrappers(model: TwoOptimizerToyModel, lr: float = 0.05):
    from mmengine.optim import OptimWrapper, OptimWrapperDict
    body_params = list(model.backbone.parameters()) + list(model.neck.parameters())
    return OptimWrapperDict(
        body=OptimWrapper(torch.optim.SGD(body_params, lr=lr, momentum=0.9)),
        head=OptimWrapper(torch.optim.SGD(model.head.parameters(), lr=lr, momentum=0.9)))
