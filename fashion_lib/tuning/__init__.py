"""Hyperparameter tuning with Optuna: studies in a database, trials trained by the ordinary engine.

- ``space``: the search spaces, declared as data, and how the user narrows them;
- ``storage``: the study database (SQLite by default, any SQLAlchemy URL through ``FASHION_TUNING_DB``);
- ``config``: ``TuneConfig``, the settings of one search;
- ``search``: the coordinator and its worker processes, the objective and the pruning;
- ``results``: the trial table, the best parameters and the figures the explorer page shows.
"""
