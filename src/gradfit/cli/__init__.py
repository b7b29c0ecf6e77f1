"""The ``gradfit`` command: parse the arguments, call the library, print, exit.

Library errors become one line on stderr and exit status 2 (``--traceback`` shows the stack). Each command imports
what it needs when it runs, so ``--help`` does not load matplotlib. The parser is in ``parser`` (its argument
types in ``arguments``), each large subcommand in a module of its own (``demo``, ``fit``, ``fit_many``, sharing
``common``), the entry point in ``entry``.
"""

from .entry import main

__all__ = ["main"]
