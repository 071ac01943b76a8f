"""What a training process does between batches: notice stop requests, log each epoch, report progress."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from fashion_lib import lifecycle, runs
from fashion_lib.processes import ProcessIdentity

PROGRESS_INTERVAL_S = 0.5


class StopRequested(Exception):
    """Raised inside feature extraction when the user asks the run to stop."""


class StopWatch:
    """Whether someone asked the run to stop (the request file, or SIGTERM). The first time it notices, the
    run's state becomes 'stopping', written by its owner."""

    def __init__(self, folder: Path, owner: ProcessIdentity):
        self.folder, self.owner, self.seen = folder, owner, False

    def requested(self) -> bool:
        if not self.seen and lifecycle.stop_requested(self.folder):
            self.seen = True
            with contextlib.suppress(lifecycle.RunStateError):
                lifecycle.transition(self.folder, lifecycle.STOPPING, by=self.owner)
        return self.seen

    def reason(self) -> str:
        """What the request file says (the tuner writes why it pruned), else a user's stop."""
        try:
            text = (self.folder / lifecycle.STOP_FILE).read_text().strip()
        except OSError:
            text = ""
        return text or "stopped by the user"


def run_logger(folder: Path, stage: int, epochs_total: int, batches: int, watch: StopWatch, planned: int = 0):
    """A Keras callback that appends one metrics row per epoch, writes in-epoch progress and stops the fit
    when a stop is requested (the epoch cut short is marked 'partial'). ``planned``: the run's epochs over
    all its stages, so progress does not start again at the fine-tuning stage."""
    import keras

    class RunLogger(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stopped = False
            self._last_write = 0.0

        @property
        def cut_short(self) -> bool:
            """The current epoch was stopped before its last batch: it has not finished."""
            return self.stopped and self.last_batch < batches

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_started = time.perf_counter()
            self.last_batch = 0
            self.warm = None  # (batch, seconds) after the first batch: tracing and warm-up excluded

        def on_train_batch_end(self, batch, logs=None):
            self.last_batch = batch + 1
            if watch.requested():
                self.stopped = True
                self.model.stop_training = True
            now = time.perf_counter()
            if self.warm is None:
                self.warm = (batch + 1, now - self.epoch_started)
            if now - self._last_write >= PROGRESS_INTERVAL_S or batch + 1 == batches:
                self._last_write = now
                runs.write_json(
                    folder / runs.PROGRESS_FILE,
                    {
                        "stage": stage,
                        "phase": "training",
                        "epoch": self.epoch + 1,
                        "epochs": epochs_total,
                        "planned_epochs": max(planned, epochs_total),
                        "batch": batch + 1,
                        "batches": batches,
                        "epoch_elapsed": now - self.epoch_started,
                        "warm_batch": self.warm[0],
                        "warm_elapsed": self.warm[1],
                        "time": time.time(),
                    },
                )

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {
                "stage": stage,
                "epoch": epoch + 1,
                "seconds": time.perf_counter() - self.epoch_started,
                "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            }
            if self.warm is not None:  # a batch was done (an epoch stopped before its first has none)
                row.update(batches=self.last_batch, warm_seconds=self.warm[1])
            row.update({k: float(v) for k, v in logs.items() if k != "learning_rate"})
            if self.cut_short:
                row["partial"] = True
            runs.append_metrics(folder, row)

    return RunLogger()
