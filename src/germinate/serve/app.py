"""The HTTP API (FastAPI): POST /predict, GET /health, /ready, /model, and the upload page at /.
Every bad request gets a 4xx and a one-line JSON reason; the model runs off the event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import torch

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from germinate._version import __version__
from germinate.data.images import UnreadableImage
from germinate.serve.batching import MicroBatcher
from germinate.serve.page import PAGE
from germinate.serve.predictor import Limits, Predictor, rank

FIELDS = ("files", "file")


class BadRequest(Exception):
    """A client error: its status and one-line reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def create_app(predictor: Predictor, limits: Limits = Limits(), max_batch: int = 32, max_wait: float = 0.005) -> FastAPI:
    """The ASGI app serving `predictor`."""
    batcher = MicroBatcher(predictor.probabilities, max_batch, max_wait)
    state = {"ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        blank = predictor.resize(torch.zeros(3, 8, 8, dtype=torch.uint8))
        await batcher.submit([blank])  # warm-up: the first request is not the slow one
        state["ready"] = True
        yield
        state["ready"] = False
        await batcher.stop()

    app = FastAPI(title="germinate", version=__version__, lifespan=lifespan,
                  description=f"{predictor.info.arch} classifier of {len(predictor.info.classes)} classes")

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "query")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE

    @app.get("/health")
    async def health() -> dict:
        """Alive; with what the batcher has done."""
        s = batcher.stats
        return {"status": "ok", "images": s.images, "batches": s.batches, "largest_batch": s.largest}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """200 once the model is loaded and warmed up, 503 before."""
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.get("/model")
    async def model() -> dict:
        """Classes, architecture, sizes, flip policy, version, checksums, validation micro-F1."""
        return predictor.describe()

    @app.post("/predict")
    async def predict(request: Request, top_k: int = 3) -> dict:
        """Classify images sent as multipart field `files` (or `file`), or as a raw image body."""
        n_classes = len(predictor.info.classes)
        if not 1 <= top_k <= n_classes:
            raise BadRequest(400, f"top_k must be between 1 and {n_classes}, got {top_k}")
        uploads = await _read_uploads(request, limits)
        images = []
        for name, data in uploads:
            try:
                images.append(await run_in_threadpool(predictor.decode, data, limits.max_pixels))
            except UnreadableImage as e:
                status = 413 if "too large" in str(e) else 400
                raise BadRequest(status, f"{name}: not a usable image ({e})") from None
        probs = await batcher.submit(images)
        return {"predictions": [{"file": name, **rank(p, predictor.info.classes, top_k, predictor.ambiguous_below)}
                                for (name, _), p in zip(uploads, probs)]}

    return app


async def _read_uploads(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in the request, every limit checked."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limits.max_files * (limits.max_bytes + 4096):
        raise BadRequest(413, f"request too large: {int(length)} bytes")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        return await _multipart(request, limits)
    if ctype.startswith("image/") or ctype.startswith("application/octet-stream"):
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limits.max_bytes:
                raise BadRequest(413, f"image too large: more than {limits.max_bytes} bytes")
        if not data:
            raise BadRequest(400, "empty upload: the request body holds no bytes")
        return [(request.query_params.get("filename", "image"), bytes(data))]
    raise BadRequest(415, "send images as multipart/form-data (field 'files') or as a raw body with Content-Type image/*")


async def _multipart(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    try:
        form = await request.form(max_files=limits.max_files, max_fields=limits.max_files)
    except Exception as e:  # python-multipart's and Starlette's parse errors
        message = str(getattr(e, "detail", None) or e or type(e).__name__).splitlines()[0]
        if "too many files" in message.lower():
            raise BadRequest(413, f"too many files (at most {limits.max_files} per request)") from None
        status = 413 if "exceeded" in message.lower() or "too large" in message.lower() else 400
        raise BadRequest(status, f"bad multipart body: {message}") from None
    out = []
    for field, value in form.multi_items():
        if field not in FIELDS:
            raise BadRequest(400, f"unexpected field {field!r}: send images in the field 'files'")
        if not isinstance(value, UploadFile):
            raise BadRequest(400, f"field {field!r} holds text, not a file")
        data = await value.read(limits.max_bytes + 1)
        name = value.filename or "image"
        if len(data) > limits.max_bytes:
            raise BadRequest(413, f"{name}: too large (more than {limits.max_bytes} bytes)")
        if not data:
            raise BadRequest(400, f"{name}: empty upload")
        out.append((name, data))
    if not out:
        raise BadRequest(400, "no image in the request: send them in the multipart field 'files'")
    if len(out) > limits.max_files:
        raise BadRequest(413, f"too many files: {len(out)} (at most {limits.max_files} per request)")
    return out
