"""What the command-line tools share (``tools/*.py``): the help formatter, the redirection of
native libraries' stderr. Standard library only, so that a tool's ``--help`` costs nothing
beyond its own imports."""
import argparse
import contextlib
import os
import sys

__all__ = ['HelpFormatter', 'stderr_to']


@contextlib.contextmanager
def stderr_to(path: str):
    """Send everything written to the process's stderr (file descriptor 2: the native
    libraries' logs as well as Python's warnings and logging) to ``path`` while it runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, 'w') as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the line breaks of the description (the tools' docstrings show commands) and
    appends ``(default: ...)`` to every option's help, lists written as on the command line
    (``1 2``, not ``[1, 2]``). Left out where there is nothing to show: a flag (``store_true``),
    a default of ``None`` (the help then says what happens without the option), a suppressed
    option, or a help text that already gives the default itself."""

    def _get_help_string(self, action):
        text = action.help or ''
        default = action.default
        if (default is None or default is argparse.SUPPRESS or action.nargs == 0
                or text is argparse.SUPPRESS or 'default' in text
                or not (action.option_strings
                        or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        if isinstance(default, (list, tuple)):
            shown = ' '.join(str(v) for v in default) if default else 'none'
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"
