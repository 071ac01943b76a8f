"""MobileNetV2 transfer + fine-tuning on the full training set at the CPU default input size.

Stage 1 trains the head on cached frozen ImageNet features; stage 2 unfreezes the top K backbone layers
(BatchNormalization stays frozen) and continues at a lower learning rate. Prints test accuracy and the CPU
time of each stage. Target: ≥ 94 % test accuracy. Needs ImageNet weights in FASHION_WEIGHTS_DIR.
Run: python -m bench.mobilenet_finetune [--input-size S] [--fine-tune-layers K] [--fine-tune-epochs E]
     [--label-smoothing L]
"""

from __future__ import annotations

import argparse

from bench.common import train_and_report
from fashion_lib import models, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input-size", type=int, default=models.DEFAULT_INPUT_SIZE)
    parser.add_argument("--subset", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5, help="stage 1 (head) epochs")
    parser.add_argument("--fine-tune-layers", type=int, default=100)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--fine-tune-learning-rate", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    args = parser.parse_args()
    if models.resolve_weights(models.MOBILENET_V2, "imagenet").path is None:
        parser.error(
            "no local MobileNetV2 ImageNet weights: set FASHION_WEIGHTS_DIR to a folder holding them"
        )
    cfg = train.TrainConfig(
        model=models.MOBILENET_V2,
        weights="imagenet",
        input_size=args.input_size,
        subset=args.subset,
        val_fraction=0.05,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=2e-3,
        lr_schedule="cosine",
        fine_tune=True,
        fine_tune_layers=args.fine_tune_layers,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        label_smoothing=args.label_smoothing,
        early_stopping_patience=0,
    )
    summary = train_and_report(cfg, "MobileNetV2 + fine-tuning")
    print(
        f"\nresult: {summary['test_accuracy']:.2%} test accuracy ({summary['weights']}); stage 1 "
        f"{summary['stage1_seconds']:.0f} s, stage 2 {summary['stage2_seconds']:.0f} s, wall "
        f"{summary['wall_seconds'] / 60:.1f} min, CPU time {summary['cpu_seconds'] / 60:.1f} min on this "
        f"machine (target ≥ 94 %)"
    )


if __name__ == "__main__":
    main()
