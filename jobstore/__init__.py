"""The shared store: MongoDB job-document schema and queue operations.

Coordinator and workers both depend on this package and on nothing of each other.
:mod:`jobstore.schema` is the one module that knows the documents' field names.
"""
