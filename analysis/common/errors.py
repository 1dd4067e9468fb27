"""The one base class of expected failures (bad settings, bad input, an unreachable source, a
missing upstream output): the entry point prints their message in one line, without a
traceback (``--debug`` shows it), and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """A failure the user can fix; the message names the file, row or setting and what to do."""

    def __str__(self) -> str:  # KeyError-derived subclasses would quote their message
        return str(self.args[0]) if self.args else ""
