"""The OpenAPI 3 document, generated from the app's routes and marshmallow schemas, at /openapi.json and /docs."""

from __future__ import annotations

import copy
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, jsonify, send_from_directory
from marshmallow import INCLUDE, Schema, fields
from swagger_ui_bundle import swagger_ui_path

from web.analytics import PerformanceQuerySchema, PerformanceSchema
from web.auth import PUBLIC_ENDPOINTS
from web.conflicts import ConflictsQuerySchema, ConflictsSchema
from web.fleet import FleetQuerySchema, FleetSchema, RankingQuerySchema, RankingSchema
from web.history import HistoryQuerySchema, MeterHistorySchema, VehicleHistorySchema
from web.keys import MAX_KEYS_PER_REQUEST, CreatedKeySchema, KeyPageQuerySchema, KeyPageSchema, KeyRequestSchema
from web.latest import (
    MAX_IDS_PER_READ,
    MeterIdsQuerySchema,
    MeterLatestSchema,
    MetersLatestSchema,
    VehicleIdsQuerySchema,
    VehicleLatestSchema,
    VehiclePageQuerySchema,
    VehiclePageSchema,
    VehiclesLatestSchema,
)
from web.mappings import MappingRequestSchema, MappingSchema, MeterMappingsQuerySchema, MeterMappingsSchema
from web.schemas import DEVICE_ID_PATTERN, AcceptedSchema, ErrorSchema, MeterReadingSchema, VehicleReadingSchema
from web.silent_devices import SilentPageSchema, SilentQuerySchema

bp = Blueprint("openapi", __name__)

TITLE = "Energy ingestion engine"
API_VERSION = "1.0.0"
OPENAPI_VERSION = "3.0.3"
# Routes that are not part of the API.
UNDOCUMENTED_ENDPOINTS = frozenset({"static"})
# Swagger UI's files come from the pinned swagger-ui-bundle-v2 package (no CDN: /docs works offline).
SWAGGER_UI = "/docs/ui"
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class ErrorResponseSchema(ErrorSchema):
    """An error answer: a code, a sentence, and details such as the bad fields or the bad parameter."""

    class Meta:
        unknown = INCLUDE  # error bodies may carry more details; clients read error and message

    parameter = fields.String(metadata={"description": "The query or path parameter that was wrong"})


class HealthSchema(Schema):
    """The process is alive."""

    status = fields.String(required=True)


class ProbeSchema(Schema):
    """One server's answer to the readiness probe."""

    ok = fields.Boolean(required=True)
    latencyMs = fields.Float()
    error = fields.String()


class ReplicaProbeSchema(Schema):
    """The streaming replica's state at its monitor's last check (only with DATABASE_REPLICA_URL)."""

    ok = fields.Boolean(required=True, metadata={"description": "Reads go to the replica now"})
    up = fields.Boolean(required=True, metadata={"description": "The last check found it answering as a standby"})
    lagSeconds = fields.Float(allow_none=True, metadata={"description": "Replay lag behind the primary; null: unknown"})
    maxLagSeconds = fields.Float(required=True, metadata={"description": "REPLICA_MAX_LAG_SECONDS"})
    reads = fields.String(required=True, metadata={"enum": ["replica", "primary"]})
    error = fields.String()


class ProbesSchema(Schema):
    """The probe of each server."""

    redis = fields.Nested(ProbeSchema, required=True)
    postgres = fields.Nested(ProbeSchema, required=True)
    replica = fields.Nested(ReplicaProbeSchema, metadata={
        "description": "Only with DATABASE_REPLICA_URL; a replica that is down or lagging never makes the answer 503"})


class ReadinessSchema(Schema):
    """Whether Redis and Postgres both answer."""

    status = fields.String(required=True, metadata={"enum": ["ready", "unavailable"]})
    checks = fields.Nested(ProbesSchema, metadata={
        "description": "Each server's probe, for callers with the `metrics` scope only (the probe is cached ~1 s)"})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _json(schema, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(ErrorResponseSchema, description)


_DEVICE_ID_SCHEMA = {"type": "string", "pattern": DEVICE_ID_PATTERN, "minLength": 1, "maxLength": 64}
# The path parameters of the API: device ids and key ids (and Swagger UI's file names).
PATH_PARAMETER_SCHEMAS = {"vehicleId": {**_DEVICE_ID_SCHEMA, "example": "vehicle-1"},
                          "meterId": {**_DEVICE_ID_SCHEMA, "example": "meter-1"},
                          "keyId": {"type": "string", "pattern": "^[0-9a-f]{16}$", "example": "0123456789abcdef"},
                          "filename": {"type": "string", "example": "swagger-ui.css"}}

_BAD_ID = _error("The id or a parameter is invalid; `parameter` names it")
_UNAVAILABLE = _error("Redis or Postgres is unreachable; retry after the Retry-After header's seconds")
_NOT_FOUND = _error("Not found")
_READING_ONE_OF = {"oneOf": [MeterReadingSchema, VehicleReadingSchema]}
SECURITY_SCHEME = "bearerAuth"
# The answers of access control (web/auth.py, web/rate_limit.py), on every operation that needs a key.
ACCESS_RESPONSES = {
    "401": {**_error("No key, a malformed header, or an unknown, revoked or expired key"),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}},
    "403": _error("The key lacks the scope (`requiredScope`), or a device key reached another device"),
    "429": {**_error("Over the key's rate limit, or too many failed authentications from this address"),
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}},
}

_HISTORY_DESCRIPTION = (
    "The window is (from, to]. Raw: oldest first, `limit` per page, `next` is the cursor of the following page "
    "(null at the end). With `interval`: buckets (start, end], empty ones included, at most 10,000; 1d buckets are "
    "calendar days in `tz`. Bucket energy follows the counter rules (docs/history.md), so a window's buckets add up "
    "to its analytics. `Accept: text/csv` or `format=csv` streams CSV with no page limit."
)


def _history(schema) -> dict:
    return {"description": "The history page or buckets (JSON), or CSV",
            "content": {"application/json": {"schema": schema}, "text/csv": {"schema": {"type": "string"}}}}


# The operations of each endpoint (Flask endpoint name -> method -> OpenAPI operation). Schemas
# are marshmallow classes; the MarshmallowPlugin turns them into components.
_IDS_BODY = {
    "type": "object", "required": ["ids"],
    "properties": {"ids": {"type": "array", "minItems": 1, "maxItems": MAX_IDS_PER_READ,
                           "items": {"type": "string", "pattern": DEVICE_ID_PATTERN}}},
}



def _multi_read_post(noun: str, answer: type[Schema]) -> dict:
    """The POST form of a multi-read: the ids in the body, the same answer as the GET."""
    return {
        "tags": ["latest"],
        "summary": f"The newest reading of up to {MAX_IDS_PER_READ} {noun} in one read, the ids in the body",
        "description": "The same answer as the GET, for id lists too long for a URL (gunicorn caps the request line "
                       "at 8190 bytes).",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _IDS_BODY}}},
        "responses": {"200": _json(answer, "Readings in the order asked; unknown ids in `missing`"),
                      "400": _error('The body is not {"ids": [...]} or an id is not an id'),
                      "503": _UNAVAILABLE},
    }


OPERATIONS: dict[str, dict[str, dict]] = {
    "telemetry.ingest": {"post": {
        "tags": ["ingest"],
        "summary": "Accept one reading or an array of readings (meters and vehicles may be mixed)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "oneOf": [*_READING_ONE_OF["oneOf"], {"type": "array", "minItems": 1, "items": _READING_ONE_OF}],
        }}}},
        "responses": {
            "202": _json(AcceptedSchema, "Accepted: Redis holds every reading of the request"),
            "400": _error("Invalid JSON or readings; nothing was accepted. `fields` or `items` say what is wrong"),
            "413": _error("Body or batch larger than the limit"),
            "415": _error("Not application/json"),
            "503": _UNAVAILABLE,
        },
    }},
    "mappings.put_mapping": {"post": {
        "tags": ["mappings"],
        "summary": "Map a vehicle to the meter that feeds it",
        "requestBody": {"required": True, "content": {"application/json": {"schema": MappingRequestSchema}}},
        "responses": {
            "201": _json(MappingSchema, "Created: the vehicle had no mapping"),
            "200": _json(MappingSchema, "The vehicle's earlier mapping was replaced (or repeated)"),
            "400": _error("Invalid JSON or ids; `fields` names them"),
            "415": _error("Not application/json"),
            "503": _UNAVAILABLE,
        },
    }},
    "mappings.get_mapping": {"get": {
        "tags": ["mappings"],
        "summary": "A vehicle's mapping",
        "responses": {"200": _json(MappingSchema, "The mapping"), "400": _BAD_ID,
                      "404": _error("The vehicle has no mapping"), "503": _UNAVAILABLE},
    }},
    "mappings.delete_mapping": {"delete": {
        "tags": ["mappings"],
        "summary": "Remove a vehicle's mapping",
        "responses": {"204": {"description": "Removed"}, "400": _BAD_ID,
                      "404": _error("The vehicle has no mapping"), "503": _UNAVAILABLE},
    }},
    "mappings.list_meter_mappings": {"get": {
        "tags": ["mappings"],
        "summary": "The vehicles that a meter feeds",
        "parameters": [{"in": "query", "schema": MeterMappingsQuerySchema}],
        "responses": {"200": _json(MeterMappingsSchema, "The meter's mappings (an empty list if none)"),
                      "400": _BAD_ID, "503": _UNAVAILABLE},
    }},
    "analytics.performance": {"get": {
        "tags": ["analytics"],
        "summary": "AC energy drawn vs DC energy stored, efficiency and mean battery temperature over a window",
        "description": (
            "Energy from a counter is the sum of the increases between consecutive readings in time order, starting "
            "from the last reading before the window (a neighbour within 7 days). A drop that the next reading undoes "
            "is a glitch (ignored); a drop that stays is a counter reset (adds nothing); an increase above the kind's "
            "power ceiling is implausible (adds nothing). The meter is the one mapped to the vehicle now."
        ),
        "parameters": [{"in": "query", "schema": PerformanceQuerySchema}],
        "responses": {"200": _json(PerformanceSchema, "The vehicle's performance over the window"),
                      "400": _BAD_ID, "404": _error("The vehicle has no mapping to a meter"),
                      "503": _UNAVAILABLE},
    }},
    "fleet.fleet_summary": {"get": {
        "tags": ["analytics"],
        "summary": "The whole fleet's energy, efficiency and its percentiles, and counter events, from hourly rollups",
        "description": "The window is whole UTC hours (to - hours, to]; `to` defaults to the end of the current hour. "
                       "`asOf` says which readings the rollups include (docs/fleet-analytics.md).",
        "parameters": [{"in": "query", "schema": FleetQuerySchema}],
        "responses": {"200": _json(FleetSchema, "The fleet's figures"), "400": _BAD_ID, "503": _UNAVAILABLE},
    }},
    "fleet.vehicle_ranking": {"get": {
        "tags": ["analytics"],
        "summary": "Every mapped vehicle's performance over the window, sorted and paginated",
        "parameters": [{"in": "query", "schema": RankingQuerySchema}],
        "responses": {"200": _json(RankingSchema, "A page of vehicles; `next` is the following page's cursor"),
                      "400": _BAD_ID, "503": _UNAVAILABLE},
    }},
    "silent_devices.silent_devices": {"get": {
        "tags": ["latest"],
        "summary": "Devices whose newest reading is older than `for`, oldest first",
        "parameters": [{"in": "query", "schema": SilentQuerySchema}],
        "responses": {"200": _json(SilentPageSchema, "A page of silent devices"), "400": _BAD_ID,
                      "503": _UNAVAILABLE},
    }},
    "history.vehicle_readings": {"get": {
        "tags": ["history"],
        "summary": "A vehicle's history: raw readings in keyset pages, buckets (interval, tz), or CSV",
        "description": _HISTORY_DESCRIPTION,
        "parameters": [{"in": "query", "schema": HistoryQuerySchema}],
        "responses": {"200": _history(VehicleHistorySchema), "400": _BAD_ID, "503": _UNAVAILABLE},
    }},
    "history.meter_readings": {"get": {
        "tags": ["history"],
        "summary": "A meter's history: raw readings in keyset pages, buckets (interval, tz), or CSV",
        "description": _HISTORY_DESCRIPTION,
        "parameters": [{"in": "query", "schema": HistoryQuerySchema}],
        "responses": {"200": _history(MeterHistorySchema), "400": _BAD_ID, "503": _UNAVAILABLE},
    }},
    "conflicts.list_conflicts": {"get": {
        "tags": ["history"],
        "summary": "Conflicting duplicates: readings that arrived for a (device, timestamp) already stored with "
                   "other values (admin)",
        "description": "History keeps the first values; each later different value is listed once. Oldest reading "
                       "first, keyset pages (`next`).",
        "parameters": [{"in": "query", "schema": ConflictsQuerySchema}],
        "responses": {"200": _json(ConflictsSchema, "A page of conflicts"), "400": _BAD_ID, "503": _UNAVAILABLE},
    }},
    "latest.vehicle_latest": {"get": {
        "tags": ["latest"],
        "summary": "A vehicle's newest reading",
        "responses": {"200": _json(VehicleLatestSchema, "The newest reading"), "400": _BAD_ID,
                      "404": _error("No reading is known"), "503": _UNAVAILABLE},
    }},
    "latest.meter_latest": {"get": {
        "tags": ["latest"],
        "summary": "A meter's newest reading",
        "responses": {"200": _json(MeterLatestSchema, "The newest reading"), "400": _BAD_ID,
                      "404": _error("No reading is known"), "503": _UNAVAILABLE},
    }},
    "latest.vehicles_latest": {"get": {
        "tags": ["latest"],
        "summary": f"The newest reading of up to {MAX_IDS_PER_READ} vehicles in one read",
        "parameters": [{"in": "query", "schema": VehicleIdsQuerySchema}],
        "responses": {"200": _json(VehiclesLatestSchema, "Readings in the order asked; unknown ids in `missing`"),
                      "400": _BAD_ID, "503": _UNAVAILABLE},
    }, "post": _multi_read_post("vehicles", VehiclesLatestSchema)},
    "latest.vehicles_page": {"get": {
        "tags": ["latest"],
        "summary": "Every vehicle with a reading, its durable latest reading and its meter, in id order, paginated",
        "parameters": [{"in": "query", "schema": VehiclePageQuerySchema}],
        "responses": {"200": _json(VehiclePageSchema, "One page; pass `next` as `after` for the following one"),
                      "400": _BAD_ID, "503": _UNAVAILABLE},
    }},
    "latest.meters_latest": {"get": {
        "tags": ["latest"],
        "summary": f"The newest reading of up to {MAX_IDS_PER_READ} meters in one read",
        "parameters": [{"in": "query", "schema": MeterIdsQuerySchema}],
        "responses": {"200": _json(MetersLatestSchema, "Readings in the order asked; unknown ids in `missing`"),
                      "400": _BAD_ID, "503": _UNAVAILABLE},
    }, "post": _multi_read_post("meters", MetersLatestSchema)},
    "keys.post_keys": {"post": {
        "tags": ["keys"],
        "summary": f"Create an API key, or up to {MAX_KEYS_PER_REQUEST} in one array (all or nothing); admin only",
        "description": "The answer holds each key's `token`, shown this once only (docs/security.md).",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
            KeyRequestSchema,
            {"type": "array", "minItems": 1, "maxItems": MAX_KEYS_PER_REQUEST, "items": KeyRequestSchema},
        ]}}}},
        "responses": {
            "201": {"description": "Created; an array answers an array in the same order", "content": {
                "application/json": {"schema": {"oneOf": [CreatedKeySchema,
                                                          {"type": "array", "items": CreatedKeySchema}]}}}},
            "400": _error("Invalid JSON or key fields; nothing was created. `fields` or `items` say what is wrong"),
            "415": _error("Not application/json"),
            "503": _UNAVAILABLE,
        },
    }},
    "keys.get_keys": {"get": {
        "tags": ["keys"],
        "summary": "List API keys without their secrets, one page at a time; admin only",
        "parameters": [{"in": "query", "schema": KeyPageQuerySchema}],
        "responses": {"200": _json(KeyPageSchema, "One page; `next` is the `after` of the next page"),
                      "400": _BAD_ID, "503": _UNAVAILABLE},
    }},
    "keys.delete_key": {"delete": {
        "tags": ["keys"],
        "summary": "Revoke an API key: every web process refuses it within 5 seconds; admin only",
        "responses": {"204": {"description": "Revoked (or was already)"}, "404": _NOT_FOUND,
                      "503": _UNAVAILABLE},
    }},
    "ops.healthz": {"get": {
        "tags": ["operations"],
        "summary": "Liveness: the process answers (touches no server)",
        "responses": {"200": _json(HealthSchema, "Alive")},
    }},
    "ops.readyz": {"get": {
        "tags": ["operations"],
        "summary": "Readiness: Redis and Postgres both answer",
        "responses": {"200": _json(ReadinessSchema, "Ready"),
                      "503": _json(ReadinessSchema,
                                   "A server does not answer; `checks` (the `metrics` scope) says which and why")},
    }},
    "ops.metrics_endpoint": {"get": {
        "tags": ["operations"],
        "summary": "Metrics in the Prometheus text format, deployment-wide",
        "responses": {"200": {"description": "Prometheus text exposition format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }},
    "openapi.openapi_json": {"get": {
        "tags": ["documentation"],
        "summary": "This OpenAPI document",
        "responses": {"200": {"description": "OpenAPI 3 document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }},
    "openapi.swagger_ui_asset": {"get": {
        "tags": ["documentation"],
        "summary": "One of Swagger UI's files (from the pinned swagger-ui-bundle-v2 package)",
        "responses": {"200": {"description": "The file", "content": {"*/*": {"schema": {"type": "string"}}}},
                      "404": _NOT_FOUND},
    }},
    "dashboard.index": {"get": {
        "tags": ["documentation"],
        "summary": "The fleet dashboard (sign in with a key that has the read scope; docs/dashboard.md)",
        "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }},
    "openapi.docs": {"get": {
        "tags": ["documentation"],
        "summary": "Interactive documentation (Swagger UI)",
        "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }},
}


def openapi_path(rule: str) -> str:
    """Turn a Flask rule (``/v1/vehicles/<vehicle_id>/latest``) into an OpenAPI path (``{vehicleId}``)."""
    return _RULE_ARGUMENT.sub(lambda m: "{" + _camel(m.group(1)) + "}", rule)


def _undocumented_operation(view) -> dict:
    summary = ((view.__doc__ or "").strip().splitlines() or ["Undocumented"])[0]
    return {"summary": summary, "responses": {"default": {"description": "Not described in web/openapi.py yet"}}}


def build_spec(app: Flask) -> dict:
    """Return the OpenAPI document of every route of ``app`` (undocumented ones get a bare operation)."""
    spec = APISpec(
        title=TITLE,
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": "Telemetry ingestion for EV fleets: grid meters and vehicles, one reading a minute."},
    )
    spec.components.schema("Error", schema=ErrorResponseSchema)
    spec.components.security_scheme(SECURITY_SCHEME, {
        "type": "http", "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer eik_...` (docs/security.md)",
    })
    paths: dict[str, dict] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED_ENDPOINTS:
            continue
        path = openapi_path(rule.rule)
        documented = OPERATIONS.get(rule.endpoint, {})
        operations = paths.setdefault(path, {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            method = method.lower()
            operation = copy.deepcopy(documented.get(method)) or _undocumented_operation(
                app.view_functions[rule.endpoint])
            operation.setdefault("operationId", f"{rule.endpoint}.{method}")
            if rule.endpoint in PUBLIC_ENDPOINTS:
                operation["security"] = []
            else:
                for status, response in ACCESS_RESPONSES.items():
                    operation["responses"].setdefault(status, copy.deepcopy(response))
            operations[method] = operation
    for path in sorted(paths):
        parameters = [
            {"name": name, "in": "path", "required": True,
             "schema": PATH_PARAMETER_SCHEMAS.get(name, {"type": "string"})}
            for name in re.findall(r"{([^}]+)}", path)
        ]
        spec.path(path=path, operations=paths[path], parameters=parameters or None)
    document = spec.to_dict()
    document["security"] = [{SECURITY_SCHEME: []}]  # every operation needs a key unless it says otherwise
    return document


def init_app(app: Flask) -> None:
    """Register /openapi.json and /docs on ``app``."""
    app.register_blueprint(bp)


@bp.get("/openapi.json")
def openapi_json():
    """Return the OpenAPI document (built once per process)."""
    spec = current_app.extensions.get("openapi")
    if spec is None:
        spec = current_app.extensions["openapi"] = build_spec(current_app)
    return jsonify(spec)


_DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}: API documentation</title>
  <link rel="stylesheet" href="{ui}/swagger-ui.css">
</head>
<body>
  <noscript>This page runs Swagger UI; the raw document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
  <p id="fallback">Loading Swagger UI&hellip;
    The raw OpenAPI document is at <a href="/openapi.json">/openapi.json</a>.</p>
  <div id="swagger-ui"></div>
  <script src="{ui}/swagger-ui-bundle.js"></script>
  <script>
    if (window.SwaggerUIBundle) {{
      document.getElementById("fallback").remove();
      window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui"}});
    }}
  </script>
</body>
</html>
"""


@bp.get("/docs/ui/<path:filename>")
def swagger_ui_asset(filename: str):
    """Return one of Swagger UI's files from the pinned package."""
    return send_from_directory(str(swagger_ui_path), filename, max_age=86400)


@bp.get("/docs")
def docs():
    """Return the interactive documentation page."""
    return _DOCS_HTML.format(title=TITLE, ui=SWAGGER_UI), 200, {"Content-Type": "text/html; charset=utf-8"}
