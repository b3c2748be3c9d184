"""The labelling web app (FastAPI): stand-alone under uvicorn or as a Ray Serve ingress, same code.

Annotators send `Authorization: Bearer TOKEN` (the page keeps the token in sessionStorage).
  GET  /                 the page (static HTML + /static/label.js; no inline script)
  GET  /api/me           {annotator, progress}                      401 without a valid token
  GET  /api/next         {pair: {id, prompt, left, right} | null, progress}
  POST /api/label        {pair_id, choice: left|right|tie|skip, reason?} → {choice, progress}
Model text only travels as JSON and the page sets it with textContent; the CSP forbids inline
script, so a response holding <script> or an onerror= image is shown as text and runs nothing.
Each label is committed to sqlite before the reply, so a restart loses no acknowledged label.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from rewards.human.store import LabelStore, LabelStoreError

STATIC = Path(__file__).with_name("label_static")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class LabelIn(BaseModel):
    pair_id: str = Field(max_length=200)
    choice: str
    reason: str = Field("", max_length=500)


def create_app(db_path: str, k: int | None = None) -> FastAPI:
    """The app; the store opens lazily in the serving process (a Serve replica pickles the app)."""
    app = FastAPI(title="threefold labels", docs_url=None, redoc_url=None, openapi_url=None)
    state = {"store": None}

    def store() -> LabelStore:
        if state["store"] is None:
            state["store"] = LabelStore(db_path, k)
        return state["store"]

    def who(authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        name = store().annotator(token.strip()) if scheme == "Bearer" else None
        if name is None:
            raise HTTPException(401, "sign in with your annotator token (threefold label add-annotator NAME)")
        return name

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str):
        files = {"label.js": "text/javascript", "label.css": "text/css"}
        if name not in files:
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=files[name])

    @app.get("/api/me")
    def me(authorization: str | None = Header(None)):
        name = who(authorization)
        return {"annotator": name, "progress": store().progress(name)}

    @app.get("/api/next")
    def next_pair(authorization: str | None = Header(None)):
        name = who(authorization)
        pair = store().next_pair(name)
        shown = None if pair is None else {"id": pair["id"], "prompt": pair["prompt"],
                                           "left": pair["left_text"], "right": pair["right_text"]}
        return {"pair": shown, "progress": store().progress(name)}

    @app.post("/api/label")
    def label(body: LabelIn, authorization: str | None = Header(None)):
        name = who(authorization)
        try:
            choice = store().record(name, body.pair_id, body.choice, body.reason)
        except LabelStoreError as e:
            return JSONResponse({"detail": str(e)}, status_code=409)
        return {"choice": choice, "progress": store().progress(name)}

    return app


def serve_deployment(db_path: str, k: int | None = None):
    """The same app as a Ray Serve deployment (one replica: sqlite lives on that replica's node)."""
    from ray import serve

    app = create_app(db_path, k)

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
    @serve.ingress(app)
    class LabelApp:
        pass

    return LabelApp.bind()
