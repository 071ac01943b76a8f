"""HTTP inference service: one model behind FastAPI, served by uvicorn (``python -m fashion_lib serve``).

The model (a run id or folder, a shipped model's name or an export folder) is loaded once and warmed up in
the background; ``GET /health`` answers 200 only after that. Endpoints:

- ``POST /predict``: image files (multipart, field ``files``) → per image the top-k classes with the model's
  calibrated probabilities. Each upload is validated and converted as on the Grad-CAM page (a 28×28
  grayscale image on black is taken as a Fashion-MNIST image as it is). ``?explain=true`` adds a Grad-CAM
  heatmap per image (a 28×28 grayscale PNG, base64).
- ``POST /predict/pixels``: a JSON array of 28×28 raw-pixel images (values 0–255).
- ``GET /model``: the model card. ``/docs``: the OpenAPI documentation.

Bad input gets a 4xx whose JSON body says what is wrong, ``{"error": code, "detail": message}``, never a
stack trace. Forward passes are micro-batched: requests arriving within a few milliseconds share one.
Decoding, conversion and model calls run in worker threads, off the event loop (see ``inference``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import FastAPI, File, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from fashion_lib import config, export, inference, models, photos

SIZE = config.IMAGE_SIZE

DEFAULT_HOST = "127.0.0.1"  # loopback: other machines reach the service only when --host says so
DEFAULT_PORT = 8000
DEFAULT_TOP_K = 3
# The largest request: MAX_UPLOAD_FILES files of the largest size, plus room for the multipart headers …
MAX_REQUEST_BYTES = photos.MAX_UPLOAD_FILES * photos.MAX_FILE_BYTES + 2**20
# … except where a path needs far less: pixel JSON of MAX_PIXEL_IMAGES images ("255, " per pixel, nested).
PATH_LIMITS = {"/predict/pixels": inference.MAX_PIXEL_IMAGES * SIZE * SIZE * 6 + 2**16}
MAX_IN_FLIGHT = 64  # requests being answered at once; more get 503 at once instead of piling up in memory
# A body that stops arriving for this long is given up (408): 64 uploads stalled after one byte held every
# place and refused everyone else, /health included, until their clients went away.
BODY_IDLE_S = 10.0
# ... and one that drips in (a byte every 9 s) is given up after a minute, or as long as its declared size
# takes at 20 kB/s: 64 such clients could otherwise hold every place for ever too.
BODY_MIN_S, BODY_MIN_RATE = 60.0, 20_000
SHUTDOWN_GRACE_S = 5  # on SIGTERM, requests still open after this long are cut (a stalled one held on)
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
INPUT_STATUS = {"invalid_image": 400, "too_many_images": 413}  # other bad input: 422

log = logging.getLogger("uvicorn.error")


class ApiError(HTTPException):
    """A request the service refuses: HTTP status, a short machine-readable code and a sentence for people."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(status, detail)
        self.code = code
        self.extra = extra


CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}
CODES |= {413: "too_large", 422: "invalid_request", 503: "not_ready"}


def error_response(status: int, code: str, detail: str, headers=None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status, headers=headers)


# ------------------------------------------------------------------------------------------- the model


class Service:
    """The served model's state: its folder and card (read at once, so a wrong name fails at start-up),
    the loaded model and the batcher (after the background warm-up), or the error that stopped loading."""

    def __init__(self, model: str, batch_window_ms: float = inference.BATCH_WINDOW_MS) -> None:
        self.name = model
        self.folder = export.resolve_model(model)
        self.card = export.read_card(self.folder)
        self.batch_window_ms = batch_window_ms
        self.loaded: inference.LoadedModel | None = None
        self.batcher: inference.MicroBatcher | None = None
        self.error: str | None = None
        # Photo conversions at once: more only queue for the same cores and hold more decoded photos.
        self.conversions = anyio.CapacityLimiter(os.cpu_count() or 2)

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def answers_to(self, name: str) -> bool:
        return name in (self.name, self.folder.name, self.card["run_id"])

    def info(self) -> dict[str, str]:
        return {"name": self.name, "display_name": self.card["name"], "run_id": self.card["run_id"]}

    async def start(self) -> None:
        try:
            self.loaded = await run_in_threadpool(inference.load_warm, self.folder)
        except Exception as exc:  # reported by /health; the process stays up to say so
            log.error("the model could not be loaded: %s", exc)  # the details (paths) stay in the log
            self.error = "the model could not be loaded; the server's log says why"
            return
        # A full garbage collection walks TensorFlow's ~400,000 objects (≈ 0.2 s here): collect once now and
        # freeze what exists, so no request waits for that.
        gc.collect()
        gc.freeze()
        self.batcher = inference.MicroBatcher(self.loaded.predict, self.batch_window_ms, inference.MAX_BATCH)
        log.info("model '%s' (%s) loaded and warmed up: ready", self.name, self.card["name"])
        await self.batcher.run()


# ----------------------------------------------------------------------------------------- responses


class ClassProbability(BaseModel):
    label: str
    index: int
    probability: float


class Verdict(BaseModel):
    label: str | None  # None: not sure
    sure: bool
    reasons: list[str]


class ImagePrediction(BaseModel):
    file: str | None
    input: str
    top: list[ClassProbability]
    verdict: Verdict
    heatmap_png: str | None = None


class Prediction(BaseModel):
    model: dict[str, str]
    calibrated: bool
    predictions: list[ImagePrediction]


async def predict_images(
    service: Service,
    images: np.ndarray,
    files: list[str | None],
    hows: list[str],
    top_k: int,
    cam: bool,
    conversions: list | None = None,
) -> dict[str, Any]:
    """The response for images (N, 28, 28): batched forward pass, or Grad-CAM (which also predicts)."""
    x = images[..., None].astype(np.float32)
    rows = inference.mirror_rows(service.loaded, conversions)  # photos, for a model that knows mirror images
    answers = await service.batcher(np.concatenate([x, x[rows, :, ::-1]]) if rows else x)  # one pass
    if rows:  # each of those photos the way round the model is surer of
        conversions, hows = list(conversions or []), list(hows)
        answers = inference.keep_surer(answers[: len(x)], answers[len(x) :], rows, conversions, hows)
        images = np.stack([c.image for c in conversions])
    probabilities, distances = inference.split(answers)
    heatmaps: list[str | None] = [None] * len(images)
    if cam:
        _, heatmaps = await run_in_threadpool(inference.heatmap_pngs, service.loaded.model, images)
    tops = inference.top_classes(probabilities, top_k)
    verdicts = inference.verdicts(service.loaded, probabilities, distances, conversions)
    return {
        "model": service.info(),
        "calibrated": service.card.get("temperature") is not None,
        "predictions": [
            {"file": f, "input": how, "top": top, "verdict": verdict, "heatmap_png": heat}
            for f, how, top, verdict, heat in zip(files, hows, tops, verdicts, heatmaps, strict=True)
        ],
    }


# ------------------------------------------------------------------------------------------ requests


class Gate:
    """ASGI middleware that refuses a request before its body is read: a missing or wrong bearer token
    (when one is set) on every path but the health check and the docs, a body over ``max_bytes`` (or the
    path's own limit, PATH_LIMITS), and any request beyond MAX_IN_FLIGHT answered at once (503; the health
    check and the docs always answer). A body that stops arriving for BODY_IDLE_S, or arrives slower than
    BODY_MIN_S or BODY_MIN_RATE allow, is given up (408)."""

    def __init__(self, app, token: str | None, max_bytes: int) -> None:
        self.app, self.token, self.max_bytes = app, token, max_bytes
        self.in_flight = 0

    def authorized(self, headers: Headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        matches = secrets.compare_digest(given.strip().encode(), self.token.encode())
        return scheme.lower() == "bearer" and matches

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        refusal = None
        if self.token and scope["path"] not in OPEN_PATHS and not self.authorized(headers):
            detail = "this service needs 'Authorization: Bearer <token>' (the FASHION_API_TOKEN it runs with)"
            refusal = error_response(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length", "")
        max_bytes = PATH_LIMITS.get(scope["path"], self.max_bytes)
        limit = self.limit(scope["path"], max_bytes)
        if refusal is None and length.isdigit() and int(length) > max_bytes:
            refusal = error_response(
                413, "request_too_large", f"the request is {int(length) / 2**20:.1f} MB; {limit}"
            )
        if refusal is None and self.in_flight >= MAX_IN_FLIGHT and scope["path"] not in OPEN_PATHS:
            refusal = error_response(
                503,
                "busy",
                f"{MAX_IN_FLIGHT} requests are being answered; try again shortly",
                headers={"Retry-After": "1"},
            )
        if refusal is not None:
            return await refusal(scope, receive, send)
        received, complete = 0, False
        declared = int(length) if length.isdigit() else max_bytes
        deadline = asyncio.get_running_loop().time() + max(BODY_MIN_S, declared / BODY_MIN_RATE)

        async def counted():  # a body sent without Content-Length (chunked) is counted as it arrives
            nonlocal received, complete
            if complete:  # the body is in; the app may wait for the client to go away: no time limit
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), min(BODY_IDLE_S, max(left, 0.0)))
            except TimeoutError:
                detail = (
                    f"the request body stopped arriving for {BODY_IDLE_S:.0f} s"
                    if left > BODY_IDLE_S
                    else "the request body arrived too slowly"
                )
                raise ApiError(408, "request_timeout", detail) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise ApiError(413, "request_too_large", f"the request is larger than allowed; {limit}")
            return message

        self.in_flight += 1
        try:
            await self.app(scope, counted, send)
        finally:
            self.in_flight -= 1

    @staticmethod
    def limit(path: str, max_bytes: int) -> str:
        if path in PATH_LIMITS:
            return (
                f"the limit is {max_bytes / 2**20:.1f} MB ({inference.MAX_PIXEL_IMAGES} images of raw pixels)"
            )
        return (
            f"the limit is {max_bytes / 2**20:.0f} MB ({photos.MAX_UPLOAD_FILES} files of at most "
            f"{photos.MAX_FILE_BYTES // 2**20} MB)"
        )


def ready_service(request: Request) -> Service:
    service: Service = request.app.state.service
    if not service.ready:
        detail = service.error or "the model is still loading; GET /health says when it is ready"
        raise ApiError(503, "not_ready", detail)
    return service


def check_model(service: Service, model: str | None) -> None:
    if model is not None and not service.answers_to(model):
        raise ApiError(
            404,
            "unknown_model",
            f"this service serves '{service.name}' ({service.card['name']}, run {service.card['run_id']}), "
            f"not '{model}'; start one for it with: python -m fashion_lib serve --model {model}",
        )


def readable(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors as one sentence per problem, naming the field."""
    parts = []
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        if field == "files" and error.get("type") == "missing":
            parts.append("no image files: send them as multipart/form-data in the field 'files'")
        else:
            parts.append(f"{field or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


TopK = Annotated[int, Query(ge=1, le=config.NUM_CLASSES, description="how many classes per image")]
Explain = Annotated[bool, Query(alias="explain", description="add a Grad-CAM heatmap per image")]
ModelName = Annotated[str | None, Query(description="the served model's name or run id, to make sure")]
PIXELS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "description": f"{SIZE}×{SIZE} images of raw pixels, 0–255 (light garment on black)",
                "type": "array",
                "minItems": 1,
                "maxItems": inference.MAX_PIXEL_IMAGES,
                "items": {
                    "type": "array",
                    "minItems": SIZE,
                    "maxItems": SIZE,
                    "items": {
                        "type": "array",
                        "minItems": SIZE,
                        "maxItems": SIZE,
                        "items": {"type": "number", "minimum": 0, "maximum": 255},
                    },
                },
            }
        }
    },
}


def create_app(
    model: str = models.BASELINE, token: str | None = None, batch_window_ms: float = inference.BATCH_WINDOW_MS
) -> FastAPI:
    """The service for one model (run id or folder, shipped model name, export folder); ``token``
    defaults to FASHION_API_TOKEN. Raises FileNotFoundError or ValueError at once for a model that is not
    there or not finished; loading and warm-up happen in the background once the server starts."""
    service = Service(model, batch_window_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(service.start())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Declares the bearer scheme for /docs ("Authorize"); the Gate enforces it before a body is read.
    bearer = Security(HTTPBearer(auto_error=False, description="FASHION_API_TOKEN, when the service has one"))
    app = FastAPI(
        title="Fashion-MNIST inference service",
        description=__doc__,
        version="1",
        lifespan=lifespan,
        dependencies=[bearer],
    )
    app.state.service = service
    app.add_middleware(Gate, token=token or config.api_token(), max_bytes=MAX_REQUEST_BYTES)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or CODES.get(exc.status_code, "error")
        extra = getattr(exc, "extra", {})
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None), **extra)

    @app.exception_handler(inference.BadInput)
    async def bad_input(request: Request, exc: inference.BadInput) -> JSONResponse:
        extra = {"files": exc.files} if exc.files else {}
        return error_response(INPUT_STATUS.get(exc.code, 422), exc.code, exc.detail, **extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", readable(exc.errors()))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:  # nobody to answer
        log.info("%s %s: the client went away before its request arrived", request.method, request.url.path)
        return error_response(400, "client_disconnected", "the client went away")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:  # logged by the server
        return error_response(500, "internal_error", "the service failed on this request; see its log")

    @app.get("/health", summary="200 once the model is loaded and warmed up, 503 before")
    async def health(request: Request) -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "ready", "model": service.info()})
        status = "failed" if service.error else "loading"
        return JSONResponse({"status": status, "detail": service.error, "model": service.info()}, 503)

    @app.get("/model", summary="the model card")
    async def model_card() -> dict[str, Any]:
        familiar = service.ready and service.loaded.familiarity is not None
        return {
            **service.card,
            "served_as": service.name,
            "not_sure_rule": "confidence, photo conversion and familiarity"
            if familiar
            else "confidence and photo conversion (no familiarity statistics kept with the model, and no "
            "Fashion-MNIST here to make them from)",
        }

    @app.post("/predict", response_model=Prediction, summary="classify uploaded photos")
    async def predict(
        request: Request,
        files: Annotated[list[UploadFile], File(description="JPEG, PNG, WebP or BMP images")],
        top_k: TopK = DEFAULT_TOP_K,
        cam: Explain = False,
        model: ModelName = None,
    ) -> dict[str, Any]:
        served = ready_service(request)
        check_model(served, model)
        if len(files) > photos.MAX_UPLOAD_FILES:
            raise ApiError(413, "too_many_files", f"{len(files)} files; at most {photos.MAX_UPLOAD_FILES}")
        payloads = []
        for index, upload in enumerate(files):
            data = await upload.read()
            if len(data) > photos.MAX_FILE_BYTES:
                size, limit = len(data) / 2**20, photos.MAX_FILE_BYTES // 2**20
                detail = f"file {index + 1} ({upload.filename}) is {size:.1f} MB; the limit is {limit} MB"
                raise ApiError(413, "file_too_large", detail)
            payloads.append((upload.filename, data))
        images, hows, conversions = await anyio.to_thread.run_sync(
            inference.model_inputs, payloads, limiter=served.conversions
        )
        names = [name for name, _ in payloads]
        return await predict_images(served, images, names, hows, top_k, cam, conversions)

    @app.post(
        "/predict/pixels",
        response_model=Prediction,
        summary="classify 28×28 raw-pixel images (JSON)",
        openapi_extra={"requestBody": PIXELS_BODY},
    )
    async def predict_pixels(
        request: Request, top_k: TopK = DEFAULT_TOP_K, cam: Explain = False, model: ModelName = None
    ) -> dict[str, Any]:
        served = ready_service(request)
        check_model(served, model)
        images = await run_in_threadpool(inference.parse_pixels, await request.body())
        hows = ["raw pixels"] * len(images)
        return await predict_images(served, images, [None] * len(images), hows, top_k, cam)

    return app


def run(
    model: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    batch_window_ms: float = inference.BATCH_WINDOW_MS,
    access_log: bool = True,
) -> None:
    """Serve ``model`` with uvicorn until interrupted. Raises FileNotFoundError or ValueError before
    listening when the model is not there or not finished."""
    import uvicorn

    app = create_app(model, batch_window_ms=batch_window_ms)
    if host not in ("127.0.0.1", "localhost", "::1") and not config.api_token():
        log.warning("listening on %s without FASHION_API_TOKEN: anyone who reaches it can use it", host)
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
