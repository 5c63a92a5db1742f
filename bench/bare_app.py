"""The bare Flask floor: parse the same JSON body as POST /v1/telemetry and answer 202, nothing else.

Served by gunicorn with the engine's own gunicorn.conf.py, it is the fastest any Flask ingest
endpoint on these settings can be: no validation, no Redis.
"""

from __future__ import annotations

import orjson
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/v1/telemetry")
def accept():
    """Decode the body and answer 202 with the count, as the real endpoint does."""
    body = orjson.loads(request.get_data(cache=False))
    count = len(body) if isinstance(body, list) else 1
    response = jsonify(accepted=count)
    response.status_code = 202
    return response


@app.get("/healthz")
def healthz():
    """Answer as long as the process is alive."""
    return {"status": "ok"}
