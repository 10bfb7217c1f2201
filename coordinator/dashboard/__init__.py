"""The live web dashboard (``hpo-coord dashboard``): an ASGI app over a read-only view
of the database; see docs/monitoring.md."""
