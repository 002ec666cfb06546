"""HTTP API and web page of a `Service` (Starlette, served by uvicorn).

  GET  /                      the search page (page.html)
  GET  /api/health            {"status": "ok"}
  GET  /api/info              N, K, model pair, modalities, label names
  GET  /api/search?id=ID[,ID2...]&k=8[&modality=s2][&query_modality=s1]
  POST /api/search/image?filename=q.npy&k=8[&modality=s2][&query_modality=s1]
                              body: the file (.npy, .tif, .zip, PNG/JPEG)
  GET  /api/thumbnail?modality=s2&id=ID   PNG (S2 true colour, S1 false
                              colour, RGB as is)

Results are JSON (`Service.search_ids`). Every error is JSON {"error": msg}:
a bad query or upload 400 with the message the CLI prints, an unknown id
or route 404, an upload over the size limit 413; anything unexpected is
logged and answered 500 without a traceback.
"""
import contextlib
import gc
import importlib.resources

from absl import logging
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse
from starlette.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import Route

MAX_UPLOAD = 32 << 20  # bytes


class _TooLarge(Exception):
  pass


def _error(status, message):
  return JSONResponse({"error": message}, status_code=status)


def _int(request, name, default):
  value = request.query_params.get(name)
  if value is None:
    return default
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}: expected an integer, got {value!r}") from None


async def _body(request, limit):
  """The request body; _TooLarge past `limit` bytes (checked while it
  streams in, so a huge upload is never held in memory)."""
  size = request.headers.get("content-length")
  if size is not None and size.isdigit() and int(size) > limit:
    raise _TooLarge()
  chunks, total = [], 0
  async for chunk in request.stream():
    total += len(chunk)
    if total > limit:
      raise _TooLarge()
    chunks.append(chunk)
  return b"".join(chunks)


def create_app(service, *, max_upload=MAX_UPLOAD, warm=True):
  """The ASGI app of `service`; warm: compile its searches at start-up
  (`Service.warm_up`) before the first request is accepted."""
  page = importlib.resources.files("rs_jax.serving").joinpath(
      "page.html").read_text(encoding="utf-8")

  async def index_page(request):
    del request
    return HTMLResponse(page)

  async def health(request):
    del request
    return JSONResponse({"status": "ok"})

  async def info(request):
    del request
    return JSONResponse({**service.info(), "max_upload": max_upload})

  async def search(request):
    ids = request.query_params.get("id")
    if not ids:
      raise ValueError("id: give one or more comma-separated ids")
    return JSONResponse(await service.search_ids(
        ids.split(","), _int(request, "k", 10),
        request.query_params.get("modality"),
        request.query_params.get("query_modality")))

  async def search_image(request):
    name = request.query_params.get("filename")
    if not name:
      raise ValueError("filename: name the uploaded file (its extension "
                       "tells the format: .npy, .tif, .zip, .png, .jpg)")
    data = await _body(request, max_upload)
    if not data:
      raise ValueError(f"{name}: the upload is empty")
    return JSONResponse(await service.search_image(
        name, data, _int(request, "k", 10),
        request.query_params.get("modality"),
        request.query_params.get("query_modality")))

  async def thumbnail(request):
    patch_id = request.query_params.get("id")
    if not patch_id:
      raise ValueError("id: name the patch")
    png = service.thumbnail_of(request.query_params.get("modality"),
                               patch_id)
    return Response(png, media_type="image/png",
                    headers={"Cache-Control": "max-age=3600"})

  async def on_value_error(request, exc):
    del request
    return _error(400, str(exc))

  async def on_key_error(request, exc):
    del request
    return _error(404, exc.args[0] if exc.args else str(exc))

  async def on_too_large(request, exc):
    del request, exc
    return _error(413, f"upload over the limit of {max_upload} bytes")

  async def on_http(request, exc):
    del request
    return _error(exc.status_code, exc.detail)

  async def on_other(request, exc):
    logging.exception("%s %s failed", request.method, request.url.path,
                      exc_info=exc)
    return _error(500, f"internal error ({type(exc).__name__}); see the "
                  "server log")

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    if warm:
      service.warm_up()
    # The objects made so far (JAX, the indexes) live as long as the server:
    # out of the collector's sight, a full collection no longer stalls every
    # request in flight for ~0.1 s.
    gc.collect()
    gc.freeze()
    service.start()
    yield
    await service.stop()
    gc.unfreeze()

  return Starlette(
      routes=[
          Route("/", index_page),
          Route("/api/health", health),
          Route("/api/info", info),
          Route("/api/search", search),
          Route("/api/search/image", search_image, methods=["POST"]),
          Route("/api/thumbnail", thumbnail),
      ],
      exception_handlers={
          ValueError: on_value_error, TypeError: on_value_error,
          KeyError: on_key_error, _TooLarge: on_too_large,
          HTTPException: on_http, Exception: on_other},
      lifespan=lifespan)
