"""The review page and its JSON API (`labeljury review RUN_DIR`): people answer the rows a run waits
for, one row at a time, keyboard first.

Safe by default: it listens on 127.0.0.1; every page and API call needs the run's random access token
(`?token=` or `Authorization: Bearer`): 401 without one, 403 with a wrong one; the Host header must be
the server's own (no DNS rebinding); a state-changing request must be JSON from the page's own origin
(a form or a script on another site cannot forge one); texts, labels and reasons are untrusted and
are rendered as text only (autoescaped templates, `textContent` in the page's script), under a strict
Content-Security-Policy.

API (the page uses nothing else):
    GET  /api/next                  a row to review ({id, text, suggestion, labels, multi_label, ...}); 204: none left
    POST /api/answer {id, label}    200; 409 when the row was answered already; 400 for a label not in the task
    POST /api/answer {id, labels}   the same for a multi-label task: `labels` a JSON list of its names (a set:
                                    each once; [] only where the task allows empty sets); `suggestion` is a list
    POST /api/skip   {id}           hand the row back
    POST /api/undo   {id}           take back your own answer (while no run has used it)
    POST /api/release {}            hand back the rows you hold (the page sends it when it is closed)
    GET  /api/progress              {answered, left, per_minute, eta_seconds}
A reviewer is told apart by the `X-Reviewer` header (the page sends a random one per tab), so each
open page gets different rows (a lease that expires) and no row is answered twice.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request  # this module is the review page: imported to serve it
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictInt

from ..errors import ReviewError
from ..labels import LabelMatcher
from ..labelsets import DEFAULT_SEPARATOR, LabelSetError, LabelSets
from ..store import RunStore
from .page import render_page
from .queue import HumanQueue

RATE_WINDOW = 600.0  # seconds of answers the rate is measured on


class RowBody(BaseModel):
    """The body of /api/answer, /api/skip and /api/undo (untrusted JSON: validated)."""

    model_config = ConfigDict(extra="ignore")
    id: StrictInt
    label: Any = None
    labels: Any = None  # a multi-label task's answer: a list of names


MAX_ID = 2**63 - 1


def create_app(run_dir: str | Path, token: str, *, allowed_hosts: set[str] | None = None) -> Any:

    run_dir = Path(run_dir)
    with RunStore.existing(run_dir) as store:
        task = store.get_meta("task") or {}
    labels = list(task.get("labels") or [])
    descriptions = dict(task.get("labels") or {})
    matcher = LabelMatcher(labels)
    # a multi-label task's answers are sets, stored as the task writes them (its separator)
    sets = (LabelSets(labels, str(task.get("label_separator") or DEFAULT_SEPARATOR), bool(task.get("allow_empty")))
            if task.get("multi_label") else None)
    queue = HumanQueue(run_dir)
    app = FastAPI(title="labeljury review", docs_url=None, redoc_url=None, openapi_url=None)

    def authorize(request: Request) -> None:
        host = (request.headers.get("host") or "").lower()
        if allowed_hosts is not None and host not in allowed_hosts:
            raise HTTPException(403, "unknown host")
        given = request.query_params.get("token")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            raise HTTPException(401, "this page needs its access token: open the URL `labeljury review` printed")
        if not secrets.compare_digest(given, token):
            raise HTTPException(403, "wrong access token")

    def same_origin(request: Request) -> None:
        """A state change must come from this page: JSON, and from our own origin."""
        if "application/json" not in request.headers.get("content-type", ""):
            raise HTTPException(415, "send JSON")
        if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
            raise HTTPException(403, "cross-site request refused")
        origin = request.headers.get("origin")
        if origin is not None and origin.split("//", 1)[-1].lower() != (request.headers.get("host") or "").lower():
            raise HTTPException(403, "cross-origin request refused")

    def reviewer(request: Request) -> str:
        return (request.headers.get("x-reviewer") or "api")[:64]

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"  # the URL carries the token
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.exception_handler(HTTPException)
    async def errors(request: Request, exc: HTTPException) -> Any:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> Any:
        authorize(request)
        nonce = secrets.token_urlsafe(16)
        html = render_page(task_name=str(task.get("name") or ""), labels=labels, descriptions=descriptions,
                           instructions=str(task.get("instructions") or ""), nonce=nonce,
                           multi_label=sets is not None, allow_empty=sets is not None and sets.allow_empty)
        return HTMLResponse(html, headers={"Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
            "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")})

    @app.get("/favicon.ico")
    def favicon() -> Any:
        return Response(status_code=204)

    @app.get("/api/next")
    def next_row(request: Request) -> Any:
        authorize(request)
        row = queue.lease(reviewer(request))
        if row is None:
            return Response(status_code=204)
        shown = row.to_dict(labels)
        shown["multi_label"] = sets is not None
        if sets is not None:  # the vote's and the LLM's sets (stored as text) as lists of names
            shown["suggestion"] = as_list(shown["suggestion"])
            if shown["llm"] is not None:
                shown["llm"]["label"] = as_list(shown["llm"]["label"])
        return shown

    def as_list(value: str | None) -> list[str] | None:
        assert sets is not None
        try:
            found = sets.parse(value)
        except LabelSetError:  # not a set of this task's labels: shown as no suggestion
            return None
        return None if found is None else list(found)

    def answer_set(data: dict[str, Any]) -> str:
        """A multi-label answer's `labels`, checked, as the run stores a set."""
        assert sets is not None
        given = data.get("labels")
        if given is None:
            raise HTTPException(400, 'this task is multi-label: send {"id": ..., "labels": [...]}, the names of the '
                                     "row's labels")
        if not isinstance(given, list) or not all(isinstance(v, str) for v in given):
            raise HTTPException(400, "`labels` must be a JSON list of label names (strings)")
        try:
            found = sets.parse(given)
        except LabelSetError as e:
            raise HTTPException(400, str(e)) from None
        assert found is not None
        return sets.text(found)

    async def body(request: Request) -> dict[str, Any]:
        """The request's JSON (untrusted: validated), with an `id` that can be a row of a run."""
        try:
            data = RowBody.model_validate(await request.json()).model_dump()
        except ValueError:  # not JSON, or not {"id": <integer>, ...}
            raise HTTPException(400, "give a JSON object with the row's integer `id`") from None
        if not 0 <= data["id"] <= MAX_ID:  # SQLite's integers: no row has such an id
            raise HTTPException(404, f"row {data['id']} is not waiting for review in this run")
        return data

    @app.post("/api/answer")
    async def answer(request: Request) -> Any:
        authorize(request)
        same_origin(request)
        data = await body(request)
        if sets is not None:
            label = answer_set(data)
        elif data.get("label") is None and data.get("labels") is not None:
            raise HTTPException(400, 'this task is single-label: send {"id": ..., "label": "<one label>"}')
        else:
            label = matcher.match(data.get("label"))
            if label is None:
                raise HTTPException(400, f"label {data.get('label')!r} is not one of {labels}")
        if queue.get(data["id"]) is None:
            raise HTTPException(404, f"row {data['id']} is not waiting for review in this run")
        if not queue.answer(data["id"], label, reviewer(request)):
            raise HTTPException(409, f"row {data['id']} was answered already")
        if sets is not None:
            return {"ok": True, "id": data["id"], "labels": list(sets.parse(label) or ())}
        return {"ok": True, "id": data["id"], "label": label}

    @app.post("/api/skip")
    async def skip(request: Request) -> Any:
        authorize(request)
        same_origin(request)
        row_id = (await body(request))["id"]
        if queue.get(row_id) is None:
            raise HTTPException(404, f"row {row_id} is not waiting for review in this run")
        queue.skip(row_id, reviewer(request))
        return {"ok": True}

    @app.post("/api/undo")
    async def undo(request: Request) -> Any:
        authorize(request)
        same_origin(request)
        row_id = (await body(request))["id"]
        if not queue.undo(row_id, reviewer(request)):
            raise HTTPException(409, f"the answer to row {row_id} cannot be taken back (not yours, or a run used it)")
        return {"ok": True, "id": row_id}

    @app.post("/api/release")
    async def release(request: Request) -> Any:
        authorize(request)
        same_origin(request)
        return {"ok": True, "released": queue.release(reviewer(request))}

    @app.get("/api/progress")
    def progress(request: Request) -> Any:
        authorize(request)
        p = queue.progress()
        since = time.time() - RATE_WINDOW
        times = queue.answer_times(since)
        span = (times[-1] - times[0]) if len(times) > 1 else 0.0
        per_minute = (len(times) - 1) / span * 60 if span > 0 else None
        eta = p["left"] / per_minute * 60 if per_minute else None
        return {**p, "per_minute": per_minute, "eta_seconds": eta}

    app.state.queue = queue
    return app


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
          on_ready: Any = None) -> None:
    """Serve the review page until interrupted; `on_ready(url)` is called with the page's URL."""
    import socket

    import uvicorn

    if not (Path(run_dir) / "run.db").exists():
        raise ReviewError(f"{str(run_dir)!r} is not a run directory (no run.db); pass the --run-dir of a run")
    token = token or secrets.token_urlsafe(24)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        raise ReviewError(f"cannot listen on {host}:{port} ({err.strerror}); choose another --port") from None
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them: the URL works at once
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    names = {f"{shown}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"}
    app = create_app(run_dir, token, allowed_hosts=None if host in ("0.0.0.0", "::") else names)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(f"http://{shown if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}/?token={token}")
    try:
        server.run(sockets=[sock])
    finally:
        app.state.queue.close()
