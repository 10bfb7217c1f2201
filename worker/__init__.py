"""``hpo-worker``: claims jobs from MongoDB and evaluates them."""
