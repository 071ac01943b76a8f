"""Kept so that ``from fashion_lib.train import train, TrainConfig`` keeps working: the engine now lives in
the ``fashion_lib.training`` package, one module per concern."""

from fashion_lib.training import TrainConfig, start_run, train

__all__ = ["TrainConfig", "start_run", "train"]
