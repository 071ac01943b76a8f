"""The models shipped in cached_models/: each loads in Keras's safe mode, reproduces the predictions stored
beside it, and its summary and card say what those predictions say."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from fashion_lib import confidence, config, runs
from fashion_lib.training.pipelines import predict

SHIPPED = sorted(p.name for p in config.CACHED_MODELS_DIR.iterdir() if (p / runs.MODEL_FILE).is_file())


def test_both_the_baseline_and_a_transfer_model_are_shipped():
    assert SHIPPED == ["baseline", "mobilenet_v2"]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_loads_in_safe_mode_and_reproduces_its_stored_predictions(name, dataset):
    folder = config.CACHED_MODELS_DIR / name
    model = keras.saving.load_model(folder / runs.MODEL_FILE, safe_mode=True, compile=False)
    saved = np.load(folder / runs.PREDICTIONS_FILE)
    assert np.array_equal(saved["labels"], dataset.y_test[saved["test_index"]])
    some = np.linspace(0, len(saved["test_index"]) - 1, 200).astype(int)  # spread over the whole test set
    probabilities = predict(model, dataset.x_test[saved["test_index"][some]][..., None])
    assert np.allclose(probabilities, saved["probabilities"][some], atol=1e-4)
    assert np.array_equal(probabilities.argmax(1), saved["probabilities"][some].argmax(1))


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_carries_familiarity_statistics_made_for_its_file(name):
    folder = config.CACHED_MODELS_DIR / name
    model_file = folder / runs.MODEL_FILE
    stats = confidence.read(folder / confidence.FAMILIARITY_FILE, confidence.digest(model_file))
    assert stats is not None, f"ship {name} again: its familiarity statistics are missing or out of date"
    assert stats.means.shape[0] == 10 and stats.threshold > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_models_summary_and_card_agree_with_its_predictions(name):
    folder = config.CACHED_MODELS_DIR / name
    saved = np.load(folder / runs.PREDICTIONS_FILE)
    accuracy = float(np.mean(saved["probabilities"].argmax(1) == saved["labels"]))
    assert len(saved["labels"]) == 10_000  # the whole test set
    summary = runs.read_json(folder / runs.SUMMARY_FILE)
    card = json.loads((folder / runs.CARD_FILE).read_text())
    assert summary["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert card["model_size_bytes"] == (folder / runs.MODEL_FILE).stat().st_size < 20e6
    assert (folder / "README.md").read_text().count(
        f"{100 * accuracy:.2f} %"
    ) >= 1  # as card_markdown writes it


def test_the_comparison_gives_each_stage_of_the_run_time():
    """The details had stage 1 and 2 only: the MobileNetV2's 880 s of product photos were in its run time
    (7,316 s) and nowhere else, so the stages added up to 6,345 s."""
    rows = {row["run"]: row for row in runs.comparison_table(runs.shipped_models())}
    stages = [c for c in rows["mobilenet_v2"] if c.endswith(" s") and c not in ("run time s", "CPU s")]
    assert stages == ["training s", "product photos s", "head s", "fine-tuning s", "test predictions s"]
    for row in rows.values():  # what is left is start-up: loading the data and the libraries, calibration
        staged = sum(row[c] or 0 for c in stages)
        assert 0 < row["run time s"] - staged < 0.02 * row["run time s"]
    assert rows["baseline"]["training s"] > 0 and rows["baseline"]["head s"] is None


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_models_readme_is_its_card_as_the_code_writes_it(name):
    from fashion_lib import export

    folder = config.CACHED_MODELS_DIR / name
    card = json.loads((folder / runs.CARD_FILE).read_text())
    assert (folder / "README.md").read_text() == export.card_markdown(card)
