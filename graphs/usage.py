"""The argument parser every command line of the project uses: a usage error is one line, exit 2.

Kept apart from ``graphs.cli`` so light commands (``graphs.compare``, ``graphs.bundle``) can use
it without importing LangGraph and torch.
"""

from __future__ import annotations

import argparse


class UsageParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, no usage dump
        self.exit(2, f"error: {message} (see --help)\n")
