"""Problems a user can fix, as opposed to failures of the run.

Every error here means: the input (a spec, a command-line option, a run directory read back
from disk) or this machine cannot do what was asked, and *nothing was created*. The command line
prints ``problems`` one per line and exits 2; no traceback. Each line names the field or file
and, where there is one, the fix.
"""

from __future__ import annotations


class MptcplabError(Exception):
    """Base of every exit-2 problem. ``problems``: one human line each."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SpecError(MptcplabError):
    """A spec (or a --set / --shaper / --check option) that cannot run."""


class PlanError(MptcplabError):
    """The spec is valid but cannot be laid out (for example: client cannot reach server)."""


class PreflightError(MptcplabError):
    """This machine cannot run this plan; nothing was created."""


class RunDirError(MptcplabError):
    """A run directory that cannot be used as asked: not one, written by a different version,
    altered (a value that fails validation), or changed sweep values on --resume."""


class BusyError(MptcplabError):
    """Another run holds the machine or this run directory."""
