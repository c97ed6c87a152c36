"""GradientSanitizerHook's guarantees in every pair of configuration options, crossed with the
faults (issue 34): a pairwise covering design over policy x optim wrapper x accumulation x
loop x checkpoint alignment x compile x clip_grad x fault (see ``sanitizer_matrix.py``).

Every cell checks the same invariants, against a reference run without the hook that drops the
same window (``RollbackHook``):
  * every saved checkpoint is finite and holds the reference's state at its iteration (a save
    inside the faulty window: the state of before the window);
  * ``skip``: every iteration's model state equals the reference's; the run reaches its end;
  * ``stop``: the run ends at the window's end, ``last_good_iter_N.pth`` holds the reference
    state, and a resume from it trains to the end without stopping again;
  * ``raise``: NonFiniteTrainingError at the window's end, the model as the reference's;
  * ``sanitize``/``warn``: the run reaches its end (``sanitize`` with finite weights);
  * the first event (or AMP overflow) names the window's last iteration and the parameters.
"""
import json
import os.path as osp

import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module
import pytest
import torch
from sanitizer_matrix import (
    FACTORS,
    IMPOSSIBLE,
    ITERS,
    RollbackHook,
    Window,
    cell_id,
    covered_pairs,
    iteration_of,
    pairwise,
    required_pairs,
    train,
)
from sanitizer_toys import all_finite, checkpoints, model_state, sanitizer_of

CELLS = pairwise()


def test_the_cells_cover_every_possible_pair_of_option_values():
    required = required_pairs()
    covered = covered_pairs(CELLS) | {(b, a) for a, b in covered_pairs(CELLS)}
    assert required <= covered
    assert all(pair not in covered and (pair[1], pair[0]) not in covered for pair in IMPOSSIBLE)
    assert len(CELLS) == 31  # stated in README's Testing section
    n_values = sum(len(v) for v in FACTORS.values())
    assert len(required) == sum(
        len(a) * len(b) for i, a in enumerate(FACTORS.values())
        for b in list(FACTORS.values())[i + 1:]) - len(IMPOSSIBLE) and n_values == 27


def states_match(actual: dict, expected: dict) -> bool:
    return actual.keys() == expected.keys() and all(
        torch.allclose(actual[k].float() if not actual[k].is_complex() else actual[k],
                       expected[k].float() if not expected[k].is_complex() else expected[k],
                       rtol=1e-5, atol=1e-6, equal_nan=True)
        if actual[k].is_floating_point() or actual[k].is_complex()
        else torch.equal(actual[k], expected[k]) for k in actual)


# what each fault may be found as: an update event's kind, or 'overflow' (GradScaler's)
KINDS = {'grad_nan': {'gradient', 'overflow'}, 'complex_nan': {'gradient'},
         'loss_nan': {'loss', 'gradient'}, 'loss_inf': {'loss', 'gradient'},
         'input_nan': {'loss', 'gradient'}, 'input_huge': {'buffer', 'gradient', 'overflow'}}


def found_as(report: dict) -> str:
    events = [e for e in report['events'] if e['kind'] != 'checkpoint']
    return events[0]['kind'] if events else 'overflow'


def terminal_action(report: dict) -> str | None:
    return next((e['action'] for e in report['events'] if e['action'] in ('stopped', 'raised')),
                None)


def reference_for(report: dict, wrapper: str) -> tuple[list, str]:
    """What the hook says it did in the window -> what the reference puts back: the
    parameters of the wrappers whose update was dropped (all of them once training stops),
    the buffers (only the non-finite ones with several wrappers)."""
    names = ['body', 'head'] if wrapper == 'dict' else ['']
    buffers = 'nonfinite' if wrapper == 'dict' else 'all'
    kind = found_as(report)
    if kind == 'overflow':  # the GradScaler skipped the step, the buffers stay
        return names, 'none'
    if kind == 'buffer':
        return [], buffers
    if terminal_action(report):
        return names, buffers
    return [e['optim_wrapper'] for e in report['events'] if e['action'] == 'skipped'], buffers


def check_event_names_the_window(report: dict, cell: dict, window: Window) -> None:
    first = (report['events'] or report['amp_overflows'])[0]
    assert first['iter'] == window.end, first
    names = [t['name'] for info in first.get('ranks', [])
             for t in info.get('nonfinite_tensors', [])]
    assert not any(name.startswith('<') for name in names)
    expected = {'grad_nan': 'neck.0.weight', 'complex_nan': 'spectral'}.get(cell['fault'])
    if expected and report['events']:
        assert expected in names
    if first.get('kind') == 'buffer':
        assert 'backbone.1.running_var' in names


@pytest.mark.slow
@pytest.mark.parametrize('cell', CELLS, ids=[cell_id(c) for c in CELLS])
def test_cell(cell, tmp_path, monkeypatch):
    # AmpOptimWrapper asserts a GPU although its CPU path works: lift only that assertion
    monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    window, policy = Window.of(cell['accumulation']), cell['policy']
    work_dir = str(tmp_path / 'run')
    runner, record, error = train(cell, work_dir, hooked=True)
    with open(osp.join(work_dir, 'gradient_sanitizer_report.json')) as f:
        report = json.load(f)
    check_event_names_the_window(report, cell, window)
    kind = found_as(report)
    assert kind in KINDS[cell['fault']]
    # the policy decides what follows a non-finite update; repaired buffers and an overflow
    # left to the GradScaler are not one, and the run goes on
    terminal = ({'stop': 'stopped', 'raise': 'raised'}.get(policy)
                if kind in ('gradient', 'loss') else None)
    assert terminal_action(report) == terminal
    saved = checkpoints(work_dir)
    assert all(all_finite(torch.load(p, map_location='cpu', weights_only=False)['state_dict'])
               for p in saved)
    if policy in ('warn', 'sanitize'):  # updates applied: no dropped-window reference
        assert error is None and runner.iter == ITERS
        if policy == 'sanitize':  # inside the window the verdict is not in yet
            finite = record.finite_after_iter
            assert all(finite[:window.start - 1]) and all(finite[window.end - 1:])
        return

    wrappers, buffers = reference_for(report, cell['wrapper'])
    _, ref, _ = train(cell, str(tmp_path / 'reference'), hooked=False,
                      rollback=RollbackHook(window, wrappers, buffers))
    done = len(record.states)  # iterations the hooked run completed
    for i in range(done):
        assert states_match(record.states[i], ref.states[i]), f'iteration {i + 1}'
    for path in saved:  # a save inside the window: the state of before it
        n = iteration_of(path)
        expected = ref.states[n - 1]
        if window.start <= n < window.end and not all_finite(expected):
            expected = ref.states[window.start - 2]
        saved_state = torch.load(path, map_location='cpu', weights_only=False)['state_dict']
        assert states_match(saved_state, expected), path

    if terminal is None:
        assert error is None and runner.iter == ITERS and not sanitizer_of(runner).stopped
    elif terminal == 'raised':
        assert error is not None and done == window.end - 1
        assert states_match(model_state(runner), ref.states[window.end - 1])
    else:  # stop: the last good state, then a resume that goes past the batch
        assert error is None and runner.iter == window.end and sanitizer_of(runner).stopped
        last_good = osp.join(work_dir, f'last_good_iter_{window.end}.pth')
        assert last_good in saved
        resumed, resumed_record, resumed_error = train(cell, work_dir, hooked=True,
                                                       resume=True)
        assert resumed_error is None and resumed.iter == ITERS
        assert not sanitizer_of(resumed).stopped and all(resumed_record.finite_after_iter)
        assert len(resumed_record.states) == ITERS - window.end
