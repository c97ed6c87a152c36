"""Record how far a training run gets before its first non-finite step, and stop it there.

The stress tests ask one question per run: how far does training get before the loss (or the
gradient) turns non-finite? :class:`DivergenceRecorderHook` answers it in
``work_dir/divergence.json``, which ``tools/sweep.py`` reads; it also keeps the per-epoch
training loss/accuracy for the loss-curve figures.

Who detects the failure:

* With a ``GradientSanitizerHook(policy='stop')`` on the runner (as in the stress configs),
  that hook is the detector: it audits the gradients before ``optimizer.step``, does not apply
  the non-finite update and stops training. This hook then copies the sanitizer's first event
  (epoch, iteration, kind) and does no checking of its own.
* Without one, this hook checks after every iteration. The original focal loss with
  0 < gamma < 1 has a *finite* loss but a NaN gradient once a logit saturates, and
  ``optimizer.step()`` then writes NaN into the weights; so it checks the loss and the
  parameters: non-finite parameters after a step mean that step's gradient was non-finite
  (for SGD/Adam, which propagate it). Under AMP, steps with overflowing gradients are skipped
  by the loss scaler and leave the parameters finite, so they are (rightly) not failures.
"""
import json
import math
import os.path as osp

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop

from focal_plugin.hooks import GradientSanitizerHook
from focal_plugin.hooks.interception import StopTrainingNow, interruptible
from focal_plugin.hooks.policy import Policy
from focal_plugin.jsonio import write_json
from focal_plugin.registry import register_hook, register_loop

__all__ = ['DivergenceRecorderHook', 'InterruptibleEpochBasedTrainLoop', 'read_divergence']

RESULT_FILE = 'divergence.json'
# Per-epoch logit statistics: key logged by the model -> how batches combine into an epoch.
EXTREMES = {'neg_logit_min': min, 'pos_logit_max': max}


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def read_divergence(work_dir: str, file_name: str = RESULT_FILE):
    """The record a :class:`DivergenceRecorderHook` wrote in ``work_dir``, or None."""
    path = osp.join(work_dir, file_name)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _stopping_sanitizer(runner):
    """The runner's GradientSanitizerHook with policy 'stop', if any."""
    return next((hook for hook in runner.hooks if isinstance(hook, GradientSanitizerHook)
                 and hook.rule.policy is Policy.STOP), None)


@register_hook
class DivergenceRecorderHook(Hook):
    """Record the first non-finite training step (and, alone, detect it and stop training).

    ``work_dir/<file_name>`` (JSON) holds ``status`` ('running', 'completed' or 'diverged'),
    ``max_epochs``, ``iters_per_epoch``, ``completed_epochs``, ``nonfinite`` (``None`` or
    ``{'epoch', 'iteration', 'iter_in_epoch', 'reason', 'last_finite_loss'}``, 1-based,
    iterations counted over the whole run), per-epoch ``train_loss`` / ``train_acc`` means of
    the completed epochs, the last validation metrics and the dataset's
    ``positive_fraction``. Where the model logs them (``BinaryLogitModel`` does), per-epoch
    ``neg_logit_min`` / ``pos_logit_max``: the most confident logit of each class over the
    epoch's batches, to see how close a run gets to the loss's float32 break points. It is
    rewritten atomically at every epoch end, at the failure and at the end of training.

    Args:
        stop: when this hook detects the failure itself (no GradientSanitizerHook with
            policy 'stop' on the runner), stop training there.
        file_name: the record's name in ``work_dir``.
    """

    priority = 'LOW'  # after the optimizer step (in train_step) and after logging

    def __init__(self, stop: bool = True, file_name: str = RESULT_FILE):
        self.stop = stop
        self.file_name = file_name
        self.record = None
        self._epoch_sums = None
        self._epoch_extremes = {}
        self._sanitizer = None
        self._last_finite_loss = None

    # ------------------------------------------------------------------ recording helpers
    def _write(self, runner):
        if not is_main_process():
            return
        # atomically: readers (the sweep) never see a half-written file
        write_json(osp.join(runner.work_dir, self.file_name), self.record)

    def _new_record(self, runner):
        loop = runner.train_loop
        dataset = loop.dataloader.dataset
        metainfo = getattr(dataset, 'metainfo', None) or {}
        return dict(status='running', max_epochs=loop.max_epochs,
                    iters_per_epoch=len(loop.dataloader), completed_epochs=0, nonfinite=None,
                    train_loss=[], train_acc=[], val_metrics=None,
                    **{key: [] for key in EXTREMES},
                    positive_fraction=metainfo.get('positive_fraction'))

    # ---------------------------------------------------------------------------- hook API
    def before_train(self, runner):
        if self.record is None:  # else restored from a checkpoint by after_load_checkpoint
            self.record = self._new_record(runner)
        self.record['max_epochs'] = runner.train_loop.max_epochs  # a resume may extend it
        self.record['status'] = 'running'
        self._sanitizer = _stopping_sanitizer(runner)

    def before_train_epoch(self, runner):
        self._epoch_sums = dict(loss=0.0, acc=0.0, count=0)
        self._epoch_extremes = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.record['nonfinite'] is not None:
            return  # the rest of a stopped epoch (with mmengine's own loop) adds nothing
        loss = outputs.get('loss') if outputs else None
        loss = None if loss is None else loss.detach()
        loss_finite = loss is None or _all_finite([loss])
        if loss_finite and loss is not None:
            self._last_finite_loss = float(loss)
        reason = self._failure_reason(runner, loss_finite)
        if reason is None:
            self._epoch_sums['loss'] += float(loss) if loss is not None else 0.0
            self._epoch_sums['acc'] += float(outputs['acc']) if 'acc' in outputs else 0.0
            self._epoch_sums['count'] += 1
            for key, combine in EXTREMES.items():
                if key in outputs:
                    value = float(outputs[key])
                    seen = self._epoch_extremes.get(key)
                    self._epoch_extremes[key] = value if seen is None else combine(seen, value)
            return
        self._record_failure(runner, runner.epoch + 1, runner.iter + 1, reason)
        runner.logger.warning(
            f'First non-finite step: epoch {runner.epoch + 1}, iteration {runner.iter + 1} '
            f'({reason}).' + (' Stopping training.' if self.stop else ''))
        self._write(runner)
        if self.stop:
            runner.train_loop.stop_training = True

    def _failure_reason(self, runner, loss_finite):
        if self._sanitizer is not None:
            return None  # the sanitizer detects, and stops before the update lands
        if not loss_finite:
            return 'non-finite loss'
        if not _all_finite(p.detach() for p in runner.model.parameters()):
            return 'non-finite parameters after the optimizer step (non-finite gradient)'
        return None

    def _record_failure(self, runner, epoch, iteration, reason):
        iters_per_epoch = self.record['iters_per_epoch']
        self.record.update(
            status='diverged', completed_epochs=epoch - 1,
            nonfinite=dict(epoch=epoch, iteration=iteration,
                           iter_in_epoch=iteration - (epoch - 1) * iters_per_epoch,
                           reason=reason, last_finite_loss=self._last_finite_loss,
                           # the failing epoch's most confident logits, up to the failure
                           **{key: _finite_or_none(value)
                              for key, value in self._epoch_extremes.items()}))

    def _take_sanitizer_stop(self, runner):
        """Copy the stop of the GradientSanitizerHook (policy 'stop'): its first event."""
        event = self._sanitizer.first_event
        if not self._sanitizer.stopped or event is None:
            return
        self._record_failure(runner, event['epoch'], event['iter'],
                             f"GradientSanitizerHook: {event['kind']} ({event['action']})")

    def after_train_epoch(self, runner):
        if self.record['nonfinite'] is not None:
            return
        sums = self._epoch_sums
        if sums['count']:
            self.record['train_loss'].append(sums['loss'] / sums['count'])
            self.record['train_acc'].append(sums['acc'] / sums['count'])
        for key, value in self._epoch_extremes.items():
            # +-inf (a class absent all epoch) is not JSON: None
            self.record.setdefault(key, []).append(_finite_or_none(value))
        self.record['completed_epochs'] = runner.epoch + 1
        self._write(runner)

    def after_val_epoch(self, runner, metrics=None):
        if self.record is not None and metrics:
            self.record['val_metrics'] = {k: _finite_or_none(v) for k, v in metrics.items()
                                          if isinstance(v, (int, float))}
            self._write(runner)

    def after_train(self, runner):
        if self.record['nonfinite'] is None and self._sanitizer is not None:
            self._take_sanitizer_stop(runner)
        if self.record['nonfinite'] is None:
            loop = runner.train_loop  # cut short without a non-finite step: a signal
            done = (loop.epoch >= loop.max_epochs if hasattr(loop, 'max_epochs')
                    else loop.iter >= loop.max_iters)
            self.record['status'] = 'completed' if done else 'interrupted'
        self._write(runner)

    # A resumed run continues the same record.
    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint['divergence_record'] = self.record

    def after_load_checkpoint(self, runner, checkpoint):
        self.record = checkpoint.get('divergence_record', self.record)


@register_loop
class InterruptibleEpochBasedTrainLoop(EpochBasedTrainLoop):
    """MMEngine's epoch loop, except that ``stop_training`` set during an iteration (by
    :class:`DivergenceRecorderHook`, for one) ends the epoch once that iteration's hooks have
    run, instead of after the epoch's remaining iterations, which would only push NaN through
    the network. The interrupted epoch is not completed: no ``after_train_epoch`` (so no
    ``epoch_N.pth`` of a partial, non-finite epoch), and ``runner.epoch`` stays at it;
    ``after_train`` still runs. The same mechanism as ``GradientSanitizerHook``'s stop
    (:func:`focal_plugin.hooks.interception.interruptible`)."""

    def run_epoch(self) -> None:
        interruptible(super().run_epoch, self)()

    def run_iter(self, idx, data_batch) -> None:
        super().run_iter(idx, data_batch)
        if self.stop_training:
            raise StopTrainingNow()
