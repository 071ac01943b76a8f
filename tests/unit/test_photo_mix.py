"""Training on product photos (``--photo-mix``): which images become photos, the conversion cache (kept
on a stop, rebuilt when damaged), the config's rules, and a run that trains on them."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_lib import config, lifecycle, runs, train
from fashion_lib.training import photo_mix, pipelines
from tests.unit.test_train import tiny


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_photos_come_from_the_training_split_only_class_balanced(dataset):
    splits = pipelines.make_splits(tiny(subset=1000, val_fraction=0.2), dataset)
    index = photo_mix.choose(splits.y_train, splits.train_index, 200, seed=42)
    assert len(index) == 200 and set(index) <= set(splits.train_index)
    assert not set(index) & set(splits.val_index)  # validation images are never rendered
    assert np.bincount(dataset.y_train[index], minlength=10).tolist() == [20] * 10
    assert (np.diff(index) > 0).all()
    everything = photo_mix.choose(splits.y_train, splits.train_index, 5000, seed=42)
    assert sorted(everything) == sorted(splits.train_index)  # more than there are: all of them


def test_converted_photos_are_the_upload_conversion_and_are_cached(home, dataset, monkeypatch):
    index = np.array([3, 10, 11, 500])
    seen = []
    photos, kept = photo_mix.converted(dataset.x_train, index, progress=lambda done, total: seen.append(done))
    assert photos.shape == (4, 28, 28) and photos.dtype == np.uint8 and kept.tolist() == [3, 10, 11, 500]
    assert np.array_equal(photos[1], photo_mix.convert_one(dataset.x_train[10], 10))  # the same photo
    assert seen[0] == 0 and seen[-1] == 4
    assert not np.array_equal(photos[0], dataset.x_train[3])  # a photo, not the image itself
    assert sorted(photo_mix.read_cache(photo_mix.cache_path())) == [3, 10, 11, 500]

    def no_conversion(workers):
        raise AssertionError("everything was cached: nothing should be converted")

    monkeypatch.setattr(photo_mix, "_pool", no_conversion)
    again, kept = photo_mix.converted(dataset.x_train, index[::-1])
    assert np.array_equal(again, photos[::-1]) and kept.tolist() == [500, 11, 10, 3]


def test_a_photo_the_conversion_refuses_is_left_out_and_remembered(home, dataset, monkeypatch):
    from fashion_lib import photos

    real = photos.convert_upload

    def refuse_one(jpeg, *args, **kwargs):  # what a white product on a white background gets
        if refuse_one.calls == 1:
            refuse_one.calls += 1
            raise photos.PhotoError("no product could be told apart from the background")
        refuse_one.calls += 1
        return real(jpeg, *args, **kwargs)

    refuse_one.calls = 0
    monkeypatch.setattr(photos, "convert_upload", refuse_one)
    # in this process (the pool's workers would not see the patch)
    images, ok = photo_mix._convert_chunk(dataset.x_train[[5, 6, 7]], np.array([5, 6, 7]))
    assert ok.tolist() == [True, False, True] and not images[1].any()
    photo_mix._write_cache(photo_mix.cache_path(), {5: images[0], 6: None, 7: images[2]})
    monkeypatch.setattr(photo_mix, "_pool", lambda workers: pytest.fail("all three are known"))
    found, kept = photo_mix.converted(dataset.x_train, np.array([5, 6, 7]))
    assert kept.tolist() == [5, 7] and np.array_equal(found[1], images[2])


def test_a_damaged_cache_is_made_again_and_a_stop_keeps_the_chunks_done(home, dataset, monkeypatch):
    path = photo_mix.cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip file")
    assert photo_mix.read_cache(path) == {}
    photo_mix._write_cache(path, {1: np.ones((28, 28), np.uint8)})
    path.write_bytes(path.read_bytes()[:300])  # a real cache file cut short (BadZipFile, not OSError)
    assert photo_mix.read_cache(path) == {}
    monkeypatch.setattr(photo_mix, "CHUNK", 1)
    done = []
    stopped = photo_mix.converted(  # stopped once the first photo is converted (30 wanted, one worker)
        dataset.x_train,
        np.arange(30),
        progress=lambda converted, total: done.append(converted),
        should_stop=lambda: bool(done) and done[-1] > 0,
        workers=1,
    )
    assert stopped is None
    kept = photo_mix.read_cache(path)
    # the first photo and the few already handed to the worker are saved; the rest were never started
    assert 1 <= len(kept) < 30 and set(kept) <= set(range(30))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"photo_mix": -1}, "photo mix must be"),
        ({"model": "mobilenet_v2", "photo_mix": 10}, "turn on fine-tuning"),
    ],
)
def test_photo_mix_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)
    tiny(model="mobilenet_v2", photo_mix=10, fine_tune=True)  # fine-tuning trains on images: allowed


def test_a_run_trains_on_its_product_photos_and_counts_them(home, dataset):
    folder = train.train(tiny(photo_mix=30))
    summary = runs.read_json(folder / runs.SUMMARY_FILE)
    assert lifecycle.effective_state(folder) == lifecycle.COMPLETED
    assert summary["training_photos"] == 30 and summary["training_images"] == 180
    assert len(photo_mix.read_cache(photo_mix.cache_path())) == 30
    assert "--photo-mix 30" in train.TrainConfig.from_run(folder).command()


def test_a_stop_while_photos_are_converted_ends_the_run_stopped_keeping_them(home, dataset, monkeypatch):
    """The Stop button during the conversion: the run ends 'stopped' within a chunk, the photos converted so
    far stay in the cache, and a resumed run trains with all of them."""
    monkeypatch.setattr(photo_mix, "CHUNK", 2)
    real = photo_mix.converted

    def stop_after_the_first_chunk(x, index, progress=None, should_stop=None, workers=None):
        def progress_then_stop(done, total):
            progress(done, total)
            if done:
                lifecycle.request_stop(next(config.runs_dir().iterdir()))

        return real(x, index, progress_then_stop, should_stop, workers=1)

    monkeypatch.setattr(photo_mix, "converted", stop_after_the_first_chunk)
    folder = train.train(tiny(photo_mix=60))
    assert lifecycle.effective_state(folder) == lifecycle.STOPPED
    assert not runs.read_run(folder).damaged  # stopped before training: no model, and that is no damage
    assert 2 <= len(photo_mix.read_cache(photo_mix.cache_path())) < 60
    monkeypatch.setattr(photo_mix, "converted", real)
    train.train(run_dir=folder)
    assert lifecycle.effective_state(folder) == lifecycle.COMPLETED
    assert runs.read_json(folder / runs.SUMMARY_FILE)["training_photos"] == 60


def test_workers_start_whatever_the_main_module_is(home, dataset, monkeypatch, tmp_path):
    """A spawned child re-runs its parent's main module: under AppTest that was a page script, which
    crashed every worker (BrokenProcessPool). The workers now start with an empty one."""
    import sys
    import types

    script = tmp_path / "page.py"
    script.write_text("raise RuntimeError('a page script must not run in a conversion worker')\n")
    page = types.ModuleType("__main__")
    page.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", page)
    photos, kept = photo_mix.converted(dataset.x_train, np.array([1, 2]), workers=1)
    assert photos.shape == (2, 28, 28) and kept.tolist() == [1, 2]
    assert sys.modules["__main__"] is page  # given back
