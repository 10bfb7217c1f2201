"""What both command-line programs (``hpo-coord`` and ``hpo-worker``) share: typer
options, rich logging, user-error reporting and exit codes.

It sits between the programs and the layers below them: ``coordinator`` and ``worker``
import it; it imports ``jobstore`` and ``objectives``, never the programs.  The store
stays free of typer and rich.
"""
