"""JSON helpers shared by the hook's report and the stress records."""
import json
import math

import pytest

from focal_plugin.jsonio import json_number, json_ready, write_json


@pytest.mark.parametrize('value, expected', [(1.5, 1.5), (float('nan'), 'nan'),
                                             (float('inf'), 'inf'), (-float('inf'), '-inf'),
                                             (3, 3.0)])
def test_json_number(value, expected):
    assert json_number(value) == expected


def test_write_json_strict_and_lenient(tmp_path):
    data = dict(a=[1.0, float('nan')], b={'c': float('-inf')})
    strict = tmp_path / 'sub' / 'strict.json'
    write_json(str(strict), data, strict=True)
    assert json.loads(strict.read_text()) == json_ready(data) == \
        dict(a=[1.0, 'nan'], b={'c': '-inf'})
    lenient = tmp_path / 'lenient.json'
    write_json(str(lenient), data)
    loaded = json.loads(lenient.read_text())
    assert math.isnan(loaded['a'][1]) and loaded['b']['c'] == -math.inf
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['lenient.json', 'strict.json', 'sub']
