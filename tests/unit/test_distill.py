"""Distillation: targets made of the labels and the teachers' softened answer, teachers checked before any
work, the answer kept for a resumed run, and a run that learns from a teacher end to end."""

from __future__ import annotations

import json
import os
import shutil
import types

import numpy as np
import pytest

from fashion_lib import config, export, lifecycle, models, runs, train
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


def test_the_command_line_reads_teachers_or_their_absence():
    from fashion_lib import __main__ as cli

    parser = cli.build_parser()
    plain = cli.config_from_args(parser.parse_args(["train"]))
    assert plain.teachers == () and plain.distill_weight == 0.5
    taught = cli.config_from_args(parser.parse_args(["train", "--teachers", "run-a,run-b"]))
    assert taught.teachers == ("run-a", "run-b")
    text = " ".join(parser._subparsers._group_actions[0].choices["train"].format_help().split())
    teachers_help = text[text.rindex("--teachers TEACHERS") : text.rindex("--distill-weight DISTILL_WEIGHT")]
    assert teachers_help.endswith("(default: None) ")


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"distill_weight": 1.5}, "distill weight must be 0–1"),
        ({"teachers": "a", "distill_weight": 0.0}, "takes nothing from the teachers"),
        ({"teachers": "a,b,a"}, "each teacher may be named once"),
        ({"model": "mobilenet_v2", "teachers": "a"}, "teachers teach the stages that train on images"),
    ],
)
def test_a_bad_distillation_setting_says_what_is_wrong(overrides, words):
    with pytest.raises(ValueError, match=words):
        tiny(**overrides)


# ------------------------------------------------------------------------------------------ teachers


@pytest.fixture(scope="module", autouse=True)
def own_home(tmp_path_factory):
    """This module's runs (a teacher, students, runs left queued or running on purpose) in their own
    FASHION_HOME: a run left queued by this process would stand in the queue of later tests."""
    old = os.environ["FASHION_HOME"]
    os.environ["FASHION_HOME"] = str(tmp_path_factory.mktemp("distill_home"))
    yield
    os.environ["FASHION_HOME"] = old


@pytest.fixture(scope="module")
def teacher(dataset) -> str:
    """A tiny completed baseline run: the teacher of this module's students (same split as ``tiny()``)."""
    return train.train(tiny()).name


def test_a_teacher_must_exist_be_completed_be_named_once_and_not_have_seen_the_validation_images(
    teacher, dataset
):
    splits = pipelines.make_splits(tiny(), dataset)
    [checked] = distill.check_teachers((teacher,), splits, dataset)
    summary = runs.read_json(runs.resolve_run(teacher) / runs.SUMMARY_FILE)
    assert checked.folder == runs.resolve_run(teacher)
    assert checked.record == {
        "run_id": teacher,
        "test_accuracy": summary["test_accuracy"],
        "cpu_seconds": summary["cpu_seconds"],
        "lineage": {teacher: summary["cpu_seconds"]},
    }
    # the test subset is no concern of the teacher's: only the training and validation images are
    assert distill.check_teachers((teacher,), pipelines.make_splits(tiny(test_subset=60), dataset), dataset)
    with pytest.raises(distill.TeacherError, match="no such run"):
        distill.check_teachers(("no-such-run",), splits, dataset)
    with pytest.raises(distill.TeacherError, match="named twice"):
        distill.check_teachers((teacher, str(runs.resolve_run(teacher))), splits, dataset)
    everything = pipelines.make_splits(tiny(subset=0), dataset)  # its 6,000 validation images hold some
    with pytest.raises(distill.TeacherError, match=r"trained on \d+ of this run's 6,000 validation images"):
        distill.check_teachers((teacher,), everything, dataset)
    unfinished = train.start_run(tiny(seed=7))
    move_run(unfinished, lifecycle.RUNNING)
    with pytest.raises(distill.TeacherError, match="has not completed"):
        distill.check_teachers((unfinished.name,), splits, dataset)


def test_a_teacher_whose_model_file_is_damaged_fails_the_run_with_a_reason_naming_it(
    teacher, dataset, tmp_path
):
    damaged = tmp_path / "damaged-teacher"
    shutil.copytree(runs.resolve_run(teacher), damaged)
    model = bytearray((damaged / runs.MODEL_FILE).read_bytes())
    middle = len(model) // 2
    model[middle : middle + 4096] = bytes(4096)  # still a zip of the right size; its contents are wrong
    (damaged / runs.MODEL_FILE).write_bytes(bytes(model))
    [checked] = distill.check_teachers((str(damaged),), pipelines.make_splits(tiny(), dataset), dataset)
    with pytest.raises(distill.TeacherError, match="its model cannot be loaded"):
        distill.teachers_answer([checked], dataset.x_train[:4, ..., None])


def test_the_student_trains_on_the_mixed_targets_and_keeps_the_answer_until_it_completes(
    teacher, dataset, monkeypatch
):
    cfg = tiny(teachers=teacher, distill_weight=0.4)
    folder = train.start_run(cfg)
    splits = pipelines.make_splits(cfg, dataset)
    watch = StopWatch(folder, None)
    mixed, answer = engine._with_teachers(cfg, folder, splits, watch, dataset, None, None)
    teacher_model = models.load_model(runs.resolve_run(teacher) / runs.MODEL_FILE)
    expected = distill.mix(
        splits.y_train, distill.soften(pipelines.predict(teacher_model, splits.x_train)), 0.4
    )
    assert np.allclose(mixed.targets, expected, atol=1e-5)
    assert (folder / distill.TARGETS_FILE).is_file() and answer.seconds > 0

    # the stored answer is used again (a resumed run): the teachers are not asked twice
    def no_teacher(*args):
        raise AssertionError("the teachers were asked again")

    monkeypatch.setattr(distill, "teachers_answer", no_teacher)
    kept = distill.stored_answer(folder, cfg.teachers)
    again, stored = engine._with_teachers(cfg, folder, splits, watch, dataset, None, kept)
    assert np.array_equal(again.targets, mixed.targets)
    assert stored.seconds == answer.seconds and stored.teachers == answer.teachers
    monkeypatch.undo()

    # the image stage fits on the soft targets, not the labels
    seen = []
    real = fitting.make_dataset
    monkeypatch.setattr(fitting, "make_dataset", lambda x, y, *a, **k: seen.append(y) or real(x, y, *a, **k))
    done = train.train(run_dir=folder)
    assert lifecycle.effective_state(done) == "completed"
    assert seen[0].shape == (len(splits.x_train), 10) and np.allclose(seen[0], mixed.targets)
    summary = runs.read_json(done / runs.SUMMARY_FILE)
    assert summary["teachers"] == answer.teachers and summary["distill_weight"] == 0.4
    assert summary["teacher_seconds"] == round(answer.seconds, 3)  # what the pass cost, though reused
    assert not (done / distill.TARGETS_FILE).exists()
    teacher_cost = answer.teachers[0]["cpu_seconds"]
    assert summary["cpu_seconds_with_teachers"] == pytest.approx(
        summary["cpu_seconds"] + teacher_cost, abs=0.2
    )

    # the card names the teacher and its accuracy, and counts its training in what the model cost
    card = export.model_card(done)
    text = export.card_markdown(card)
    accuracy = answer.teachers[0]["test_accuracy"]
    assert (
        "Learned from 1 teacher run (each target 0.4 the teachers' softened answer and the rest its label): "
        f"`{teacher}` ({100 * accuracy:.2f} % test accuracy)"
    ) in text
    assert f"{summary['cpu_seconds_with_teachers'] / 60:.0f} CPU-minutes in all" in text
    assert "teachers' answers" in text


def test_a_stop_while_the_teachers_answer_stops_the_run_before_training(teacher, dataset, monkeypatch):
    [checked] = distill.check_teachers((teacher,), pipelines.make_splits(tiny(), dataset), dataset)
    x = dataset.x_train[:10, ..., None]
    assert distill.teachers_answer([checked], x, stop_requested=lambda: True) is None
    monkeypatch.setattr(distill, "teachers_answer", lambda *args: None)  # stopped part-way
    folder = train.train(tiny(teachers=teacher))
    assert lifecycle.effective_state(folder) == "stopped" and runs.read_metrics(folder) == []
    assert not (folder / distill.TARGETS_FILE).exists()


def test_a_damaged_or_foreign_stored_answer_is_made_again(teacher, dataset):
    cfg = tiny(teachers=teacher)
    folder = train.start_run(cfg)
    path = folder / distill.TARGETS_FILE
    answer = distill.Answer(np.full((180, 10), 0.1, dtype=np.float32), [{"run_id": teacher}], 2.5)
    distill.store_answer(folder, cfg.teachers, answer)
    good = path.read_bytes()
    assert distill.stored_answer(folder, cfg.teachers, 180).seconds == 2.5
    assert distill.stored_answer(folder, cfg.teachers).probs.shape == (180, 10)
    assert distill.stored_answer(folder, cfg.teachers, 181) is None  # other images
    assert distill.stored_answer(folder, ("another",), 180) is None  # other teachers
    distill.store_answer(folder, cfg.teachers, distill.Answer(answer.probs, [1, "x"], 2.5))
    assert distill.stored_answer(folder, cfg.teachers, 180) is None  # records that are not records
    path.write_bytes(good)
    for damaged in (b"", b"not an npz", good[: len(good) // 2], good[:-40] + bytes(40)):
        path.write_bytes(damaged)
        assert distill.stored_answer(folder, cfg.teachers, 180) is None


def test_cli_refuses_a_missing_teacher_with_a_clear_message_and_leaves_no_failed_run():
    before = sorted(config.runs_dir().iterdir()) if config.runs_dir().exists() else []
    flags = ["--model", "baseline", "--subset", "200", "--epochs", "1", "--teachers", "no-such-run"]
    done = cli("train", *flags, "--no-wait")
    assert done.returncode != 0
    assert "teacher 'no-such-run': no such run" in done.stderr and "Traceback" not in done.stderr
    assert (sorted(config.runs_dir().iterdir()) if config.runs_dir().exists() else []) == before


def test_a_run_is_not_created_for_teachers_that_cannot_teach(teacher):
    runs_before = sorted(config.runs_dir().iterdir())
    for names, words in (
        (("no-such-run",), "no such run"),
        ((teacher, str(runs.resolve_run(teacher))), "named twice"),
    ):
        with pytest.raises(distill.TeacherError, match=words):
            train.start_run(tiny(teachers=names))
    assert sorted(config.runs_dir().iterdir()) == runs_before
    assert [info.folder for info in distill.named_runs((teacher,))] == [runs.resolve_run(teacher)]


def test_the_estimate_counts_each_teachers_pass_at_its_own_speed(teacher):
    from fashion_lib.training import estimates

    per_image = distill.seconds_per_image(teacher)
    assert per_image and per_image > 0
    phases = estimates.estimate_seconds(tiny(subset=1000, teachers=teacher)).phases
    assert phases["teachers' answers"] == pytest.approx(900 * per_image)  # 900 training images
    unknown = estimates.estimate_seconds(tiny(subset=1000, teachers="a,b")).phases
    assert unknown["teachers' answers"] > 0  # at this model's own speed
    assert "teachers' answers" not in estimates.estimate_seconds(tiny(subset=1000)).phases


def test_a_run_resumed_after_its_last_image_stage_still_records_its_teachers(teacher, dataset, monkeypatch):
    """The baseline trains on images in its one stage: a crash after that stage (while evaluating) leaves
    nothing for the teachers to do on resume, but the summary must still say who taught the model."""
    folder = train.start_run(tiny(teachers=teacher))
    real = engine._evaluate_and_save

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(engine, "_evaluate_and_save", crash)
    with pytest.raises(OSError):
        train.train(run_dir=folder)
    monkeypatch.setattr(engine, "_evaluate_and_save", real)
    first = distill.stored_answer(folder, (teacher,))
    assert (folder / engine.STAGE1_WEIGHTS).is_file() and first is not None
    done = train.train(run_dir=folder)
    summary = runs.read_json(done / runs.SUMMARY_FILE)
    assert lifecycle.effective_state(done) == "completed"
    assert summary["teachers"] == first.teachers and summary["teachers"][0]["run_id"] == teacher
    assert summary["teacher_seconds"] == round(first.seconds, 3) and summary["teacher_pass_reused"] is True


def test_the_speed_table_leaves_out_the_teachers_pass_it_timed(teacher, dataset):
    from fashion_lib.training import speed

    cfg = tiny(teachers=teacher)
    done = train.train(cfg)
    summary = runs.read_json(done / runs.SUMMARY_FILE)
    assert summary["teacher_pass_reused"] is False
    runs.write_json(done / runs.SUMMARY_FILE, {**summary, "teacher_pass_reused": True})
    overhead = speed.record_run(cfg, done).overhead_s  # a pass made before this process: not in its time
    runs.write_json(done / runs.SUMMARY_FILE, {**summary, "teacher_seconds": overhead / 2})
    assert speed.record_run(cfg, done).overhead_s == pytest.approx(overhead / 2)


def test_a_teachers_own_teachers_must_not_have_seen_the_validation_images_either(teacher, dataset):
    pupil = train.train(tiny(seed=7, teachers=teacher))  # another subset: its teacher saw none of its images
    taught_by_pupil = pipelines.make_splits(tiny(seed=7), dataset)
    assert distill.check_teachers((pupil.name,), taught_by_pupil, dataset)
    teachers_images = pipelines.make_splits(tiny(), dataset).train_index[:5]
    assert not np.intersect1d(taught_by_pupil.train_index, teachers_images).size
    validation = types.SimpleNamespace(val_index=teachers_images)  # what the pupil never saw, its teacher did
    with pytest.raises(distill.TeacherError, match=f"'{teacher}', which teacher '{pupil.name}' learned from"):
        distill.check_teachers((pupil.name,), validation, dataset)
    # its teachers are found by the run ids it recorded, not by what its configured names stand for now
    summary_path = pupil / runs.SUMMARY_FILE
    summary = runs.read_json(summary_path)
    summary["teachers"][0]["run_id"] = "20260101-000000-baseline"  # taught by a run not here
    summary_path.write_text(json.dumps(summary))
    with pytest.raises(
        distill.TeacherError, match=r"'20260101-000000-baseline': no such run.*now stands for another run"
    ):
        distill.check_teachers((pupil.name,), taught_by_pupil, dataset)


def test_a_shipped_teacher_is_recorded_by_the_run_it_was_shipped_from(dataset):
    from fashion_lib import config as app_config

    shipped = app_config.CACHED_MODELS_DIR / "baseline"
    its_own = types.SimpleNamespace(
        val_index=pipelines.make_splits(train.TrainConfig.from_run(shipped), dataset).val_index
    )
    [checked] = distill.check_teachers(("baseline",), its_own, dataset)
    assert checked.record["run_id"] == runs.read_json(shipped / "card.json")["run_id"] != "baseline"


def test_a_run_reached_through_two_teachers_is_counted_once_in_what_training_cost(teacher):
    grand = {"run_id": "a", "test_accuracy": 0.9, "cpu_seconds": 100.0, "lineage": {"a": 100.0}}
    b_summary = {"cpu_seconds": 10.0, "cpu_seconds_with_teachers": 110.0, "teachers": [grand]}
    c_summary = {"cpu_seconds": 20.0, "cpu_seconds_with_teachers": 120.0, "teachers": [grand]}
    b = {"run_id": "b", "cpu_seconds": 110.0, "lineage": distill.lineage("b", b_summary)}
    c = {"run_id": "c", "cpu_seconds": 120.0, "lineage": distill.lineage("c", c_summary)}
    assert b["lineage"] == {"b": 10.0, "a": 100.0}
    assert distill.total_cost(5.0, [b, c]) == 135.0  # 5 + 10 + 20 + 100, not 5 + 110 + 120
    # a record from before lineages were kept: rebuilt from its run's summary while the run is here ...
    own = runs.read_json(runs.resolve_run(teacher) / runs.SUMMARY_FILE)["cpu_seconds"]
    assert distill.total_cost(5.0, [{"run_id": teacher, "cpu_seconds": 999.0}]) == pytest.approx(5.0 + own)
    # ... otherwise its cost (its own teachers' included) stands for it alone
    assert distill.total_cost(5.0, [{"run_id": "deleted-run", "cpu_seconds": 50.0}, c]) == 175.0
    assert distill.total_cost(5.0, [{"run_id": "deleted-run"}]) is None  # a cost not known
    assert distill.total_cost(5.0, [{"cpu_seconds": 50.0}]) is None  # a record naming no run
