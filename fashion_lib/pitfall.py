"""The pitfall lab: reproduce the original prototype's failure next to the fixed pipeline.

The prototype trained EfficientNet on 1,000 images whose pixels it divided by 255 first — but EfficientNet
rescales 0–255 inputs inside its own graph, so every image arrived nearly black, and the model collapsed to
about 10 % accuracy. The lab trains the same small preset twice, with and without the extra division, and
the page shows both results as they come out of the runs. Nothing here is typed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fashion_lib import config, jobs, models, runs
from fashion_lib.training import TrainConfig, start_run

LAB_FILE = "pitfall_lab.json"
LAB_SETTINGS = {
    "subset": 1000,
    "test_subset": 2000,
    "epochs": 10,
    "input_size": 96,
    "learning_rate": 1e-3,
    "early_stopping_patience": 0,
    "seed": 7,
}


@dataclass(frozen=True)
class LabPlan:
    model: str
    weights: str
    note: str

    @property
    def shows_the_failure(self) -> bool:
        """With ImageNet weights the fixed run learns and the prototype's does not; without them frozen
        random features are weak and both runs stay near chance, so there is nothing to contrast."""
        return self.weights == "imagenet"

    @property
    def button_label(self) -> str:
        if self.shows_the_failure:
            return f"Run the pitfall lab ({models.DISPLAY_NAMES[self.model]}, ImageNet weights)"
        return "Run the pitfall lab anyway (no ImageNet weights: both runs will stay near 10 %)"


def plan() -> LabPlan:
    """EfficientNetB0 with ImageNet weights when they are on this machine; otherwise MobileNetV2 with its
    local ImageNet weights (the same mistake: it also scales inside its graph); otherwise EfficientNetB0 from
    random initialisation, saying that then even the fix has little to stand on."""
    for model, note in (
        (models.EFFICIENTNET_B0, "EfficientNetB0 with ImageNet weights, as in the prototype."),
        (
            models.MOBILENET_V2,
            "EfficientNetB0's ImageNet weights are not on this machine, so the lab uses MobileNetV2's. It "
            "also scales pixels inside its graph ([0, 255] → [-1, 1]), so dividing by 255 first squeezes "
            "every image into [-1, -0.992]; EfficientNet squeezes harder (its own ÷ 255 and ImageNet "
            "normalisation leave differences of about 1e-4).",
        ),
    ):
        try:
            if models.resolve_weights(model, "imagenet").path is not None:
                return LabPlan(model, "imagenet", note)
        except models.WeightsUnavailableError:
            continue
    return LabPlan(
        models.EFFICIENTNET_B0,
        "none",
        "There are no ImageNet weights on this machine, so the lab can only train EfficientNetB0 from random "
        "initialisation (labelled 'no ImageNet weights'). Its frozen random features are too weak for the "
        "fixed pipeline to learn anything in 1,000 images either: both runs will sit near 10 % and show no "
        f"contrast. To see the real failure, put ImageNet weights in {config.weights_dir()} (setting "
        "FASHION_WEIGHTS_DIR; MobileNetV2's rebuilt file is enough).",
    )


def configs(lab: LabPlan) -> dict[str, TrainConfig]:
    base = {**LAB_SETTINGS, "model": lab.model, "weights": lab.weights}
    return {
        "prototype (pixels ÷ 255 before the model)": TrainConfig(**base, input_scaling="divide_by_255"),
        "fixed (raw pixels; the model scales inside)": TrainConfig(**base, input_scaling="raw"),
    }


def lab_file() -> Path:
    return config.fashion_home() / LAB_FILE


def start() -> dict[str, str]:
    """Create and queue both runs; remember them as the current lab."""
    lab = plan()
    started = {}
    for label, cfg in configs(lab).items():
        folder = start_run(cfg)
        jobs.launch(folder, queue=True)
        started[label] = folder.name
    lab_file().parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(lab_file(), {"runs": started, "note": lab.note})
    return started


def current() -> dict | None:
    """The last lab started on this machine: {'runs': {label: run id}, 'note': …}, or None."""
    return runs.read_json(lab_file())


def current_folders() -> dict[str, Path]:
    """The last lab's run folders by label (empty when none was started or the file is damaged)."""
    lab = current() or {}
    started = lab.get("runs")
    if not isinstance(started, dict):
        return {}
    return {str(label): config.runs_dir() / str(run_id) for label, run_id in started.items()}
