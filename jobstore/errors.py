"""Errors that mean "the user asked for something that cannot be done".

The CLIs print these as one clear message and exit with code 2, without a traceback.
Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Base class: the message says what was wrong and what to do."""


class BadUrl(UserError):
    """A MongoDB URL that cannot be parsed."""


class DatabaseUnreachable(UserError):
    """No server answered at the URL within the timeout."""


class AuthenticationFailed(UserError):
    """The server refused the user or password of the URL."""


class RunMismatch(UserError):
    """An existing run was created for another experiment or another space."""


class CoordinatorBusy(UserError):
    """Another live coordinator holds the run."""


class TrialIdTaken(UserError):
    """A trial was inserted under an id that another trial of the run already has."""
