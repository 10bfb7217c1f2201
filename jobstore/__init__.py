"""The shared store: MongoDB job-document schema and queue operations.

Coordinator and workers both depend on this package and on nothing of each other;
it imports neither the CLI libraries (typer, rich) nor the experiments (``objectives``).
:mod:`jobstore.schema` is the one module that knows the documents' field names.
"""
