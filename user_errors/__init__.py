"""Errors that mean "the user asked for something that cannot be done".

The neutral bottom layer: the store (``jobstore``), the experiments (``objectives``) and
both programs import it, and it imports nothing of theirs.  The CLIs print a
:class:`UserError` as one clear message and exit with code 2, without a traceback
(``cli_support.console.user_errors``); anything else is a bug and keeps its traceback.
Storage-specific subclasses live in :mod:`jobstore.errors`.
"""


class UserError(Exception):
    """Base class: the message says what was wrong and what to do."""


class UnknownExperiment(UserError, LookupError):
    """No experiment of that name; the message lists the known ones."""


class BadObjectiveReference(UserError, ValueError):
    """A ``package.module:attribute`` reference that does not name an Experiment."""
