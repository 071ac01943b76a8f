"""Pictures for display and the words numbers are written in: known answers."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_lib import augment, evaluate, pictures, wording


def test_a_mosaic_places_each_enlarged_image_in_its_cell():
    images = np.stack([np.full((2, 2), v, np.uint8) for v in (10, 20, 30)])
    board = pictures.mosaic(images, columns=2, factor=3, gap=1)
    assert board.shape == (2 * 6 + 1, 2 * 6 + 1)
    assert board[0, 0] == 10 and board[0, 7] == 20 and board[7, 0] == 30
    assert board[7, 7] == 255 and board[6, 0] == 255  # the empty cell and the gap are white


def test_row_shares_never_read_zero_for_a_few_errors():
    assert wording.share_of_row(0.003, 3) == "<1 %" and wording.share_of_row(0.0, 0) == "0"
    assert wording.share_of_row(0.005, 5) == "<1 %"  # 5 of 1,000 read "0 %": round(0.5) is 0
    assert wording.share_of_row(0.01, 10) == "1 %"
    assert wording.share_of_row(0.996, 996) == ">99 %" and wording.share_of_row(1.0, 1000) == "100 %"
    assert wording.share_of_row(0.126, 126) == "13 %"
    # halves up (round() made 35 and 45 of 1,000 both "4 %": Python rounds halves to even)
    assert [wording.share_of_row(n / 1000, n) for n in (25, 35, 45)] == ["3 %", "4 %", "5 %"]


def test_a_confidence_reads_the_same_everywhere_and_never_a_rounded_100_or_0():
    """0.9955 read "Pullover (100 %)" on the Grad-CAM page right above "Pullover 99.6 %"."""
    assert wording.confidence(0.9962) == "99.6 %" and wording.confidence(0.9994) == "99.9 %"
    assert wording.confidence(0.99951) == ">99.9 %" and wording.confidence(1.0) == "100 %"
    assert wording.confidence(0.0004) == "<0.1 %" and wording.confidence(0.0) == "0 %"
    assert wording.confidence(0.5) == "50.0 %"
    assert wording.percent(0.9301) == "93.01 %" and wording.percent(None) == "—"
    assert wording.duration(200) == "3 min 20 s" and wording.duration(300) == "5 min"
    assert wording.duration(3600) == "1 h" and wording.duration(3900) == "1 h 05 min"
    assert wording.duration(0.4) == "<1 s" and wording.duration(0) == "0 s"  # "training 0 s" read like a bug
    # Compare's details read "None" for a stage a model has not got
    assert wording.number_cell(7316.111) == "7,316" and wording.number_cell(5.51, 1) == "5.5"
    assert wording.number_cell(None) == "—" and wording.number_cell(float("nan")) == "—"


def test_augmentation_is_described_in_degrees_and_percent():
    cfg = augment.AugmentConfig(flip_horizontal=True, rotation=10 / 360, zoom=0.1)
    assert cfg.describe() == "horizontal flips, rotation ±10°, zoom ±10 %"
    assert augment.AugmentConfig().describe() == "no augmentation"


@pytest.mark.parametrize(("degrees", "words"), [(40, "tilt"), (90, "on their side"), (180, "upside down")])
def test_the_rotation_warning_says_what_the_angle_does(degrees, words):
    (risk,) = augment.label_risks(augment.AugmentConfig(rotation=degrees / 360))
    assert words in risk.message and f"±{degrees}°" in risk.message


def test_a_preset_name_with_a_space_is_refused_with_a_suggestion(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="'walk-gentle'"):
        augment.save_preset("walk gentle", augment.AugmentConfig())
    assert augment.save_preset("walk-gentle", augment.AugmentConfig()).stem == "walk-gentle"


def test_a_gallery_orders_by_confidence_and_marks_suspects():
    probs = np.array([[0.6, 0.4] + [0] * 8, [0.9, 0.1] + [0] * 8, [0.2, 0.8] + [0] * 8])
    p = evaluate.Predictions(probs, np.array([1, 1, 0]), np.array([100, 101, 102]))
    shown, captions = evaluate.gallery(p, np.arange(3), "most confident first", limit=2, suspects={1})
    assert list(shown) == [1, 2]
    assert captions[0] == "#101 · true Trouser ⚠ · T-shirt/top 90.0\u00a0%, Trouser 10.0\u00a0%"
    shown, _ = evaluate.gallery(p, np.arange(3), "least confident first")
    assert list(shown) == [0, 2, 1]


def test_log_axes_read_in_round_numbers():
    from fashion_lib import figures

    ticks, texts = figures.log_ticks(2, 270, wording.duration, figures.NICE_SECONDS)
    assert texts == ["1 s", "5 s", "20 s", "1 min", "5 min"] and ticks == sorted(ticks)
    _, texts = figures.log_ticks(888_154, 2_300_000, figures.si_number)
    assert texts == ["500k", "1M", "2M", "5M"]


def test_the_accuracy_axis_of_the_cost_charts_stays_between_0_and_100_percent():
    import pandas as pd

    from fashion_lib import figures

    one = pd.DataFrame({"run": ["a"], "model": ["A"], "run time s": [270.0], "test accuracy": [0.9301]})
    low, high = figures.accuracy_vs_cost(one, "run time s", {"a": "#000"}).layout.yaxis.range
    assert 0.9 < low < 0.9301 < high < 0.96  # not plotly's ±50 % around a single point
    assert figures.accuracy_range([0.1, 0.995]) == [0.08, 1.0]
    assert figures.accuracy_range([None]) is None


def test_confidence_histograms_show_each_group_as_shares_of_itself():
    from fashion_lib import figures

    groups = {"Shirt (right)": np.full(900, 0.95), "Shirt → Pullover (wrong)": np.full(35, 0.6)}
    fig = figures.confidence_histogram(groups)
    assert [t.histnorm for t in fig.data] == ["percent", "percent"]  # 35 bars beside 900 stay visible
    assert [t.name for t in fig.data] == ["Shirt (right) (900)", "Shirt → Pullover (wrong) (35)"]
