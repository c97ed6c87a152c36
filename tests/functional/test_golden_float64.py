"""Float64 losses and gradients of every public loss equal, bit for bit, the values recorded
from main before the refactor of issue 12 (``golden_cases.py`` says how they were made)."""
import pytest
import torch
from golden_cases import GOLDEN_FILE, cases, compute, inputs

torch.set_num_threads(1)
GOLDEN = torch.load(GOLDEN_FILE)
CASES = cases(GOLDEN['inputs'])


def test_the_inputs_are_regenerated_identically():
    for key, value in inputs().items():
        assert torch.equal(value, GOLDEN['inputs'][key]), key


def test_every_case_is_recorded():
    assert set(CASES) == set(GOLDEN['values'])


@pytest.mark.parametrize('name', sorted(CASES))
def test_float64_values_and_gradients_are_unchanged(name):
    loss, grad = compute(name, *CASES[name])
    want_loss, want_grad = GOLDEN['values'][name]
    torch.testing.assert_close(loss, want_loss, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=0, equal_nan=True)
