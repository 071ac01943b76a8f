"""Export: a tiny run (and the shipped baseline) to .keras + SavedModel + card, each format loaded back the
way its users load it, the card read back from the run, the zip for the download button, the command line."""

from __future__ import annotations

import io
import shutil
import threading
import time
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from fashion_lib import config, export, files, models, runs
from fashion_lib.__main__ import main


@pytest.fixture(scope="module")
def test_images(dataset) -> np.ndarray:
    return dataset.x_test[:64, ..., None].astype(np.float32)


@pytest.fixture(scope="module")
def exported(trained_run, test_images, tmp_path_factory) -> export.ExportResult:
    return export.export_model(trained_run, tmp_path_factory.mktemp("export") / "out", images=test_images)


def original_probabilities(folder, images) -> np.ndarray:
    return models.load_model(folder / runs.MODEL_FILE).predict(images, verbose=0)


def test_the_keras_file_loads_in_safe_mode_and_predicts_what_the_run_predicts(
    exported, trained_run, test_images
):
    reloaded = keras.saving.load_model(exported.folder / "model.keras", safe_mode=True, compile=False)
    probabilities = reloaded.predict(test_images, verbose=0)
    assert np.abs(probabilities - original_probabilities(trained_run, test_images)).max() <= 1e-5


def test_the_savedmodel_serving_signature_takes_raw_pixels_and_returns_the_runs_probabilities(
    exported, trained_run, test_images
):
    version = exported.folder / "savedmodel" / "1"  # TF Serving's layout: base path / numbered version
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    _, inputs = serve.structured_input_signature
    assert inputs["pixels"].shape.as_list() == [None, 28, 28, 1] and inputs["pixels"].dtype == tf.float32
    probabilities = serve(pixels=tf.constant(test_images))["probabilities"].numpy()
    assert probabilities.shape == (64, 10)
    assert np.abs(probabilities - original_probabilities(trained_run, test_images)).max() <= 1e-5


def test_each_format_was_checked_on_the_given_images(exported):
    assert [c.format for c in exported.checks] == ["keras", "savedmodel"]
    assert all(c.images == 64 and c.max_difference <= export.ROUND_TRIP_TOLERANCE for c in exported.checks)


def test_the_card_is_read_back_from_the_run(exported, trained_run):
    card = runs.read_json(exported.folder / "card.json")
    summary = runs.read_json(trained_run / runs.SUMMARY_FILE)
    assert card["run_id"] == trained_run.name
    assert card["config"] == runs.read_json(trained_run / runs.CONFIG_FILE)
    for field in ("data_fingerprint", "test_accuracy", "macro_f1", "per_class_f1", "library_versions"):
        assert card[field] == summary[field]
    assert card["temperature"] == summary.get("temperature")
    assert card["class_names"] == list(config.CLASS_NAMES)
    contract = card["input_contract"]
    assert contract["shape"] == [None, 28, 28, 1] and contract["range"] == [0, 255]
    assert card["calibration"].startswith(("Temperature scaling", "This model's confidences were not"))
    assert card["export"]["formats"] == ["keras", "savedmodel"] and card["export"]["date"][:2] == "20"
    assert card["export"]["library_versions"]["tensorflow"] == tf.__version__
    readme = (exported.folder / "README.md").read_text()
    assert f"`{trained_run.name}`" in readme and "serving_default" in readme and "Shirt" in readme


def test_a_savedmodel_that_does_not_reproduce_the_model_fails_the_export(
    trained_run, test_images, tmp_path, monkeypatch
):
    honest = export.savedmodel_probabilities
    monkeypatch.setattr(export, "savedmodel_probabilities", lambda path, x: honest(path, x) + 1e-4)
    with pytest.raises(export.ExportError, match="savedmodel export's probabilities differ"):
        export.export_model(trained_run, tmp_path / "out", images=test_images)


def test_a_model_that_needs_unsafe_loading_is_not_exported(trained_run, test_images, tmp_path):
    folder = shutil.copytree(trained_run, tmp_path / "run")
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(
        keras.layers.Flatten()(keras.layers.Lambda(lambda x: x / 255.0)(inputs))
    )
    keras.Model(inputs, outputs).save(folder / runs.MODEL_FILE)
    with pytest.raises(ValueError, match=r"(?i)lambda"):
        export.export_model(folder, tmp_path / "out", images=test_images)


def test_only_the_chosen_format_is_written(trained_run, test_images, tmp_path):
    out = tmp_path / "out"
    result = export.export_model(trained_run, out, ("savedmodel",), images=test_images[:8], version=3)
    assert not (out / "model.keras").exists() and (out / "savedmodel" / "3" / "saved_model.pb").is_file()
    assert [c.format for c in result.checks] == ["savedmodel"]


@pytest.mark.parametrize("value", ["onnx", "keras,tflite", ""])
def test_an_unknown_format_is_named(value):
    with pytest.raises(export.ExportError, match="choose from keras, savedmodel"):
        export.parse_formats(value)


def test_the_zip_holds_the_chosen_formats_and_the_card_in_one_folder(trained_run, test_images):
    archive = zipfile.ZipFile(io.BytesIO(export.export_zip(trained_run, ("keras",), test_images[:8])))
    names = set(archive.namelist())
    assert {f"{trained_run.name}/{n}" for n in ("model.keras", "card.json", "README.md")} <= names
    assert not any("savedmodel" in n for n in names)
    assert archive.testzip() is None


def test_the_shipped_baseline_exports_with_its_card(tmp_path, test_images):
    folder = export.resolve_model("baseline")
    result = export.export_model(folder, tmp_path / "out", ("keras",), images=test_images)
    shipped = runs.read_json(config.CACHED_MODELS_DIR / "baseline" / runs.CARD_FILE)
    assert result.card["test_accuracy"] == shipped["test_accuracy"] and result.card["temperature"] > 0


def test_the_export_command_writes_the_folder_and_says_what_it_checked(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run), "--to", str(tmp_path / "out"), "--format", "keras"]) == 0
    out = capsys.readouterr().out
    assert "model.keras" in out and "largest difference" in out
    assert (tmp_path / "out" / "card.json").is_file()
    assert "familiarity statistics" in out and (tmp_path / "out" / "familiarity.npz").is_file()


def test_an_export_made_without_the_dataset_or_kept_statistics_goes_without_them(
    trained_run, tmp_path, monkeypatch, test_images, without_dataset, capsys
):
    from fashion_lib import confidence

    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))  # nothing kept for the run's model here
    out = tmp_path / "out"
    out.mkdir()
    runs.write_json(out / runs.CARD_FILE, {"export": {"formats": ["keras"]}})  # an earlier export
    (out / confidence.FAMILIARITY_FILE).write_bytes(b"left by an earlier export")
    result = export.export_model(trained_run, out, ("keras",), images=test_images)
    assert result.card["export"]["familiarity_statistics"] is None
    assert main(["export", str(trained_run), "--to", str(tmp_path / "cli"), "--format", "keras"]) == 0
    assert "note: exported without its familiarity statistics" in capsys.readouterr().err  # it was silent
    assert not (out / confidence.FAMILIARITY_FILE).exists()
    assert "familiarity" not in (out / "README.md").read_text()


def test_ship_says_when_it_ships_without_familiarity_statistics(
    trained_run, tmp_path, monkeypatch, capsys, without_dataset
):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))  # nothing kept for the run's model here
    monkeypatch.setattr(config, "CACHED_MODELS_DIR", tmp_path / "cached_models")
    assert main(["ship", str(trained_run), "--name", "tiny"]) == 0
    assert "shipped without its familiarity statistics" in capsys.readouterr().err
    assert (tmp_path / "cached_models" / "tiny" / "model.keras").is_file()


@pytest.mark.parametrize("in_the_way", ["a file", "a folder of other things"])
def test_the_export_command_says_what_is_in_the_way_without_a_traceback(tmp_path, capsys, in_the_way):
    out = tmp_path / "out"
    if in_the_way == "a file":
        out.write_text("mine")
    else:
        (out / "familiarity.npz").mkdir(parents=True)
        (out / "README.md").write_text("my own notes")
    assert main(["export", "baseline", "--to", str(out), "--format", "keras"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(out) in err and "Traceback" not in err
    assert ("is a file" if in_the_way == "a file" else "holds no earlier export") in err
    if in_the_way != "a file":  # nothing of the user's was overwritten
        assert (out / "README.md").read_text() == "my own notes" and (out / "familiarity.npz").is_dir()


def test_a_savedmodel_export_into_an_earlier_export_leaves_nothing_of_the_other_model(
    trained_run, tmp_path, test_images
):
    """The earlier model.keras stayed beside the new card, and the service served it under the new name."""
    out = tmp_path / "out"
    export.export_model(export.resolve_model("baseline"), out, images=test_images[:8])  # keras + version 1
    inode = (out / "savedmodel").stat().st_ino
    result = export.export_model(trained_run, out, ("savedmodel",), images=test_images[:8], version=2)
    assert not (out / runs.MODEL_FILE).exists() and not (out / "familiarity.npz").exists()
    assert out.stat().st_mode & 0o755 == 0o755  # readable by others (a TF Serving container's user)
    versions = out / "savedmodel"
    assert sorted(p.name for p in versions.iterdir()) == ["1", "2"]  # TF Serving's versions
    assert versions.stat().st_ino == inode  # the same folder: a container that mounts it sees version 2
    assert runs.read_json(out / runs.CARD_FILE)["run_id"] == trained_run.name
    assert result.checks[0].path == out / "savedmodel" / "2"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left


def test_an_earlier_export_with_files_of_the_users_or_a_higher_version_is_refused(
    trained_run, tmp_path, test_images
):
    out = tmp_path / "out"
    export.export_model(trained_run, out, ("savedmodel",), images=test_images[:8], version=2)
    with pytest.raises(export.ExportError, match="already holds version 2"):  # TF Serving would serve 2
        export.export_model(trained_run, out, ("savedmodel",), images=test_images[:8], version=1)
    (out / "Dockerfile").write_text("FROM tensorflow/serving")
    with pytest.raises(export.ExportError, match="holds Dockerfile"):
        export.export_model(trained_run, out, ("keras",), images=test_images[:8])
    assert (out / "Dockerfile").read_text() == "FROM tensorflow/serving"
    assert not (out / "model.keras").exists()


def test_a_failed_export_leaves_the_earlier_one_as_it_was(trained_run, tmp_path, test_images, monkeypatch):
    out = tmp_path / "out"
    export.export_model(trained_run, out, ("keras",), images=test_images[:8])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    honest = export.savedmodel_probabilities
    monkeypatch.setattr(export, "savedmodel_probabilities", lambda path, x: honest(path, x) + 1e-4)
    with pytest.raises(export.ExportError, match="not faithful, so it was not written"):
        export.export_model(export.resolve_model("baseline"), out, images=test_images[:8])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_two_exports_into_one_place_take_turns(trained_run, tmp_path, test_images, monkeypatch):
    """Nothing kept two exports into one folder from checking it, and moving their files in, at once. The
    wait is for the move only: the export is built and checked beside the folder first."""
    moved = []
    honest = export._move_in
    monkeypatch.setattr(export, "_move_in", lambda *args: moved.append(1) or honest(*args))
    out = tmp_path / "out"
    results = []
    with files.locked(files.lock_beside(out), remove=True):  # as another export into out holds it
        thread = threading.Thread(
            target=lambda: results.append(export.export_model(trained_run, out, ("keras",), test_images[:8])),
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".out.new-*/card.json")) and time.monotonic() < deadline:
            time.sleep(0.1)  # until the export is built and checked, and only its move is left
        time.sleep(0.5)
        assert list(tmp_path.glob(".out.new-*/card.json")) and moved == [] and not out.exists()
    thread.join(60)
    assert moved == [1] and results[0].folder == out and (out / "card.json").is_file()


def test_a_damaged_model_that_is_still_a_zip_is_named_not_a_traceback(
    trained_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(config, "CACHED_MODELS_DIR", tmp_path / "cached_models")
    folder = shutil.copytree(trained_run, tmp_path / "run")
    with zipfile.ZipFile(folder / runs.MODEL_FILE, "w") as damaged:
        damaged.writestr("hello.txt", "not a model")
    export_it = ["export", str(folder), "--to", str(tmp_path / "out")]
    for command in (export_it, ["ship", str(folder), "--name", "x"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "model.keras cannot be loaded" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../escaped", ".hidden"])
def test_ship_takes_only_a_plain_folder_name(trained_run, tmp_path, monkeypatch, capsys, name):
    monkeypatch.setattr(config, "CACHED_MODELS_DIR", tmp_path / "cached_models")
    assert main(["ship", str(trained_run), "--name", name]) == 2
    assert "cannot name a shipped model" in capsys.readouterr().err
    assert not (tmp_path / "cached_models").exists() or not any((tmp_path / "cached_models").iterdir())


def test_the_export_command_names_an_unknown_model(tmp_path, capsys):
    assert main(["export", "no-such-run", "--to", str(tmp_path / "out")]) == 2
    assert "no run named 'no-such-run'" in capsys.readouterr().err


def test_the_card_gives_time_by_stage_and_says_when_the_features_came_from_the_cache():
    cached = {
        "stage_seconds": {"feature_extraction_seconds": 0.9, "stage2_seconds": 1420.0},
        "features_extracted": 0,
    }
    line = export.stage_times_line(cached)
    assert line.startswith("Time by stage: backbone features 1 s, fine-tuning 1420 s")
    assert "all in the feature cache" in line
    extracted = {**cached, "features_extracted": 60_000}
    assert "feature cache" not in export.stage_times_line(extracted)
    assert export.stage_times_line({"stage_seconds": {}}) is None  # a card from before stage times


def test_a_head_trained_on_images_is_named_with_its_time():
    on_images = {"stage1_seconds": 521.7, "stage2_seconds": 5823.0, "photo_conversion_seconds": 880.0}
    transfer = runs.stage_seconds(on_images, {"model": "mobilenet_v2"})
    assert transfer == {
        "photo_conversion_seconds": 880.0,
        "head_training_seconds": 521.7,
        "stage2_seconds": 5823.0,
    }
    line = export.stage_times_line({"stage_seconds": transfer})
    assert line == "Time by stage: product photos 880 s, head 522 s, fine-tuning 5823 s"
    # the baseline has no head: its stage 1 is the whole network
    assert runs.stage_seconds(on_images, {"model": "baseline"}) == {
        "training_seconds": 521.7,  # its stage 1: the card's stages add up to its run time, as Compare's
        "photo_conversion_seconds": 880.0,
        "stage2_seconds": 5823.0,
    }
    # resumed after stage 1: its time is not known, and no head time is made up
    resumed = {"stage2_seconds": 5823.0}
    assert runs.stage_seconds(resumed, {"model": "mobilenet_v2"}) == {"stage2_seconds": 5823.0}
    # from cached features the head's own time was recorded, apart from extracting them
    cached = {"stage1_seconds": 10.0, "feature_extraction_seconds": 1.0, "head_training_seconds": 9.0}
    assert runs.stage_seconds(cached, {"model": "mobilenet_v2"}) == {
        "feature_extraction_seconds": 1.0,
        "head_training_seconds": 9.0,
    }
