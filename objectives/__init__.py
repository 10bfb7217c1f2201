"""Experiments: a name, a hyperopt search space, an objective and run defaults.

See :mod:`objectives.base` for the contract an objective follows and
:mod:`objectives.registry` for how experiments are found by name.
"""
