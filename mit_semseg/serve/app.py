"""The HTTP API and the page: FastAPI over one `ModelRunner` per loaded model.

POST /v1/segment takes an image (the body, or a multipart form's file) and answers JSON (the classes present with
their shares, every head's for a UPP model, and its scenes), or with ?output=label the label map as test.py writes
it, or ?output=overlay the photo with the classes coloured over it. GET /v1/models, GET /healthz, GET / (the page).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ..pictures import overlay, shares
from .images import BadRequest, decode_upload, image_bytes
from .runner import ModelRunner, QueueFull

log = logging.getLogger("mit_semseg.serve")
STATIC = resources.files("mit_semseg.serve") / "static"
OVERLAY_OPACITY = 0.5


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 20 * 2**20
    max_pixels: int = 25_000_000
    timeout_s: float = 60.0
    retry_after_s: int = 2


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes before more is read."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest(413, f"the body is {declared} bytes, above the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is above the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _hex(color) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in color)


def describe_model(runner: ModelRunner, default: bool) -> dict:
    """A loaded model: its name, task, precision and device, and each head's class names and colours."""
    segmenter = runner.segmenter
    tables = segmenter.task.prediction.class_tables(segmenter.model)
    return {
        "name": runner.name,
        "default": default,
        "task": segmenter.task.name,
        "precision": segmenter.precision,
        "device": str(segmenter.device),
        "heads": {
            head: {"classes": names, "colors": [_hex(c) for c in colors]} for head, (names, colors) in tables.items()
        },
    }


def answer_json(runner: ModelRunner, pred, size: tuple[int, int], seconds: float, with_maps: bool) -> dict:
    """The JSON answer: every head's classes present (id, name, share of the image, largest first), the scenes
    of a UPP model; with `with_maps`, each head's map as base64 of little-endian uint16 (class id + 1; 0: none)."""
    prediction = runner.segmenter.task.prediction
    heads = {}
    for head, m in prediction.class_maps(pred).items():
        present = [{"id": c, "name": m.names[c], "share": s} for c, s in shares(m.labels, len(m.names))]
        heads[head] = {"classes": present}
        if with_maps:
            raw = (np.asarray(m.labels) + 1).astype("<u2").tobytes()
            heads[head]["map"] = base64.b64encode(raw).decode("ascii")
    out = {"model": runner.name, "height": size[0], "width": size[1], "seconds": round(seconds, 4), "heads": heads}
    scenes = prediction.scenes(pred)
    if scenes:
        out["scenes"] = scenes
    return out


def _png(image: np.ndarray) -> Response:
    data = cv2.imencode(".png", image)[1]
    return Response(data.tobytes(), media_type="image/png")


async def _log_request(request: Request, call_next):
    """One log line per request: client, method, path, status, seconds."""
    started = time.perf_counter()
    response = await call_next(request)
    log.info(
        "%s %s %s %d %.3fs",
        request.client.host if request.client else "-",
        request.method,
        request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        response.status_code,
        time.perf_counter() - started,
    )
    return response


async def _bad_request(request: Request, err: BadRequest) -> JSONResponse:
    return _error(err.status, str(err))


def _busy(message: str, limits: Limits) -> JSONResponse:
    return _error(503, message, {"Retry-After": str(limits.retry_after_s)})


async def _prediction(runner: ModelRunner, request: Request, limits: Limits):
    """(image, prediction, seconds computing, images computed together) of the request's image, or the 503 response
    saying why not."""
    body = await _read_body(request, limits.max_body_bytes)
    if runner.busy():  # said before the image is decoded: a burst costs the model as little as possible
        return _busy(runner.busy_message(), limits)
    data = image_bytes(body, request.headers.get("content-type", ""))
    image = await asyncio.to_thread(decode_upload, data, limits.max_pixels)  # the event loop goes on meanwhile
    try:
        future = runner.submit(image)
    except QueueFull as err:
        return _busy(str(err), limits)
    try:
        pred, seconds, batch = await asyncio.wait_for(asyncio.wrap_future(future), limits.timeout_s)
    except TimeoutError:
        future.cancel()  # skipped if it has not started
        return _busy(f"model {runner.name} did not answer within {limits.timeout_s:g} s", limits)
    except torch.OutOfMemoryError as err:
        raise BadRequest(413, f"the image is too large for {runner.segmenter.device}'s memory: {err}") from None
    except Exception as err:  # the model failed on this image: said, logged, and the server goes on
        log.exception("model %s failed on a %d x %d image", runner.name, image.shape[1], image.shape[0])
        raise BadRequest(
            422, f"model {runner.name} could not segment this image: {type(err).__name__}: {err}"
        ) from None
    return image, pred, seconds, batch


SEGMENT_DESCRIPTION = (
    "The body is the image file (JPEG, PNG, WebP or BMP), or a multipart form with the file in a field `image`. "
    "JSON by default: the model, the image size, the time taken, each head's classes present with their shares "
    "(and `scenes` for a UPP model); `include=map` adds each head's label map (base64 of little-endian uint16, "
    "class id + 1). `output=label`: the label map as test.py writes it (PNG); `output=overlay`: the coloured "
    "prediction over the photo (PNG); `head` picks a UPP model's head for these. A full queue or a request past "
    "the time limit gets 503 with Retry-After."
)


def _add_routes(app: FastAPI, runners: dict[str, ModelRunner], default: str, limits: Limits) -> None:
    described = {name: describe_model(r, name == default) for name, r in runners.items()}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/healthz", summary="Liveness: the models loaded")
    async def healthz():
        return {"status": "ok", "models": list(runners)}

    @app.get("/v1/models", summary="The loaded models, each head's classes and colours")
    async def models():
        return list(described.values())

    png = {200: {"content": {"image/png": {}}}}

    @app.post("/v1/segment", summary="Segment an image", description=SEGMENT_DESCRIPTION, responses=png)
    async def segment(
        request: Request,
        model: str = Query(default, description=f"one of the loaded models (default {default})"),
        output: str = Query("json", pattern="^(json|label|overlay)$"),
        head: str | None = Query(None, description="for label and overlay: the head (default: the first)"),
        include: str = Query("", pattern="^(|map)$"),
    ):
        runner = runners.get(model)
        if runner is None:
            raise BadRequest(404, f"no model '{model}' is loaded; loaded: {', '.join(runners)}")
        heads = described[model]["heads"]
        if head is not None and head not in heads:
            raise BadRequest(400, f"model {model} has no head '{head}'; its heads: {', '.join(heads)}")
        done = await _prediction(runner, request, limits)
        if isinstance(done, Response):
            return done
        image, pred, seconds, batch = done
        prediction = runner.segmenter.task.prediction
        if output == "json":
            return answer_json(runner, pred, image.shape[:2], seconds, include == "map") | {"batch": batch}
        head = head or next(iter(heads))
        if output == "label":
            return _png(prediction.label_maps(pred)[head])
        painted = overlay(image, prediction.class_maps(pred)[head], OVERLAY_OPACITY)
        return _png(cv2.cvtColor(painted, cv2.COLOR_RGB2BGR))


def create_app(runners: dict[str, ModelRunner], default: str, limits: Limits = Limits()) -> FastAPI:
    """The service over the loaded models (`default` answers requests that name none)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for runner in runners.values():  # after the server stopped taking requests: finish the queued ones
            runner.close()

    app = FastAPI(
        title="mit_semseg", summary="Semantic segmentation and unified perceptual parsing over HTTP", lifespan=lifespan
    )
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.middleware("http")(_log_request)
    app.add_exception_handler(BadRequest, _bad_request)
    _add_routes(app, runners, default, limits)
    return app
