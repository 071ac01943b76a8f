"""One training engine for every caller (command line, Train page, tuner): config in, run folder out.

- ``config``: ``TrainConfig``, the settings of a run, validated, with a JSON round-trip;
- ``pipelines``: splits and tf.data pipelines, batched inference;
- ``callbacks``: stop requests, per-epoch metrics and in-epoch progress;
- ``fitting``: optimizer, schedule, loss and the resumable fit of one stage;
- ``feature_cache``: frozen-backbone features computed once and kept on disk;
- ``engine``: ``train`` — stages, calibration, evaluation, the run's lifecycle;
- ``estimates``: time and memory a run will need, before it starts.
"""

from fashion_lib.training.config import FIELD_HELP, INPUT_SCALINGS, LR_SCHEDULES, OPTIMIZERS, TrainConfig
from fashion_lib.training.engine import start_run, train

__all__ = ["FIELD_HELP", "INPUT_SCALINGS", "LR_SCHEDULES", "OPTIMIZERS", "TrainConfig", "start_run", "train"]
