"""``hpo-coord``: runs hyperopt's fmin against the MongoDB job queue, and inspects runs."""
