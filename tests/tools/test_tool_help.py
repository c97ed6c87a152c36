"""Every command-line option of every tool has a help text that shows its default, and every
tool answers ``--help`` with its usage without starting any work."""
import ast
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SOURCES = sorted(glob.glob(osp.join(ROOT, 'tools', '*.py'))
                 + glob.glob(osp.join(ROOT, 'focal_plugin', '**', '*.py'), recursive=True))
ENV = dict(os.environ, OMP_NUM_THREADS='1', COLUMNS='100')


def _calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, 'attr', None) or getattr(node.func, 'id', None)) == name]


def _keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _parse(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def test_every_add_argument_has_help():
    missing = [f'{osp.relpath(path, ROOT)}:{call.lineno}'
               for path in SOURCES for call in _calls(_parse(path), 'add_argument')
               if _keyword(call, 'help') is None]
    assert not missing, 'add_argument without help=: ' + ', '.join(missing)


def test_every_parser_shows_defaults():
    """A parser (or sub-command parser) without a formatter_class drops the defaults."""
    missing = [f'{osp.relpath(path, ROOT)}:{call.lineno}'
               for path in SOURCES
               for name in ('ArgumentParser', 'add_parser')
               for call in _calls(_parse(path), name)
               if _keyword(call, 'formatter_class') is None]
    assert not missing, 'parser without formatter_class=: ' + ', '.join(missing)


def _option_defaults(tree):
    """{sub-command or None: [option strings whose help must show a default]}, from the
    add_argument calls with a default that means something (not None, not a flag's)."""
    subcommands = {}  # variable name -> sub-command name
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, 'attr', None) == 'add_parser':
            subcommands[node.targets[0].id] = node.value.args[0].value
    out = {None: []}
    out.update({name: [] for name in subcommands.values()})
    for call in _calls(tree, 'add_argument'):
        default, action, help_ = (_keyword(call, k) for k in ('default', 'action', 'help'))
        if default is None or (isinstance(default, ast.Constant) and default.value is None) \
                or (isinstance(action, ast.Constant) and action.value.startswith('store_')) \
                or getattr(help_, 'attr', None) == 'SUPPRESS':
            continue
        owner = subcommands.get(getattr(call.func.value, 'id', None))
        out[owner].append(call.args[0].value)
    return out


PARSER_TOOLS = [path for path in sorted(glob.glob(osp.join(ROOT, 'tools', '*.py')))
                if _calls(_parse(path), 'ArgumentParser')]


def _help_entry(text, option):
    """The help entry of ``option`` in argparse's --help output (its lines, joined)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if re.match(rf'  (-\w+, )?{re.escape(option)}\b', line))
    entry = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith('   '):  # the next entry (2 spaces) or a section
            break
        entry.append(line)
    return ' '.join(entry)


def test_tools_with_a_parser_are_found():
    names = {osp.basename(p) for p in PARSER_TOOLS}
    assert {'train.py', 'benchmark_losses.py', 'detection_study.py', 'sweep.py'} <= names


@pytest.mark.parametrize('path', PARSER_TOOLS, ids=osp.basename)
def test_python_tool_help(path, tmp_path):
    """``--help`` (of the tool and of each sub-command) exits 0 with the usage, shows the
    default of every option that has one, and writes nothing (run in an empty folder)."""
    for command, options in _option_defaults(_parse(path)).items():
        argv = [sys.executable, path] + ([command] if command else []) + ['--help']
        result = subprocess.run(argv, cwd=tmp_path, env=ENV, capture_output=True, text=True,
                                timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.startswith('usage:'), result.stdout[:500]
        for option in options:
            entry = _help_entry(result.stdout, option)
            assert '(default: ' in entry or 'default:' in entry, (command, entry)
    assert os.listdir(tmp_path) == []


SHELL_TOOLS = sorted(glob.glob(osp.join(ROOT, 'tools', '*.sh')))


def test_shell_tools_are_found():
    assert {'dist_train.sh', 'gpu_check.sh', 'gpu_stress.sh', 'setup.sh',
            'wheelhouse.sh'} <= {osp.basename(p) for p in SHELL_TOOLS}


@pytest.mark.parametrize('path', SHELL_TOOLS, ids=osp.basename)
def test_shell_tool_help(path, tmp_path):
    """``bash tools/X.sh --help`` prints the usage on stdout, exits 0, fast, and starts
    nothing: it writes nothing in the folder it runs in (where OUT/DIR/VENV would go).
    gpu_check.sh hands --help to tools/gpu_check.py's argparse (a Python start-up)."""
    python = osp.basename(path) == 'gpu_check.sh'
    result = subprocess.run(['bash', path, '--help'], cwd=tmp_path,
                            env=dict(ENV, VENV=str(tmp_path / 'venv')),
                            capture_output=True, text=True, timeout=180 if python else 20)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.lower().startswith('usage:'), result.stdout[:500]
    assert os.listdir(tmp_path) == []
