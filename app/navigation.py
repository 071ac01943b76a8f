"""The app's pages, declared once: the entry point builds the navigation from it, Home links to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"


@dataclass(frozen=True)
class PageEntry:
    file: str  # file name in pages/
    title: str
    icon: str
    blurb: str  # one line for the Home page
    # settings widgets whose values outlive a visit to another page (Streamlit forgets a widget's value when
    # a run does not draw it); never buttons, uploaders or pickers whose options come and go
    keeps: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return PAGES_DIR / self.file


PAGES: tuple[PageEntry, ...] = (
    PageEntry(
        "home.py", "Home", ":material/home:", "What the app does, where the data came from, models and runs."
    ),
    PageEntry(
        "eda.py",
        "Explore the data",
        ":material/query_stats:",
        "Class balance, samples, pixel statistics, class similarity, PCA / t-SNE, normalization.",
    ),
    PageEntry(
        "augmentation.py",
        "Augmentation",
        ":material/auto_fix_high:",
        "Preview random transforms, see when they break a label, save presets for training.",
        keeps=(
            *("aug_flip_h", "aug_flip_v", "aug_rotation", "aug_zoom", "aug_translation", "aug_contrast"),
            *("aug_erasing", "aug_seed", "aug_class", "aug_indices", "aug_versions", "aug_preset_name"),
        ),
    ),
    PageEntry(
        "training.py",
        "Train",
        ":material/model_training:",
        "Launch training in the background and watch live learning curves; stop, resume, delete runs.",
        keeps=(
            *("tr_model", "tr_size", "tr_weights", "tr_subset", "tr_test_subset", "tr_epochs", "tr_batch"),
            *("tr_lr", "tr_opt", "tr_schedule", "tr_preset", "tr_ft", "tr_ft_layers", "tr_ft_epochs"),
            *("tr_ft_lr", "tr_photos", "tr_bf16", "tr_calibrate", "tr_patience", "tr_seed", "tr_smoothing"),
        ),
    ),
    PageEntry(
        "errors.py",
        "Error analysis",
        ":material/grid_on:",
        "Clickable confusion matrix down to the images, Shirt vs Pullover, calibration, label errors.",
    ),
    PageEntry(
        "gradcam.py",
        "Grad-CAM",
        ":material/center_focus_strong:",
        "Upload product photos: the conversion step by step, the prediction and where the model looked.",
    ),
    PageEntry(
        "tuning.py",
        "Tuning",
        ":material/tune:",
        "Search hyperparameters with Optuna, explore what the search found, train the winner.",
    ),
    PageEntry(
        "comparison.py",
        "Compare models",
        ":material/compare_arrows:",
        "Baseline vs EfficientNetB0 vs MobileNetV2, measured; the pitfall lab (the prototype's ÷255 bug).",
    ),
    PageEntry(
        "report.py",
        "Report",
        ":material/description:",
        "The technical report, generated from the saved runs: read it here, download HTML or Markdown.",
    ),
)


def available_pages() -> list[PageEntry]:
    """Pages whose file exists (pages still to be built are simply not listed)."""
    return [p for p in PAGES if p.path.is_file()]
