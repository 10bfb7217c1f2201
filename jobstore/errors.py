"""The store's errors that a user can fix: subclasses of :class:`user_errors.UserError`,
which the CLIs print as one clear message with exit code 2, without a traceback.
"""

from user_errors import UserError


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
