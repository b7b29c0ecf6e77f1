"""The playground's HTTP side: one page, its assets, and a small JSON API over a SessionStore.

Every asset is served from the package (plotly.js's cartesian bundle vendored in static/): the page
works offline. Request bodies are bounded before they are read, POSTs must be JSON
(so another site's page cannot post to it without a CORS preflight, which is never
granted), the Host header must name this machine, and a refused request gets a 4xx
with ``{"error": "..."}`` and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..errors import GradfitError
from ..library import LIBRARY
from . import views
from .sessions import SessionStore
from .views import record_json
from .setup import METHODS, Limits, PlaygroundError, Setup, checked_pair, make_data

log = logging.getLogger("gradfit.web")

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]
BODY_TIMEOUT_S = 10.0  # the most a request body may take to arrive
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # the page's own script and plotly.js; plotly sets inline styles and draws into blob-free SVG
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'",
}
_ASSETS = {  # the only files the server sends: a request names one of these, never a path
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}


def _static(name: str) -> bytes:
    return resources.files("gradfit.web").joinpath("static", name).read_bytes()


def create_app(limits: Limits | None = None, *, allowed_hosts=None) -> Starlette:
    """The playground as an ASGI app; ``allowed_hosts``: Host headers accepted (default: this machine's names)."""
    store = SessionStore(limits)
    limits = store.limits
    cache: dict = {}  # assets' bytes and the options, made once

    def asset(name: str) -> bytes:
        if name not in cache:
            # plotly.js's cartesian bundle (scatter and contour: all the page draws; 1.5 MB, not the full 4.8 MB)
            cache[name] = _static("plotly-cartesian.min.js" if name == "plotly.min.js" else name)
        return cache[name]

    async def page(request: Request) -> Response:
        return HTMLResponse(asset("index.html"), headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            media = "text/javascript; charset=utf-8"
        elif name in _ASSETS:
            media = _ASSETS[name]
        else:
            raise PlaygroundError(404, f"No asset {name!r}.")
        return Response(
            asset(name), media_type=media, headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"}
        )

    async def favicon(request: Request) -> Response:
        return Response(
            _static("favicon.svg"),
            media_type="image/svg+xml",
            headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"},
        )

    def describe() -> dict:
        models = [
            {"name": name, "description": entry.description, "formula": model.formula}
            for name, entry in LIBRARY.items()
            if name != "polyN"
            for model in [entry.make()]
            if getattr(model, "variables", ("x",)) in (("x",), None)
        ]
        return {
            "methods": list(METHODS),
            "models": models,
            "defaults": Setup().__dict__,
            "limits": {
                k: getattr(limits, k)
                for k in (
                    "max_steps_per_request",
                    "max_steps_per_session",
                    "max_upload_bytes",
                    "max_points",
                    "max_expression",
                    "min_learning_rate",
                    "max_learning_rate",
                    "max_sessions",
                )
            },
        }

    async def options(request: Request) -> Response:
        if "options" not in cache:
            cache["options"] = describe()
        return _json(cache["options"])

    async def create(request: Request) -> Response:
        body = await _body(request, limits.max_body_bytes, {"setup", "csv", "filename", "pair"})
        setup = Setup.parse(body.get("setup"), limits)
        pair = checked_pair(body.get("pair"))

        def work():
            x, y = make_data(setup, body.get("csv"), body.get("filename"), limits)
            session = store.create(setup, x, y, client=request.client.host if request.client else "")
            try:
                session.check_pair(pair)
            except PlaygroundError:
                store.delete(session.id)  # refused: no session is left behind
                raise
            with session.lock:
                return views.state(session, pair)

        return _json(await run_in_threadpool(work), status=201)

    async def show(request: Request) -> Response:
        session = store.get(request.path_params["id"])
        pair = request.query_params.get("pair")
        pair = checked_pair(pair.split(",")) if pair else None

        def work():
            with session.lock:
                return views.state(session, pair)

        return _json(await run_in_threadpool(work))

    async def step(request: Request) -> Response:
        body = await _body(request, 4096, {"steps", "learning_rate", "landscape", "pair"})
        session = store.get(request.path_params["id"])
        count = body.get("steps", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= limits.max_steps_per_request:
            raise PlaygroundError(
                400, f"`steps` must be a whole number from 1 to {limits.max_steps_per_request}, got {count!r}."
            )
        rate = body.get("learning_rate")
        if rate is not None:
            rate = Setup.parse({"learning_rate": rate}, limits).learning_rate
        pair = checked_pair(body.get("pair"))
        want_landscape = body.get("landscape", False)
        if not isinstance(want_landscape, bool):
            raise PlaygroundError(400, "`landscape` must be true or false.")

        def work():
            with session.lock:
                session.check_pair(pair)  # every check before the first step: a refused request changes nothing
                records = session.step(count, rate)
                out = {"records": [record_json(r) for r in records], **views.progress(session)}
                if want_landscape:
                    out["landscape"] = views.landscape(session, pair)
                return out

        return _json(await run_in_threadpool(work))

    async def reset(request: Request) -> Response:
        body = await _body(request, 4096, {"learning_rate", "pair"})
        session = store.get(request.path_params["id"])
        rate = body.get("learning_rate")
        setup = (
            session.setup if rate is None else Setup.parse({**session.setup.__dict__, "learning_rate": rate}, limits)
        )
        pair = checked_pair(body.get("pair"))

        def work():
            with session.lock:
                session.check_pair(pair)
                session.start(setup)
                return views.state(session, pair)

        return _json(await run_in_threadpool(work))

    async def delete(request: Request) -> Response:
        store.delete(request.path_params["id"])
        return Response(status_code=204)

    async def refused(request: Request, exc: PlaygroundError) -> Response:
        return _json({"error": str(exc)}, status=exc.status)

    async def bad_input(request: Request, exc: GradfitError) -> Response:
        return _json({"error": str(exc)}, status=400)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        messages = {404: "Not found.", 405: "Method not allowed here."}
        return _json({"error": messages.get(exc.status_code, exc.detail)}, status=exc.status_code)

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("playground request failed")
        return _json({"error": "The server failed on this request (a bug in gradfit: please report it)."}, status=500)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/favicon.ico", favicon),
            Route("/assets/{name}", static),
            Route("/api/options", options),
            Route("/api/sessions", create, methods=["POST"]),
            Route("/api/sessions/{id}", show, methods=["GET"]),
            Route("/api/sessions/{id}", delete, methods=["DELETE"]),
            Route("/api/sessions/{id}/step", step, methods=["POST"]),
            Route("/api/sessions/{id}/reset", reset, methods=["POST"]),
        ],
        middleware=[
            Middleware(_KnownHosts, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS),
            Middleware(GZipMiddleware, minimum_size=2048),
        ],
        exception_handlers={
            PlaygroundError: refused,
            GradfitError: bad_input,
            HTTPException: http_error,
            Exception: crashed,
        },
    )
    app.state.store = store
    return app


async def _body(request: Request, limit: int, allowed: set[str]) -> dict:
    """The request's JSON object, refused (413) past ``limit`` bytes before it is all read."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise PlaygroundError(415, "Send the request body as JSON (Content-Type: application/json).")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PlaygroundError(413, f"The request body is larger than this endpoint takes ({limit:,} bytes).")
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise PlaygroundError(413, f"The request body is larger than this endpoint takes ({limit:,} bytes).")

    try:  # a client that sends its body slowly, or never finishes it, does not hold the request open
        await asyncio.wait_for(read(), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise PlaygroundError(408, f"The request body did not arrive within {BODY_TIMEOUT_S:g} s.") from None
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise PlaygroundError(400, f"The request body is not valid JSON ({str(e)[:200]}).") from None
    except RecursionError:
        raise PlaygroundError(400, "The request body nests deeper than any setting needs.") from None
    if not isinstance(value, dict):
        raise PlaygroundError(400, "The request body must be a JSON object.")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise PlaygroundError(400, f"Unknown field {unknown[0]!r}. This endpoint takes: {', '.join(sorted(allowed))}.")
    return value


class _KnownHosts:
    """Refuse a request whose Host header does not name this machine, as JSON like every other error.

    A page on another site whose name resolves to 127.0.0.1 (DNS rebinding) sends its own name
    as the Host: refusing it keeps other sites from driving the playground.
    """

    def __init__(self, app, allowed_hosts):
        self.app, self.allowed = app, {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = _host_name(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
            if host not in self.allowed and "*" not in self.allowed:
                shown = host if len(host) <= 80 else host[:77] + "..."
                response = _json(
                    {
                        "error": f"Host {shown!r} does not name this machine: open the playground at "
                        f"http://127.0.0.1:PORT/ (or localhost)."
                    },
                    status=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(header: str) -> str:
    """The host of a Host header, without its port ('[::1]:8000' -> '[::1]')."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.split(":")[0]


def _json(value, status: int = 200) -> Response:
    # allow_nan=False: a NaN or inf that slipped through is a bug to see, not invalid JSON to send
    return Response(
        json.dumps(value, allow_nan=False, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )
