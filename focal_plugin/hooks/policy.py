"""The sanitizer's rule: what happens to a non-finite update, as a plain state machine.

No torch, no mmengine: :class:`GradientSanitizerHook` feeds it verdicts (gradients bad? loss
bad? is a GradScaler on?) and carries out the :class:`Decision` it returns. Everything that
must survive a resume (counters, the two consecutive-run lengths) is here, in
:meth:`SanitizerPolicy.state_dict`.

    >>> rule = SanitizerPolicy(Policy.SKIP, max_consecutive=2, escalate_to=Policy.STOP)
    >>> [rule.on_nonfinite_update(grads_bad=True, loss_bad=False).action.value
    ...  for _ in range(3)]
    ['skipped', 'skipped', 'stopped']
    >>> rule.counters['escalations'], rule.stop_decided
    (1, True)
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

__all__ = ['Policy', 'Action', 'EventKind', 'RunStatus', 'Decision', 'SanitizerPolicy',
           'COUNTERS', 'ESCALATIONS']


class Policy(str, Enum):
    """What the user asked for (the hook's ``policy`` / ``escalate_to`` argument)."""
    WARN = 'warn'
    SKIP = 'skip'
    SANITIZE = 'sanitize'
    STOP = 'stop'
    RAISE = 'raise'

    @classmethod
    def parse(cls, value, name: str, choices: tuple = ()) -> Policy:
        allowed = tuple(p.value for p in (choices or cls))
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f'{name} must be one of {allowed}, got {value!r}')
        return cls(value)


ESCALATIONS = (Policy.STOP, Policy.RAISE)


class Action(str, Enum):
    """What was done (the ``action`` of a reported event)."""
    WARNED = 'warned'          # update applied anyway
    SKIPPED = 'skipped'        # update dropped
    SANITIZED = 'sanitized'    # NaN/Inf gradient entries set to 0, update applied
    STOPPED = 'stopped'        # training ends gracefully
    RAISED = 'raised'          # NonFiniteTrainingError
    REFUSED = 'refused'        # a checkpoint was not written
    RESTORED = 'restored'      # non-finite buffers put back from the snapshot, update applied

    @property
    def ends_training(self) -> bool:
        return self in (Action.STOPPED, Action.RAISED)

    @property
    def is_serious(self) -> bool:
        """Logged in full, at ERROR level."""
        return self in (Action.STOPPED, Action.RAISED, Action.REFUSED)


_ACTION_OF = {Policy.WARN: Action.WARNED, Policy.SKIP: Action.SKIPPED,
              Policy.SANITIZE: Action.SANITIZED, Policy.STOP: Action.STOPPED,
              Policy.RAISE: Action.RAISED}


class EventKind(str, Enum):
    """Where the non-finite values were found."""
    GRADIENT = 'gradient'      # in the gradients of an update
    LOSS = 'loss'              # in the loss only (gradients finite)
    PARAMETER = 'parameter'    # in the weights/buffers after an update
    CHECKPOINT = 'checkpoint'  # in a state about to be saved
    BUFFER = 'buffer'          # in buffers only (e.g. BatchNorm statistics), gradients finite

    @property
    def concerns_update(self) -> bool:
        return self in (EventKind.GRADIENT, EventKind.LOSS)


class RunStatus(str, Enum):
    """The ``status`` of the JSON report."""
    RUNNING = 'running'
    FINISHED = 'finished'
    STOPPED = 'stopped'
    RAISED = 'raised'


# the counters of the report and the checkpointed state (keys are the public names)
COUNTERS = ('events', 'skipped', 'sanitized', 'warned', 'amp_overflow', 'escalations',
            'refused_checkpoints', 'restored')


@dataclass(frozen=True)
class Decision:
    """The outcome for one audited update with non-finite values. ``action`` is None for an
    AMP overflow left to the GradScaler (not an event)."""
    action: Optional[Action]
    reason: Optional[str] = None
    escalated: bool = False


class SanitizerPolicy:
    """Counters, consecutive/overflow tracking and escalation.

    Args:
        policy: the action for a divergent update.
        max_consecutive: consecutive skipped/sanitized updates tolerated before escalating;
            None never escalates.
        escalate_to: ``Policy.STOP`` or ``Policy.RAISE``.
        max_consecutive_overflow: consecutive AMP overflows (non-finite gradients, finite
            loss, GradScaler on) left to the scaler before they count as divergence.
    """

    def __init__(self, policy: Policy, max_consecutive: Optional[int] = 10,
                 escalate_to: Policy = Policy.STOP,
                 max_consecutive_overflow: Optional[int] = 16):
        self.policy = Policy(policy)
        self.escalate_to = Policy(escalate_to)
        self.max_consecutive = max_consecutive
        self.max_consecutive_overflow = max_consecutive_overflow
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.consecutive = 0           # consecutive audited updates with an event
        self.consecutive_overflow = 0  # consecutive audited updates with an AMP overflow
        self.stop_decided = False      # no further update may be applied
        self.pending: Optional[Action] = None  # STOPPED/RAISED, to be carried out
        self._overflowed = False  # in the update being audited

    # ------------------------------------------------------------------ verdicts
    def on_nonfinite_update(self, grads_bad: bool, loss_bad: bool,
                            scaler_enabled: bool = False) -> Decision:
        overflow_reason = None
        if scaler_enabled and grads_bad and not loss_bad:
            self._overflowed = True
            self.consecutive_overflow += 1
            limit = self.max_consecutive_overflow
            if limit is None or self.consecutive_overflow <= limit:
                self.counters['amp_overflow'] += 1
                return Decision(None)
            overflow_reason = (
                f'AMP overflow in {self.consecutive_overflow} consecutive audited updates '
                f'(max_consecutive_overflow={limit}): the GradScaler is not recovering, '
                'treated as divergence')
        action, escalation = _ACTION_OF[self.policy], None
        if self.policy in (Policy.SKIP, Policy.SANITIZE):
            self.consecutive += 1
            if self.max_consecutive is not None and self.consecutive > self.max_consecutive:
                self.counters['escalations'] += 1
                action = _ACTION_OF[self.escalate_to]
                escalation = (f'{self.consecutive} consecutive non-finite updates exceed '
                              f'max_consecutive={self.max_consecutive}: escalating to '
                              f"'{self.escalate_to.value}'")
        self._count(action)
        reason = '; '.join(r for r in (overflow_reason, escalation) if r) or None
        return Decision(action, reason, escalated=escalation is not None)

    def corruption_action(self) -> Action:
        """The action once the weights themselves hold NaN/Inf: skipping or sanitizing an
        update cannot undo that, so those policies stop (or raise, if that is where they
        escalate)."""
        if self.policy is Policy.WARN:
            return Action.WARNED
        if self.policy is Policy.RAISE or (self.policy in (Policy.SKIP, Policy.SANITIZE)
                                           and self.escalate_to is Policy.RAISE):
            return Action.RAISED
        return Action.STOPPED

    def on_corrupt_state(self) -> Action:
        """Parameters/buffers are non-finite after an update."""
        action = self.corruption_action()
        self._count(action)
        return action

    def on_nonfinite_buffers(self) -> Action:
        """Buffers went non-finite in the forward passes of an update whose gradients and loss
        are finite (a finite but huge input overflowing BatchNorm's variance): the snapshot of
        before those passes is put back under every policy that keeps one, and the finite
        update goes on; ``warn`` keeps no snapshot and only reports."""
        self.counters['events'] += 1
        if self.policy is Policy.WARN:
            self.counters['warned'] += 1
            return Action.WARNED
        self.counters['restored'] += 1
        return Action.RESTORED

    def on_refused_checkpoint(self) -> Action:
        """A checkpoint of a non-finite state was refused; returns what follows."""
        self.counters['events'] += 1
        self.counters['refused_checkpoints'] += 1
        follow_up = self.corruption_action()
        self.stop_decided = self.stop_decided or follow_up is Action.STOPPED
        return follow_up

    def end_of_audited_update(self, had_event: bool) -> None:
        """A clean audited update ends the consecutive runs."""
        if not had_event:
            self.consecutive = 0
        if not self._overflowed:
            self.consecutive_overflow = 0
        self._overflowed = False

    def take_pending(self) -> Optional[Action]:
        """The terminal action decided in this iteration (once)."""
        pending, self.pending = self.pending, None
        return pending

    def _count(self, action: Action) -> None:
        self.counters['events'] += 1
        if action in (Action.SKIPPED, Action.SANITIZED, Action.WARNED):
            self.counters[action.value] += 1
        if action.ends_training:
            self.pending = action
            self.stop_decided = self.stop_decided or action is Action.STOPPED

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        return dict(counters=dict(self.counters), consecutive=self.consecutive,
                    consecutive_overflow=self.consecutive_overflow)

    def load_state_dict(self, state: dict) -> None:
        for key in COUNTERS:
            self.counters[key] = int(state.get('counters', {}).get(key, 0))
        self.consecutive = int(state.get('consecutive', 0))
        self.consecutive_overflow = int(state.get('consecutive_overflow', 0))
