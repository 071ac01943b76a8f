"""Error-analysis metrics against scikit-learn and on synthetic cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix

from fashion_lib import config, evaluate
from tests import npz_damage


def predictions(labels, predicted, confidence=0.9, index=None) -> evaluate.Predictions:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    probs = np.full((len(labels), 10), (1 - confidence) / 9)
    probs[np.arange(len(labels)), predicted] = confidence
    return evaluate.Predictions(probs, labels, np.arange(len(labels)) if index is None else np.asarray(index))


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 2000)
    probs = rng.dirichlet(np.ones(10) * 0.3, 2000)
    probs[np.arange(2000), labels] += 0.5  # mostly right
    probs /= probs.sum(axis=1, keepdims=True)
    return evaluate.Predictions(probs, labels, np.arange(2000))


def test_confusion_counts_match_scikit_learn(random_case):
    p = random_case
    assert np.array_equal(
        evaluate.confusion_counts(p.labels, p.predicted),
        confusion_matrix(p.labels, p.predicted, labels=range(10)),
    )


def test_normalized_rows_sum_to_one_and_empty_rows_stay_zero():
    cm = np.zeros((10, 10), dtype=int)
    cm[0, 0], cm[0, 1] = 3, 1
    norm = evaluate.normalize_rows(cm)
    assert norm[0, 0] == 0.75 and norm[0, 1] == 0.25 and norm[1].sum() == 0


def test_per_class_report_matches_scikit_learn(random_case):
    p = random_case
    ours = evaluate.per_class_report(p.labels, p.predicted).set_index("class")
    theirs = classification_report(
        p.labels,
        p.predicted,
        labels=range(10),
        target_names=config.CLASS_NAMES,
        output_dict=True,
        zero_division=0,
    )
    for name in [*config.CLASS_NAMES, "macro avg", "weighted avg"]:
        row = ours.loc[name if "avg" not in name else name.replace("avg", "average")]
        assert row["precision"] == pytest.approx(theirs[name]["precision"])
        assert row["recall"] == pytest.approx(theirs[name]["recall"])
        assert row["F1"] == pytest.approx(theirs[name]["f1-score"])
        assert row["support"] == theirs[name]["support"]


def test_cell_positions_pair_errors_and_confused_pairs_on_a_known_case():
    # 5 Shirts predicted Pullover, 3 Pullovers predicted Shirt, 2 Coats predicted Shirt, 10 right.
    labels = [6] * 5 + [2] * 3 + [4] * 2 + [0] * 10
    predicted = [2] * 5 + [6] * 3 + [6] * 2 + [0] * 10
    p = predictions(labels, predicted)
    cm = evaluate.confusion_counts(p.labels, p.predicted)
    assert list(evaluate.cell_positions(p, 6, 2)) == [0, 1, 2, 3, 4]
    pair = evaluate.pair_errors(cm, 6, 2)
    assert (pair.a_as_b, pair.b_as_a, pair.all_errors) == (5, 3, 10) and pair.share == 0.8
    top = evaluate.most_confused_pairs(cm, 5)
    assert list(top["errors"]) == [5, 3, 2] and top.iloc[0]["true"] == "Shirt"
    assert top["share of all errors"].sum() == pytest.approx(1.0)


def test_a_pairs_standing_among_all_pairs_counts_both_directions():
    # Shirt/T-shirt 4 + 3 = 7 errors, Shirt/Pullover 5 (one direction: the largest single cell), Coat/Bag 1
    labels = [6] * 4 + [0] * 3 + [6] * 5 + [4] + [0] * 7
    predicted = [0] * 4 + [6] * 3 + [2] * 5 + [8] + [0] * 7
    cm = evaluate.confusion_counts(np.array(labels), np.array(predicted))
    assert evaluate.confused_pairs(cm) == [(0, 6, 7), (2, 6, 5), (4, 8, 1)]
    assert evaluate.pair_standing(cm, 6, 2) == (
        "Counting both directions, Shirt ↔ Pullover is number 2 of the 45 class pairs; ahead of it: "
        "T-shirt/top ↔ Shirt (7, 53.8 %). Of all 13 errors, as the true or the predicted class: Shirt in 12 "
        "(92.3 %) and Pullover in 5 (38.5 %)."
    )
    assert evaluate.pair_standing(cm, 0, 6).startswith(
        "Counting both directions, T-shirt/top ↔ Shirt is the most"
    )
    assert evaluate.pair_standing(cm, 1, 3).startswith(
        "Counting both directions, Trouser ↔ Dress is confused in no"
    )
    assert evaluate.pair_standing(np.eye(10, dtype=int), 6, 2) == "No errors at all."


def test_top_k_orders_probabilities():
    probs = np.array([[0.1, 0.6, 0.3] + [0.0] * 7])
    classes, values = evaluate.top_k(probs, 3)
    assert classes.tolist() == [[1, 2, 0]] and values.tolist() == [[0.6, 0.3, 0.1]]


def test_calibration_of_known_cases():
    conf = np.full(100, 0.8)
    correct = np.arange(100) < 80  # 80 % right at 80 % confidence: perfectly calibrated
    assert evaluate.expected_calibration_error(conf, correct) == pytest.approx(0.0)
    overconfident = np.arange(100) < 50
    assert evaluate.expected_calibration_error(np.full(100, 0.9), overconfident) == pytest.approx(0.4)
    bins = evaluate.reliability_bins(np.array([0.05, 0.95, 0.95]), np.array([False, True, False]))
    assert bins["count"].tolist() == [1, 2] and bins["accuracy"].tolist() == [0.0, 0.5]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_temperature_scaling_recovers_a_known_temperature_and_keeps_the_predicted_classes(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, (20000, 10))
    calibrated = softmax(logits)
    labels = np.array([rng.choice(10, p=row) for row in calibrated])  # labels drawn from the model itself
    distorted = softmax(logits * true_temperature)  # 2: over-confident, 0.5: under-confident
    fitted = evaluate.fit_temperature(distorted, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    repaired = evaluate.temperature_scaled(distorted, fitted)
    assert np.allclose(repaired, calibrated, atol=0.02)
    assert np.array_equal(repaired.argmax(axis=1), distorted.argmax(axis=1))
    assert evaluate.calibration_error(repaired, labels) < evaluate.calibration_error(distorted, labels) / 3
    assert evaluate.calibration_error(repaired, labels) < 0.02


def test_temperature_sentence_reports_the_fit_or_its_absence():
    fitted = {
        "temperature": 0.8123,
        "calibration_images": 2000,
        "validation_ece_before": 0.071,
        "validation_ece_after": 0.0123,
    }
    assert evaluate.temperature_sentence(fitted).startswith(
        "Temperature scaling: T = 0.81, fitted on 2,000 validation images (their calibration error 7.1 % "
        "before, 1.2 % after)"
    )
    assert "not temperature-scaled" in evaluate.temperature_sentence({"test_accuracy": 0.9})
    worse = {**fitted, "temperature": None, "temperature_rejected": 0.59, "calibration_images": 100}
    assert evaluate.temperature_sentence({**worse, "validation_ece_after": 0.099}) == (
        "Temperature scaling was not applied: the fitted T = 0.59 raised the calibration error of the 100 "
        "validation images it was fitted on (7.1 % before, 9.9 % after), so the confidences are the model's "
        "own."
    )


def test_label_issues_find_labels_flipped_on_purpose():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(10), 50)
    probs = np.full((500, 10), 0.01)
    probs[np.arange(500), truth] = 0.91
    probs += rng.random((500, 10)) * 0.01
    given = truth.copy()
    flipped = np.array([3, 77, 150, 260, 499])
    given[flipped] = (truth[flipped] + 1) % 10  # these labels are wrong; the model is right
    table = evaluate.label_issues(evaluate.Predictions(probs, given, np.arange(500)))
    assert set(table.head(5)["test index"]) == set(flipped)
    flagged = set(table.loc[table["flagged"], "test index"])
    assert flagged <= set(flipped) and len(flagged) >= 3  # no clean label is accused


def test_misclassified_table_lists_every_error_most_confident_first():
    p = predictions([6, 2, 0], [2, 2, 1], index=[10, 11, 12])
    p.probabilities[2, 1] = 0.95
    table = evaluate.misclassified_table(p)
    assert table["test index"].tolist() == [12, 10]
    assert table.iloc[1][["true", "predicted"]].tolist() == ["Shirt", "Pullover"]


def test_compare_cell_splits_what_each_run_gets_wrong():
    a = predictions([6, 6, 6, 6], [2, 2, 6, 2])
    b = predictions([6, 6, 6, 6], [2, 6, 2, 6])
    cmp = evaluate.compare_cell(a, b, 6, 2)
    assert cmp.only_a.tolist() == [1, 3] and cmp.only_b.tolist() == [2] and cmp.both.tolist() == [0]
    with pytest.raises(ValueError, match="different test images"):
        evaluate.compare_cell(a, predictions([6], [2]), 6, 2)


def test_collapse_sentence_names_the_dominant_class():
    report = evaluate.collapse_report(np.arange(10).repeat(2), np.eye(10)[np.full(20, 8)])
    assert report.collapsed and "'Bag'" in report.sentence()


SAVED = {
    "probabilities": np.eye(10)[[3, 1, 4]],
    "labels": np.array([3, 1, 5]),
    "test_index": np.array([10, 11, 12]),
}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({}, None),
        ({"labels": np.array([3.0, 1.5, 5.0])}, "labels are not whole numbers"),
        ({"probabilities": np.full((3, 10), "a")}, "probabilities are not numbers"),
        ({"test_index": np.array([10, 11, 10_000])}, "out of range"),
        ({"labels": np.array([[3, 1, 5]])}, "does not fit together"),
        ({"probabilities": np.full((3, 10), 1.5)}, r"outside \[0, 1\]"),
    ],
)
def test_saved_predictions_are_read_only_when_they_make_sense(tmp_path, change, why):
    np.savez(tmp_path / "predictions.npz", **{**SAVED, **change})
    if why is None:
        saved = evaluate.load_predictions(tmp_path)
        assert saved.predicted.tolist() == [3, 1, 4] and saved.test_index.tolist() == [10, 11, 12]
    else:
        with pytest.raises(ValueError, match=why):
            evaluate.load_predictions(tmp_path)


@pytest.mark.parametrize(
    "how", ["encrypted", "a header claiming a huge array", "a pipe", "an entry that is not an array"]
)
def test_damaged_saved_predictions_raise_the_one_error_callers_catch(tmp_path, how):
    """Before, these escaped as RuntimeError, MemoryError or TypeError (and a pipe hung the reader): the
    run list, and so every page, failed on one damaged run folder."""
    np.savez(tmp_path / "predictions.npz", **SAVED)
    npz_damage.damage(tmp_path / "predictions.npz", how, entry="labels")
    with pytest.raises(ValueError, match=r"^predictions\.npz "):
        evaluate.load_predictions(tmp_path)
