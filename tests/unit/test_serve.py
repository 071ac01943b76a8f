"""The inference service with FastAPI's TestClient on the shipped baseline: photos, batches, pixels, Grad-CAM,
every kind of bad input (always a 4xx with a JSON reason), the token, health and card; the micro-batcher;
and one real server started with `python -m fashion_lib serve` and called over HTTP."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import shutil
import signal
import socket
import time
from types import SimpleNamespace

import cv2
import httpx2
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException

from bench.photo_synthetic import make_photo
from bench.serve_load import start_server
from fashion_lib import confidence, config, explain, export, inference, models, photos, serve
from fashion_lib.__main__ import main
from tests.processes import free_port, stop
from tests.unit.test_photos import BAD, encode, malformed_corpus

BASELINE = config.CACHED_MODELS_DIR / "baseline"


def wait_until_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 120
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, client.get("/health").json()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def no_token():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FASHION_API_TOKEN", raising=False)
        yield


@pytest.fixture(scope="module")
def client(no_token):
    with TestClient(serve.create_app("baseline")) as c:
        wait_until_ready(c)
        yield c


@pytest.fixture(scope="module")
def model():
    return models.load_model(BASELINE / "model.keras")


def png(image: np.ndarray) -> bytes:
    return encode(image, "PNG")


def files(*payloads: bytes, name: str = "image") -> list:
    return [("files", (f"{name}{i}", data, "application/octet-stream")) for i, data in enumerate(payloads)]


def product_photo(dataset, index: int) -> bytes:
    """A test image turned into a ≈ 0.15 MP product photo on a white background, as a JPEG."""
    rgb = make_photo(dataset.x_test[index], "white catalogue", np.random.default_rng(index))
    return encode(rgb, "JPEG", quality=90)


def assert_error(response, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and words in body["detail"], body
    assert "Traceback" not in response.text


# ------------------------------------------------------------------------------------------ good input


def test_a_product_photo_is_converted_and_classified(client, dataset):
    response = client.post("/predict", files=files(product_photo(dataset, 2)))  # test image 2: trousers
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {
        "name": "baseline",
        "display_name": "Baseline CNN",
        "run_id": "20261129-122347-baseline",
    }
    assert body["calibrated"] is True
    (prediction,) = body["predictions"]
    assert prediction["file"] == "image0" and prediction["input"].startswith("photo conversion")
    top = prediction["top"]
    assert len(top) == serve.DEFAULT_TOP_K and top[0]["label"] == "Trouser"
    assert [t["label"] for t in top] == [config.CLASS_NAMES[t["index"]] for t in top]
    probabilities = [t["probability"] for t in top]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6


def test_the_service_gives_a_photo_the_probabilities_the_library_gives_it(client, model, dataset):
    # A transparent background makes the conversion deterministic (GrabCut's initialisation is random).
    rgb = cv2.resize(255 - dataset.x_test[3], (140, 140), interpolation=cv2.INTER_CUBIC)
    alpha = np.where(cv2.resize(dataset.x_test[3], (140, 140)) > 20, 255, 0).astype(np.uint8)
    upload = encode(np.dstack([rgb, rgb, rgb, alpha]), "PNG")
    prediction = client.post("/predict?top_k=10", files=files(upload)).json()["predictions"][0]
    _, conversion = photos.convert_upload(upload)
    expected = model.predict(conversion.image[None, ..., None].astype(np.float32), verbose=0)[0]
    assert prediction["input"] == "photo conversion (transparency)"
    got = np.zeros(10)
    for t in prediction["top"]:
        got[t["index"]] = t["probability"]
    assert np.abs(got - expected).max() <= 1e-5


def test_a_batch_of_fashion_mnist_images_is_used_as_it_is(client, model, dataset):
    response = client.post("/predict?top_k=1", files=files(*(png(dataset.x_test[i]) for i in range(5))))
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    expected = model.predict(dataset.x_test[:5, ..., None].astype(np.float32), verbose=0)
    assert [p["input"] for p in predictions] == [inference.AS_IS] * 5
    assert [p["top"][0]["index"] for p in predictions] == list(expected.argmax(axis=1))
    assert np.allclose([p["top"][0]["probability"] for p in predictions], expected.max(axis=1), atol=1e-5)


def test_pixels_as_json_give_the_models_probabilities(client, model, dataset):
    images = dataset.x_test[10:13]
    response = client.post("/predict/pixels?top_k=10", json=images.tolist())
    assert response.status_code == 200
    expected = model.predict(images[..., None].astype(np.float32), verbose=0)
    for prediction, row in zip(response.json()["predictions"], expected, strict=True):
        got = np.zeros(10)
        for t in prediction["top"]:
            got[t["index"]] = t["probability"]
        assert np.allclose(got, row, atol=1e-5) and prediction["file"] is None


def test_pixels_with_a_channel_axis_and_a_single_image_are_accepted(client, dataset):
    with_channel = client.post("/predict/pixels", json=dataset.x_test[:2, ..., None].tolist())
    single = client.post("/predict/pixels", json=dataset.x_test[0].tolist())
    assert with_channel.status_code == single.status_code == 200
    assert len(with_channel.json()["predictions"]) == 2 and len(single.json()["predictions"]) == 1


def test_explain_adds_a_gradcam_heatmap_png_for_the_predicted_class(client, model, dataset):
    response = client.post("/predict?explain=true", files=files(png(dataset.x_test[0])))
    assert response.status_code == 200
    prediction = response.json()["predictions"][0]
    heatmap = cv2.imdecode(np.frombuffer(base64.b64decode(prediction["heatmap_png"]), np.uint8), -1)
    cam = explain.gradcam(model, dataset.x_test[:1, ..., None])
    expected = cv2.resize(cam.heatmaps[0], (28, 28), interpolation=cv2.INTER_LINEAR)
    assert heatmap.shape == (28, 28) and heatmap.dtype == np.uint8
    assert np.abs(heatmap / 255 - expected).max() <= 1 / 255 and heatmap.max() > 200
    assert prediction["top"][0]["label"] == "Ankle boot"  # test image 0
    plain = client.post("/predict", files=files(png(dataset.x_test[0]))).json()["predictions"][0]
    assert plain["heatmap_png"] is None
    assert abs(plain["top"][0]["probability"] - prediction["top"][0]["probability"]) < 1e-5


def test_a_28x28_catalogue_thumbnail_dark_on_white_goes_through_the_photo_conversion(client, dataset):
    thumbnail = 255 - dataset.x_test[2]  # trousers, dark on white: a photo's polarity, not Fashion-MNIST's
    prediction = client.post("/predict", files=files(png(thumbnail))).json()["predictions"][0]
    assert prediction["input"].startswith("photo conversion") and prediction["top"][0]["label"] == "Trouser"


def test_the_service_serves_an_export_folder_with_its_not_sure_rule_where_the_dataset_is_not(
    no_token, dataset, tmp_path, without_dataset
):
    from fashion_lib import photo_render

    images = dataset.x_test[:8, ..., None]
    folder = export.export_model(BASELINE, tmp_path / "export", ("keras",), images).folder
    # the shipped statistics travel with the export, made over for its own model file (not the shipped one)
    beside = folder / confidence.FAMILIARITY_FILE
    exported = confidence.read(beside, confidence.digest(folder / "model.keras"))
    assert (
        exported is not None and confidence.read(beside, confidence.digest(BASELINE / "model.keras")) is None
    )
    assert exported.threshold == confidence.known(BASELINE / "model.keras").threshold
    assert "`familiarity.npz`" in (folder / "README.md").read_text()
    with TestClient(serve.create_app(str(folder))) as client:
        wait_until_ready(client)
        card = client.get("/model").json()
        assert card["export"]["formats"] == ["keras"] and card["export"]["familiarity_statistics"]
        assert card["not_sure_rule"] == "confidence, photo conversion and familiarity"
        answer = client.post("/predict/pixels", json=dataset.x_test[:1].tolist()).json()
        assert answer["model"]["run_id"] == "20261129-122347-baseline"
        assert answer["predictions"][0]["top"][0]["label"] == "Ankle boot"
        text = client.post("/predict", files=files(photo_render.not_clothes("text", seed=0))).json()
        assert "unlike the images the model learnt from" in text["predictions"][0]["verdict"]["reasons"][0]
    (folder / confidence.FAMILIARITY_FILE).unlink()  # an export without them: the other two signs decide
    with TestClient(serve.create_app(str(folder))) as client:
        wait_until_ready(client)
        assert client.get("/model").json()["not_sure_rule"].startswith("confidence and photo conversion (")


def test_health_and_model_card(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ready"
    card = client.get("/model").json()
    shipped = json.loads((BASELINE / "card.json").read_text())
    assert card["test_accuracy"] == shipped["test_accuracy"] and card["run_id"] == shipped["run_id"]
    assert card["class_names"] == list(config.CLASS_NAMES) and card["input_contract"]["range"] == [0, 255]


def test_the_openapi_docs_describe_every_endpoint(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/pixels", "/health", "/model"} <= set(paths)


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"", "empty"),
        (b"hello, this is not an image", "not an image"),
        (BAD["truncated_jpeg"], "truncated or damaged"),
        (BAD["bomb"], "decompression bomb"),
        (BAD["gif"], "GIF images are not supported"),
        (BAD["animated_webp"], "animated"),
        (BAD["one_pixel"], "only 1 × 1"),
        (BAD["dds"], "cannot be read as an image"),  # was a 500
    ],
    ids=["empty", "text", "truncated-jpeg", "bomb", "gif", "animated", "one-pixel", "dds"],
)
def test_a_bad_file_is_refused_with_the_reason(client, payload, words):
    assert_error(client.post("/predict", files=files(payload)), 400, "invalid_image", words)


def test_a_batch_names_every_bad_file(client, dataset):
    response = client.post("/predict", files=files(png(dataset.x_test[0]), b"", BAD["gif"], name="f"))
    assert_error(response, 400, "invalid_image", "file 2 (f1): the file is empty")
    assert [f["file"] for f in response.json()["files"]] == ["f1", "f2"]


def test_too_many_files_are_refused(client, dataset):
    upload = png(dataset.x_test[0])
    response = client.post("/predict", files=files(*[upload] * (photos.MAX_UPLOAD_FILES + 1)))
    assert_error(response, 413, "too_many_files", f"at most {photos.MAX_UPLOAD_FILES}")


def test_a_file_over_the_size_limit_is_refused(client):
    response = client.post("/predict", files=files(b"\xff" * (photos.MAX_FILE_BYTES + 1)))
    assert_error(response, 413, "file_too_large", "the limit is 10 MB")


def test_a_request_without_files_says_how_to_send_them(client, dataset):
    assert_error(client.post("/predict", json={"x": 1}), 422, "invalid_request", "field 'files'")


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"not json", "invalid_json", "not JSON"),
        (b"[[1, 2], [3]]", "wrong_shape", "uneven lengths"),
        (b'[[["a"]]]', "wrong_shape", "other than numbers"),
        # NumPy read a true among numbers as the pixel 1
        (json.dumps([[True] + [0] * 27] + [[0] * 28] * 27).encode(), "wrong_shape", "other than numbers"),
        (json.dumps(np.zeros((2, 28, 27)).tolist()).encode(), "wrong_shape", "got shape [2, 28, 27]"),
        (json.dumps(np.full((1, 28, 28), 300).tolist()).encode(), "out_of_range", "from 0 to 255"),
        (b"{}", "wrong_shape", "expected a JSON array"),
        (b"[" * 5000 + b"]" * 5000, "wrong_shape", "nested 5000 deep"),  # was a RecursionError: 500
        (b"[" * 5 + b"0" + b"]" * 5, "wrong_shape", "nested 5 deep"),
    ],
    ids=[
        "not-json",
        "ragged",
        "strings",
        "a-boolean",
        "wrong-size",
        "out-of-range",
        "object",
        "deep",
        "one-too-deep",
    ],
)
def test_a_wrong_json_body_says_what_is_wrong(client, body, code, words):
    response = client.post("/predict/pixels", content=body, headers={"content-type": "application/json"})
    assert_error(response, 422, code, words)


def test_too_many_pixel_images_are_refused(client):
    body = json.dumps(np.zeros((inference.MAX_PIXEL_IMAGES + 1, 28, 28), np.uint8).tolist())
    response = client.post("/predict/pixels", content=body, headers={"content-type": "application/json"})
    assert_error(response, 413, "too_many_images", f"at most {inference.MAX_PIXEL_IMAGES}")


def test_asking_for_another_model_says_which_one_is_served(client, dataset):
    response = client.post("/predict/pixels?model=efficientnet_b0", json=dataset.x_test[:1].tolist())
    assert_error(response, 404, "unknown_model", "serves 'baseline'")
    by_run_id = client.post(
        "/predict/pixels?model=20261129-122347-baseline", json=dataset.x_test[:1].tolist()
    )
    assert by_run_id.status_code == 200


def test_an_export_with_a_damaged_card_stops_the_command_before_it_listens(tmp_path, capsys):
    folder = tmp_path / "export"
    shutil.copytree(config.CACHED_MODELS_DIR / "baseline", folder)
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, "name": 5, "run_id": None}))
    assert main(["serve", "--model", str(folder), "--port", "1"]) == 2  # it said ready, then 500 on all
    assert "card.json is damaged: its name and run_id must be text" in capsys.readouterr().err


def test_an_unknown_model_stops_the_command_before_it_listens(capsys):
    assert main(["serve", "--model", "no-such-model", "--port", "1"]) == 2
    assert "no run named 'no-such-model'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--port", "99999"), ("--port", "-1"), ("--batch-window-ms", "inf"), ("--batch-window-ms", "1e9")],
)
def test_a_port_or_batch_window_out_of_range_is_refused_before_anything_starts(capsys, option, value):
    with pytest.raises(SystemExit) as stop:  # argparse's exit: before the model loads
        main(["serve", option, value])
    assert stop.value.code == 2 and f"{value} is not between" in capsys.readouterr().err


def test_a_bad_query_parameter_is_a_readable_4xx(client, dataset):
    response = client.post("/predict/pixels?top_k=11", json=dataset.x_test[:1].tolist())
    assert_error(response, 422, "invalid_request", "top_k: Input should be less than or equal to 10")


def test_malformed_uploads_never_cause_a_server_error(client):
    statuses = {client.post("/predict", files=files(payload)).status_code for payload in malformed_corpus(80)}
    assert statuses <= {200, 400} and 400 in statuses


# ---------------------------------------------------------------------------------------- the limits


def body_limited_app(max_bytes: int) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"size": len(await request.body())}

    @app.exception_handler(HTTPException)
    async def refused(request, exc):
        return serve.error_response(exc.status_code, exc.code, exc.detail)

    app.add_middleware(serve.Gate, token=None, max_bytes=max_bytes)
    return app


def test_a_request_body_over_the_limit_is_refused_before_it_is_read():
    client = TestClient(body_limited_app(100))
    assert client.post("/echo", content=b"x" * 100).json() == {"size": 100}
    assert_error(client.post("/echo", content=b"x" * 101), 413, "request_too_large", "the limit is")
    chunked = client.post("/echo", content=iter([b"x" * 60, b"x" * 60]))  # no Content-Length
    assert_error(chunked, 413, "request_too_large", "larger than allowed")


# ------------------------------------------------------------------------------------- token, loading


def test_with_a_token_set_requests_without_it_get_401(no_token, dataset):
    app = serve.create_app("baseline", token="s3cret")
    with TestClient(app) as client:
        wait_until_ready(client)  # /health needs no token
        pixels = dataset.x_test[:1].tolist()
        assert_error(client.post("/predict/pixels", json=pixels), 401, "unauthorized", "Bearer")
        assert client.post("/predict/pixels", json=pixels).headers["www-authenticate"] == "Bearer"
        wrong = client.post("/predict/pixels", json=pixels, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert client.get("/model").status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert client.post("/predict/pixels", json=pixels, headers=right).status_code == 200
        assert client.get("/model", headers=right).status_code == 200


def test_the_token_comes_from_the_environment(monkeypatch, dataset):
    monkeypatch.setenv("FASHION_API_TOKEN", "from-env")
    client = TestClient(serve.create_app("baseline"))  # not started: the gate answers before the model
    assert client.get("/model").status_code == 401
    assert client.get("/model", headers={"Authorization": "Bearer from-env"}).status_code == 200
    assert config.current_settings()["FASHION_API_TOKEN"] == "set (hidden)"


def test_before_the_model_is_loaded_health_and_predict_say_so(no_token, dataset):
    client = TestClient(serve.create_app("baseline"))  # without `with`, the lifespan (loading) never runs
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "loading"
    response = client.post("/predict/pixels", json=dataset.x_test[:1].tolist())
    assert_error(response, 503, "not_ready", "still loading")


# --------------------------------------------------------------------------------------- micro-batching


def run_async(coroutine):
    """asyncio.run in a thread of its own: Playwright's sync API, used by the browser tests of the same
    session, keeps an event loop running in the main thread, where asyncio.run refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_rows():
    calls = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return np.repeat(x.reshape(len(x), -1)[:, :1], 10, axis=1)  # each row carries its image's value

    async def scenario():
        batcher = inference.MicroBatcher(predict, window_ms=20, max_batch=64)
        loop = asyncio.create_task(batcher.run())
        requests = [np.full((1 + i % 3, 28, 28, 1), i, np.float32) for i in range(12)]
        answers = await asyncio.gather(*(batcher(r) for r in requests))
        loop.cancel()
        return requests, answers

    requests, answers = run_async(scenario())
    for request, answer in zip(requests, answers, strict=True):
        assert answer.shape == (len(request), 10) and (answer == request[0, 0, 0, 0]).all()
    assert sum(calls) == sum(len(r) for r in requests) and len(calls) < len(requests)


def test_a_failing_forward_pass_fails_its_requests_and_the_batcher_goes_on():
    outcomes = iter([RuntimeError("out of memory"), None])

    def predict(x: np.ndarray) -> np.ndarray:
        error = next(outcomes)
        if error:
            raise error
        return np.zeros((len(x), 10))

    async def scenario():
        batcher = inference.MicroBatcher(predict, window_ms=0, max_batch=64)
        loop = asyncio.create_task(batcher.run())
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher(np.zeros((1, 28, 28, 1), np.float32))
        answer = await batcher(np.zeros((2, 28, 28, 1), np.float32))
        loop.cancel()
        return answer

    assert run_async(scenario()).shape == (2, 10)


# ---------------------------------------------------------------------------------------- real server


def test_the_real_server_answers_over_http(no_token, dataset, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    server = start_server("baseline", port, log)  # `python -m fashion_lib serve`, until /health says ready
    stalled = None
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            photo = http.post("/predict", files=files(png(dataset.x_test[1])))
            assert photo.status_code == 200
            assert photo.json()["predictions"][0]["top"][0]["label"] == "Pullover"
            pixels = http.post("/predict/pixels", json=dataset.x_test[:1].tolist())
            assert pixels.json()["predictions"][0]["top"][0]["label"] == "Ankle boot"
            assert_error(http.post("/predict", files=files(BAD["gif"])), 400, "invalid_image", "GIF")
        # an upload stalled after its first byte does not hold the shutdown (it did, for ever)
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /predict/pixels HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[")
        time.sleep(0.5)
    finally:
        started = time.monotonic()
        stop(server)  # SIGTERM; SIGKILL after 10 s
        if stalled is not None:
            stalled.close()
    assert server.returncode != -signal.SIGKILL and time.monotonic() - started < 9
    assert "loaded and warmed up: ready" in log.read_text()


def test_every_prediction_says_whether_it_is_sure_and_text_is_not_clothes(client, dataset):
    from fashion_lib import photo_render

    sure = client.post("/predict/pixels", json=dataset.x_test[:1].tolist()).json()["predictions"][0]
    assert sure["verdict"] == {"label": sure["top"][0]["label"], "sure": True, "reasons": []}
    text = photo_render.not_clothes("text", seed=0)  # a photo of words: none of the ten classes
    doubt = client.post("/predict", files=files(text)).json()["predictions"][0]
    assert doubt["verdict"]["sure"] is False and doubt["verdict"]["label"] is None
    assert "unlike the images the model learnt from" in doubt["verdict"]["reasons"][0]


def test_a_pixels_body_far_beyond_what_the_endpoint_needs_is_refused_unread(client):
    from fashion_lib import serve

    limit = serve.PATH_LIMITS["/predict/pixels"]
    response = client.post(
        "/predict/pixels", content=b"[" + b"0," * limit + b"0]", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"
    assert limit < 2**22  # a few MB, not the 161 MB that photo uploads may take


def test_for_a_model_that_knows_mirror_images_the_service_keeps_the_surer_way_round():
    from tests.unit.test_confidence import leaning, photo_conversion

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([leaning(x[..., 0]), np.zeros((len(x), 1))], axis=1)

    facing_right = np.zeros((28, 28), np.uint8)
    facing_right[:, 16:] = 200
    conversions = (photo_conversion(facing_right, photos.AS_IS), photo_conversion(facing_right))
    hows = ("as it is", "photo")
    stats = confidence.Familiarity("x", np.zeros((10, 2)), np.eye(2), 1.0, mirror_cost=0.0)

    async def scenario():
        batcher = inference.MicroBatcher(predict, window_ms=1, max_batch=8)
        loop = asyncio.create_task(batcher.run())
        service = SimpleNamespace(
            batcher=batcher,
            loaded=inference.LoadedModel(None, predict, stats),
            card={},
            info=lambda: {"name": "stand-in"},
        )
        images = np.stack([c.image for c in conversions])
        answer = await serve.predict_images(service, images, ["a", "b"], hows, 1, False, conversions)
        loop.cancel()
        return answer

    as_is, photo = run_async(scenario())["predictions"]
    assert photo["top"][0] == {"label": "Sneaker", "index": 7, "probability": pytest.approx(0.91)}
    assert photo["input"].startswith("photo, mirrored") and photo["verdict"]["sure"]
    # a Fashion-MNIST image is taken the dataset's way round, however unsure the model is of it
    assert as_is["top"][0]["label"] == "Sandal" and as_is["input"] == "as it is"
    assert hows == ("as it is", "photo") and not conversions[1].mirrored  # the caller's own are left alone


def gate_scenario(path: str, method: str, in_flight: int, body_stalls: bool, drip: int = 0) -> list[dict]:
    """What the Gate (around a small app that reads the body) sends for one request."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse as Plain
    from starlette.routing import Route

    async def echo(request):
        return Plain({"bytes": len(await request.body())})

    gate = serve.Gate(Starlette(routes=[Route(path, echo, methods=[method])]), None, 2**20)
    gate.in_flight = in_flight
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "headers": [(b"content-length", b"1000"), (b"content-type", b"application/json")],
    }
    parts = [{"type": "http.request", "body": b"[", "more_body": body_stalls}]
    parts += [{"type": "http.request", "body": b"0", "more_body": True}] * drip

    async def receive():
        if parts:
            if len(parts) > 1:
                await asyncio.sleep(0.1)  # a byte now and then: never idle for BODY_IDLE_S
            return parts.pop()
        await asyncio.sleep(5)  # the client sends nothing more for 5 s (BODY_IDLE_S is 0.2 here) ...
        return {"type": "http.disconnect"}  # ... then goes away

    async def scenario():
        sent = []

        async def send(message):
            sent.append(message)

        await gate(scope, receive, send)
        return sent

    return run_async(scenario())


def test_a_body_that_stops_arriving_is_given_up_and_the_health_check_always_answers(monkeypatch):
    """64 uploads stalled after one byte held every place: everyone got 503, /health too, for as long
    as their clients stayed."""
    monkeypatch.setattr(serve, "BODY_IDLE_S", 0.2)
    stalled = gate_scenario("/predict/pixels", "POST", 0, body_stalls=True)
    assert stalled[0]["status"] == 408
    monkeypatch.setattr(serve, "BODY_MIN_S", 0.5)  # a byte every 0.1 s for 3 s: given up after 0.5 s
    dripping = gate_scenario("/predict/pixels", "POST", 0, body_stalls=True, drip=30)
    assert dripping[0]["status"] == 408 and b"too slowly" in dripping[1]["body"]
    full = serve.MAX_IN_FLIGHT
    assert gate_scenario("/predict/pixels", "POST", 0, body_stalls=False)[0]["status"] == 200
    assert gate_scenario("/predict/pixels", "POST", full, body_stalls=False)[0]["status"] == 503
    assert gate_scenario("/health", "GET", full, body_stalls=False)[0]["status"] == 200
