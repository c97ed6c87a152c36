"""Every command-line option of every tool has a help text that shows its default, and every
tool answers ``--help`` with its usage without starting any work."""
import ast
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap

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


# One interpreter answers every tool's --help (each in its own empty folder, as
# ``python tools/X.py [command] --help`` would: the tools folder first on sys.path, the tool
# run as __main__). A fresh interpreter per tool cost 10-30 s each on the 2-core machine
# (torch and mmengine imported 20 times) and asserted nothing more: what is checked is the
# parser and that --help starts no work.
_HELP_RUNNER = textwrap.dedent("""
    import contextlib, io, json, os, runpy, sys
    jobs, result_file = json.loads(sys.argv[1]), sys.argv[2]
    results = {}
    for key, path, command, cwd in jobs:
        os.chdir(cwd)
        sys.path[0] = os.path.dirname(path)
        sys.argv = [path] + ([command] if command else []) + ['--help']
        out, err, code = io.StringIO(), io.StringIO(), 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                runpy.run_path(path, run_name='__main__')
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        except BaseException as error:  # reported per tool, the others still run
            code = repr(error)
        results[key] = dict(code=code, stdout=out.getvalue(), stderr=err.getvalue()[-3000:],
                            written=sorted(os.listdir(cwd)))
    with open(result_file, 'w') as f:
        json.dump(results, f)
""")


@pytest.fixture(scope='module')
def help_texts(tmp_path_factory):
    """``{(tool, sub-command or None): dict(code, stdout, stderr, written)}`` for every
    parser of every tool."""
    root = tmp_path_factory.mktemp('help')
    jobs = []
    for path in PARSER_TOOLS:
        for command in _option_defaults(_parse(path)):
            key = f'{osp.basename(path)} {command or ""}'.strip()
            cwd = root / key.replace(' ', '_')
            cwd.mkdir()
            jobs.append((key, path, command, str(cwd)))
    result_file = root / 'results.json'
    out = subprocess.run([sys.executable, '-c', _HELP_RUNNER, json.dumps(jobs),
                          str(result_file)], env=ENV, capture_output=True, text=True,
                         timeout=600, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(result_file.read_text())


@pytest.mark.parametrize('path', PARSER_TOOLS, ids=osp.basename)
def test_python_tool_help(path, help_texts):
    """``--help`` (of the tool and of each sub-command) exits 0 with the usage, shows the
    default of every option that has one, and writes nothing (run in an empty folder)."""
    for command, options in _option_defaults(_parse(path)).items():
        result = help_texts[f'{osp.basename(path)} {command or ""}'.strip()]
        assert result['code'] == 0, (command, result['code'], result['stderr'])
        assert result['stdout'].startswith('usage:'), result['stdout'][:500]
        for option in options:
            entry = _help_entry(result['stdout'], option)
            assert '(default: ' in entry or 'default:' in entry, (command, entry)
        assert result['written'] == [], (command, result['written'])


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
