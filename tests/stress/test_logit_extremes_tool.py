"""tools/plot_logit_extremes.py: per-epoch logit extremes of runs -> a figure and a CSV."""
import csv
import json

import pytest
from tool_module import load_tool


def test_extremes_of_two_runs_become_a_png_and_a_csv(tmp_path):
    for name, shift in (('a', 0.0), ('b', 1.0)):
        (tmp_path / name).mkdir()
        record = dict(iters_per_epoch=157, neg_logit_min=[-3.0 - shift, None, -9.5],
                      pos_logit_max=[2.0, 5.0 + shift, 11.0])
        (tmp_path / name / 'divergence.json').write_text(json.dumps(record))
    out = str(tmp_path / 'extremes')
    tool = load_tool('plot_logit_extremes')
    tool.main([f'none={tmp_path / "a"}', f'exact={tmp_path / "b" / "divergence.json"}',
               '--out', out])
    with open(out + '.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    rows = list(csv.DictReader(open(out + '.csv')))
    assert [(r['label'], r['step']) for r in rows] == [
        ('none', '157'), ('none', '314'), ('none', '471'),
        ('exact', '157'), ('exact', '314'), ('exact', '471')]
    assert rows[4]['pos_logit_max'] == '6.0' and rows[1]['neg_logit_min'] == ''


def test_a_run_without_a_record_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        load_tool('plot_logit_extremes').main([f'x={tmp_path}', '--out', str(tmp_path / 'o')])
