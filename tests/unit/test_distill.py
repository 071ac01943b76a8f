"""Distillation: targets made of the labels and the teachers' softened answer, teachers checked before any
work, the answer kept for a resumed run, and a run that learns from a teacher end to end."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_lib import export, lifecycle, models, runs, train
from fashion_lib.training import distill, engine, fitting, pipelines
from fashion_lib.training.callbacks import StopWatch
from tests.conftest import move_run
from tests.unit.test_train import cli, tiny

# ---------------------------------------------------------------------------------- known answers


def test_softening_divides_the_logits_and_keeps_the_ranking():
    logits = np.array([[4.0, 2.0, 0.0], [0.0, 0.0, 6.0]])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    halved = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)
    soft = distill.soften(probs, 2.0)
    assert np.allclose(soft, halved, atol=1e-6) and np.allclose(soft.sum(1), 1)
    assert np.array_equal(soft.argmax(1), probs.argmax(1)) and soft.max() < probs.max()
    assert np.allclose(distill.soften(probs, 1.0), probs, atol=1e-6)


def test_targets_mix_the_one_hot_label_and_the_teachers_answer_by_the_weight():
    teacher = np.full((2, 10), 0.1, dtype=np.float32)
    labels = np.array([3, 7])
    assert np.array_equal(distill.mix(labels, teacher, 0.0), np.eye(10, dtype=np.float32)[labels])
    assert np.allclose(distill.mix(labels, teacher, 1.0), teacher)
    half = distill.mix(labels, teacher, 0.5)
    assert np.isclose(half[0, 3], 0.55) and np.isclose(half[0, 0], 0.05) and np.allclose(half.sum(1), 1)


# ------------------------------------------------------------------------------------------- config


def test_teachers_round_trip_and_appear_in_the_command():
    cfg = tiny(teachers=" run-a, run-b ,", distill_weight=0.3)
    assert cfg.teachers == ("run-a", "run-b")
    again = train.TrainConfig.from_json(cfg.to_json())
    assert again == cfg and again.to_dict()["teachers"] == ["run-a", "run-b"]
    assert "--teachers run-a,run-b --distill-weight 0.3" in cfg.command()
    older = {k: v for k, v in cfg.to_dict().items() if k not in ("teachers", "distill_weight")}
    assert train.TrainConfig.from_dict(older).teachers == ()  # a run stored before distillation


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"distill_weight": 1.5}, "distill weight must be 0–1"),
        ({"model": "mobilenet_v2", "teachers": "a"}, "teachers teach the stages that train on images"),
    ],
)
def test_a_bad_distillation_setting_says_what_is_wrong(overrides, words):
    with pytest.raises(ValueError, match=words):
        tiny(**overrides)


# ------------------------------------------------------------------------------------------ teachers


@pytest.fixture(scope="module")
def teacher(dataset) -> str:
    """A tiny completed baseline run: the teacher of this module's students (same split as ``tiny()``)."""
    return train.train(tiny()).name


def test_a_teacher_must_exist_be_completed_and_share_the_split(teacher, dataset, tmp_path):
    checksum = runs.read_json(runs.resolve_run(teacher) / runs.SUMMARY_FILE)["split_checksum"]
    assert distill.check_teacher(teacher, checksum) == runs.resolve_run(teacher)
    with pytest.raises(distill.TeacherError, match="no such run"):
        distill.check_teacher("no-such-run", checksum)
    with pytest.raises(distill.TeacherError, match="another training/validation split"):
        distill.check_teacher(teacher, "0123456789abcdef")
    unfinished = train.start_run(tiny(seed=7))
    move_run(unfinished, lifecycle.RUNNING)
    with pytest.raises(distill.TeacherError, match="has not completed"):
        distill.check_teacher(unfinished.name, checksum)


def test_the_student_trains_on_the_mixed_targets_and_keeps_the_answer_until_it_completes(
    teacher, dataset, monkeypatch
):
    cfg = tiny(teachers=teacher, distill_weight=0.4)
    folder = train.start_run(cfg)
    splits = pipelines.make_splits(cfg, dataset)
    mixed = engine._with_teachers(cfg, folder, splits, StopWatch(folder, None))
    teacher_model = models.load_model(runs.resolve_run(teacher) / runs.MODEL_FILE)
    answer = distill.soften(pipelines.predict(teacher_model, splits.x_train))
    expected = distill.mix(splits.y_train, answer, 0.4)
    assert np.allclose(mixed.targets, expected, atol=1e-5)
    assert (folder / distill.TARGETS_FILE).is_file()

    # the stored answer is used again (a resumed run): the teachers are not asked twice
    def no_teacher(*args):
        raise AssertionError("the teachers were asked again")

    monkeypatch.setattr(distill, "teachers_answer", no_teacher)
    again = engine._with_teachers(cfg, folder, splits, StopWatch(folder, None))
    assert np.array_equal(again.targets, mixed.targets)
    monkeypatch.undo()

    # the image stage fits on the soft targets, not the labels
    seen = []
    real = fitting.make_dataset
    monkeypatch.setattr(fitting, "make_dataset", lambda x, y, *a, **k: seen.append(y) or real(x, y, *a, **k))
    done = train.train(run_dir=folder)
    assert lifecycle.effective_state(done) == "completed"
    assert seen[0].shape == (len(splits.x_train), 10) and np.allclose(seen[0], mixed.targets)
    summary = runs.read_json(done / runs.SUMMARY_FILE)
    assert summary["teachers"] == [teacher] and summary["distill_weight"] == 0.4
    assert summary["teacher_seconds"] >= 0 and not (done / distill.TARGETS_FILE).exists()

    # the card names the teacher, its accuracy, and counts its training in what the model cost
    card = export.model_card(done)
    teacher_summary = runs.read_json(runs.resolve_run(teacher) / runs.SUMMARY_FILE)
    assert card["teachers"] == [
        {
            "run_id": teacher,
            "test_accuracy": teacher_summary["test_accuracy"],
            "cpu_seconds": teacher_summary["cpu_seconds"],
        }
    ]
    text = export.card_markdown(card)
    total = (summary["cpu_seconds"] + teacher_summary["cpu_seconds"]) / 60
    assert f"from 1 teacher run (distillation, teachers' share 0.4): `{teacher}`" in text
    assert f"{total:.0f} CPU-minutes in all" in text and "teachers' answers" in text


def test_a_stop_while_the_teachers_answer_stops_the_run_before_training(teacher, dataset, monkeypatch):
    x = dataset.x_train[:10, ..., None]
    assert distill.teachers_answer([runs.resolve_run(teacher)], x, stop_requested=lambda: True) is None
    monkeypatch.setattr(distill, "teachers_answer", lambda *args: None)  # stopped part-way
    folder = train.train(tiny(teachers=teacher))
    assert lifecycle.effective_state(folder) == "stopped" and runs.read_metrics(folder) == []
    assert not (folder / distill.TARGETS_FILE).exists()


def test_a_damaged_stored_answer_is_made_again(teacher, dataset):
    cfg = tiny(teachers=teacher)
    folder = train.start_run(cfg)
    (folder / distill.TARGETS_FILE).write_bytes(b"not an npz")
    assert distill.stored_answer(folder, cfg.teachers, 180) is None
    distill.store_answer(folder, ("another",), np.full((180, 10), 0.1, dtype=np.float32))
    assert distill.stored_answer(folder, cfg.teachers, 180) is None  # other teachers
    distill.store_answer(folder, cfg.teachers, np.full((180, 10), 0.1, dtype=np.float32))
    assert distill.stored_answer(folder, cfg.teachers, 181) is None  # other images
    assert distill.stored_answer(folder, cfg.teachers, 180).shape == (180, 10)


def test_cli_refuses_a_missing_teacher_before_any_work_with_a_clear_message():
    flags = ["--model", "baseline", "--subset", "200", "--epochs", "1", "--teachers", "no-such-run"]
    done = cli("train", *flags, "--no-wait")
    assert done.returncode != 0
    assert "teacher 'no-such-run': no such run" in done.stderr and "Traceback" not in done.stderr


def test_the_estimate_counts_one_pass_per_teacher_over_the_training_images():
    from fashion_lib.training import estimates

    one = estimates.estimate_seconds(tiny(subset=1000, teachers="a")).phases
    two = estimates.estimate_seconds(tiny(subset=1000, teachers="a,b")).phases
    assert one["teachers' answers"] > 0
    assert two["teachers' answers"] == pytest.approx(2 * one["teachers' answers"])
    assert "teachers' answers" not in estimates.estimate_seconds(tiny(subset=1000)).phases
