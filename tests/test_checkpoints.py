"""Weights-only loading stays on (issue 23): MMEngine checkpoints load through the allow-list
of focal_plugin.checkpoints; anything else a pickle asks for is still refused."""
import os
import pickle

import pytest
import torch
from mmengine.logging import MessageHub

import focal_plugin  # noqa: F401  (installs the allow-list)


def test_an_mmengine_checkpoint_loads_weights_only(tmp_path, monkeypatch):
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
    hub = MessageHub.get_instance('checkpoint_test')
    for step in range(3):
        hub.update_scalar('train/loss', 0.5 / (step + 1))
        hub.update_scalar('train/lr', torch.tensor(1e-3).item())
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(2)), message_hub=hub.state_dict(),
                    meta=dict(iter=3, epoch=0)), path)
    loaded = torch.load(path, weights_only=True)
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == pytest.approx(0.5 / 3)


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_other_globals_are_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, extra=Payload()), path, pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(path, weights_only=True)
