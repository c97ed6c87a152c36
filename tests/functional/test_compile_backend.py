"""The compile backend of the fused kernels: the backend switch, background compilation,
compiler failure, recompilation over shapes, and interpreter exit mid-compilation."""
import os
import subprocess
import sys
import threading

import pytest
import torch
from test_fused import run

from focal_plugin.functional import compile_backend, fused, sigmoid_focal_loss
from focal_plugin.functional.fused_kernels import KERNELS


def test_unknown_backend_is_rejected(monkeypatch):
    with pytest.raises(ValueError, match='backend'):
        fused.set_fused_backend('fast')
    # as if set through FOCAL_PLUGIN_FUSED
    monkeypatch.setattr(compile_backend._backend, 'value', 'fast')
    with pytest.raises(ValueError, match='FOCAL_PLUGIN_FUSED'):
        sigmoid_focal_loss(torch.zeros(2), torch.ones(2))


def test_compiled_kernels_do_not_recompile_per_shape(monkeypatch):
    from torch._dynamo.utils import counters
    # from a clean slate, whatever ran before in this process (kernels compiled by earlier
    # tests are cached by dynamo and would not be counted again)
    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(compile_backend, '_COMPILED', compile_backend.CompiledKernels())
    fused.warm_up(torch.float32)
    graphs = counters['stats']['unique_graphs']
    assert graphs >= len(KERNELS)  # the counter does count our kernels
    for n in (13, 1000, 4567, 120 * 80):  # anchor counts vary from batch to batch
        x = torch.randn(n, 5)
        for reduction in ('none', 'sum'):  # element-wise kernels, torch's reduction
            loss, grad = run(x, x > 1, 'compile', reduction, gamma=0.5)
            ref_loss, ref_grad = run(x, x > 1, 'off', reduction, gamma=0.5)
            torch.testing.assert_close(loss, ref_loss)
            torch.testing.assert_close(grad, ref_grad)
    assert counters['stats']['unique_graphs'] == graphs


def test_auto_serves_the_reference_until_compiled_in_background(monkeypatch):
    """'auto' never blocks on the compiler: the first call runs the autograd reference and
    queues the compilation; once the worker is done the compiled kernels serve."""
    compiler = compile_backend.CompiledKernels()
    monkeypatch.setattr(compile_backend, '_COMPILED', compiler)
    monkeypatch.setattr(compile_backend._backend, 'value', 'auto')
    x, t = torch.randn(30, 4), torch.rand(30, 4) > 0.7
    x.requires_grad_(True)
    assert fused.fused_kernel(x, t) is None  # not compiled yet: the reference
    loss, grad = run(x, t, 'auto', gamma=0.5)
    ref_loss, ref_grad = run(x, t, 'off', gamma=0.5)
    torch.testing.assert_close(loss, ref_loss)
    worker = compiler.worker
    assert worker is None or isinstance(worker, threading.Thread)
    if worker is not None:
        worker.join(timeout=300)
    assert compiler.failed is None
    assert fused.fused_kernel(x, t) is compiler.ready['hard_loss_and_grad', torch.float32, 'cpu']
    loss, grad = run(x, t, 'auto', gamma=0.5)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad)


def test_compiler_failure_falls_back_to_the_reference(monkeypatch, caplog):
    compiler = compile_backend.CompiledKernels()
    monkeypatch.setattr(compile_backend, '_COMPILED', compiler)
    monkeypatch.setattr(compile_backend._backend, 'value', 'compile')

    def broken_compile(*args, **kwargs):
        raise RuntimeError('no C++ compiler')

    monkeypatch.setattr(torch, 'compile', broken_compile)
    x = torch.randn(10, 4, requires_grad=True)
    t = torch.rand(10, 4) > 0.5
    with caplog.at_level('WARNING'):
        assert fused.fused_kernel(x, t) is None
        loss, grad = run(x, t, 'compile', gamma=0.5)
    assert 'no C++ compiler' in caplog.text and compiler.failed
    ref_loss, ref_grad = run(x, t, 'off', gamma=0.5)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad)


def test_exit_during_a_background_compilation_is_clean(tmp_path):
    """'auto' starts compiling in a daemon thread; a script that ends at once must exit 0,
    without a crash or a spurious 'compiling failed' warning (no private threading API)."""
    script = tmp_path / 'short_script.py'
    script.write_text(
        'import torch\n'
        'from focal_plugin.functional import compile_backend, sigmoid_focal_loss\n'
        "compile_backend.set_fused_backend('auto')\n"
        'x = torch.randn(100, requires_grad=True)\n'
        'sigmoid_focal_loss(x, torch.rand(100) > 0.5, gamma=0.5, reduction="sum").backward()\n'
        'assert compile_backend._COMPILED.worker is not None\n'
        "print('done', flush=True)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == 'done'
    assert 'Fatal' not in out.stderr and 'compiling the fused' not in out.stderr, out.stderr
