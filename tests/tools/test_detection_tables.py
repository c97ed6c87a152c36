"""tools/detection_tables.py reads a run whose weights became non-finite as what it scored.

After a NaN training loss (the study's hook only warns, so the NaN update is applied) the
detector outputs nothing; mmdet's CocoMetric then returns no metric and MMEngine writes the
previous evaluation's values again into scalars.json. The table must not report that stale
value as the run's mAP.
"""
import json
import math

from tool_module import load_tool

detection_tables = load_tool('detection_tables')


def _val(m):
    return {'coco/bbox_mAP': m, 'coco/bbox_mAP_50': m + 0.1, 'coco/bbox_mAP_s': m - 0.1,
            'step': 0}


def _write_run(tmp_path, losses, maps):
    """Training rows every 50 iterations with the given losses, a validation every 100."""
    leg = tmp_path / '20260101_000000' / 'vis_data'
    leg.mkdir(parents=True)
    rows = []
    for i, loss in enumerate(losses, start=1):
        rows.append({'loss': loss, 'step': 50 * i})
        if i % 2 == 0:
            rows.append(_val(maps[i // 2 - 1]))
    (leg / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in rows))
    (tmp_path / 'done.json').write_text(json.dumps({'wall_s': 10.0}))


def test_a_validation_after_a_nan_loss_counts_as_zero(tmp_path):
    # the NaN arrives between 150 and 200; MMEngine repeats 0.3 at 200 and 300
    _write_run(tmp_path, [1.0, 0.8, 0.7, math.nan, math.nan, math.nan], [0.2, 0.3, 0.3])
    job = detection_tables.read_job(str(tmp_path), val_interval=100)
    assert [x for x, _ in job['val']] == [100, 200, 300]
    assert job['val'][0][1]['bbox_mAP'] == 0.2
    assert [m['bbox_mAP'] for _, m in job['val'][1:]] == [0.0, 0.0]
    assert job['dead_evals'] == [200, 300]
    row = detection_tables.summarize('v', {'seed0': job})
    assert row['bbox_mAP_mean'] == 0.0 and row['seeds_detecting_nothing_at_end'] == 1


def test_a_finite_run_keeps_its_values(tmp_path):
    _write_run(tmp_path, [1.0, 0.8, 0.7, 0.6], [0.2, 0.35])
    job = detection_tables.read_job(str(tmp_path), val_interval=100)
    assert [m['bbox_mAP'] for _, m in job['val']] == [0.2, 0.35] and job['dead_evals'] == []
    assert detection_tables.summarize('v', {'seed0': job})['bbox_mAP_mean'] == 0.35
