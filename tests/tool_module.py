"""Import a command-line tool (``tools/<name>.py``) as a module, to test its functions.

The tools are scripts, not a package: each test used to carry its own copy of these lines.
"""
import importlib.util
import os.path as osp

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(name: str):
    """A fresh module object of ``tools/<name>.py`` (not entered in ``sys.modules``, so it
    never shadows a package module of the same name, e.g. ``focal_plugin.stress.sweep``)."""
    spec = importlib.util.spec_from_file_location(
        f'focal_tool_{name}', osp.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
