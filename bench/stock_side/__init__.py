"""Code run with the stock-hyperopt virtual environment's Python.

Nothing here may import this project: the stock side runs stock ``hyperopt.mongoexp``
with ``pymongo<4``.  The modules are put on ``PYTHONPATH`` as top-level modules
(``stock_noop``, ...), which is how stock workers find the pickled objective.
"""
