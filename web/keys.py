"""API keys: the key store in Postgres, the /v1/keys endpoints (admin only) and the ``keys`` CLI.

The token format is web/auth.py's (the check reads it); only the SHA-256 of a token is stored.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import psycopg
from flask import Blueprint, Flask, current_app, jsonify, request
from flask.cli import with_appcontext
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from common.database import connect, load_sql
from common.settings import RATE_LIMIT_PATTERN
from common.streams import API_KEYS_VERSION_KEY, format_ts
from web import db
from web.auth import hash_token, new_token, requires_scope
from web.errors import ApiError
from web.params import json_body
from web.schemas import device_id_field

bp = Blueprint("keys", __name__)

SCOPES = ("ingest", "read", "admin", "metrics")
# A device key writes and reads only its own device: it may hold no wider scope.
DEVICE_KEY_SCOPES = ("ingest", "read")
DEVICE_KINDS = ("vehicle", "meter")
MAX_KEYS_PER_REQUEST = 1000
MAX_PAGE = 1000
_COLUMNS = ("id", "name", "scopes", "device_kind", "device_id", "rate_limit", "created_at", "expires_at",
            "revoked_at", "last_used_at")


class DeviceSchema(Schema):
    """The one device a device key may write and read."""

    kind = fields.String(required=True, validate=validate.OneOf(DEVICE_KINDS))
    id = device_id_field()


class KeyRequestSchema(Schema):
    """What POST /v1/keys takes for one key."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=validate.Length(1, 200))
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)), load_default=list,
                         metadata={"description": "Any of ingest, read, admin, metrics; a device key only "
                                                  "ingest and read (its default)"})
    device = fields.Nested(DeviceSchema, load_default=None, allow_none=True)
    rateLimit = fields.String(load_default=None, allow_none=True, metadata={"example": "120/minute"},
                              validate=validate.Regexp(RATE_LIMIT_PATTERN, error="Give a rate such as 120/minute."))
    expiresAt = fields.AwareDateTime(format="iso", load_default=None, allow_none=True)

    @validates("name")
    def _printable(self, value, **_):
        # Postgres text refuses NUL, UTF-8 refuses lone surrogates; a label has no use for control characters.
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
            raise ValidationError("Must not contain control characters or unpaired surrogates.")

    @validates("expiresAt")
    def _in_the_future(self, value, **_):
        if value is not None and value <= datetime.now(UTC):
            raise ValidationError("Must lie in the future.")


class KeySchema(Schema):
    """A key as the API shows it (never its secret)."""

    id = fields.String(required=True)
    name = fields.String(required=True)
    scopes = fields.List(fields.String(), required=True)
    device = fields.Nested(DeviceSchema, allow_none=True, required=True)
    rateLimit = fields.String(allow_none=True, required=True)
    createdAt = fields.String(required=True, metadata={"format": "date-time"})
    expiresAt = fields.String(allow_none=True, required=True, metadata={"format": "date-time"})
    revokedAt = fields.String(allow_none=True, required=True, metadata={"format": "date-time"})
    lastUsedAt = fields.String(allow_none=True, required=True, metadata={"format": "date-time"})


class CreatedKeySchema(KeySchema):
    """A key just created, with its token (shown this once only)."""

    token = fields.String(required=True)


class KeyPageSchema(Schema):
    """One page of keys; ``next`` is the ``after`` of the next page (null on the last)."""

    keys = fields.List(fields.Nested(KeySchema), required=True)
    next = fields.String(allow_none=True, required=True)


class KeyPageQuerySchema(Schema):
    """The query of GET /v1/keys."""

    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_PAGE))
    # A key id is hex (web.auth.new_token); anything else (a NUL byte, which Postgres text refuses) is a 400.
    after = fields.String(load_default="", validate=validate.Regexp(r"^[0-9a-f]{0,64}$"),
                          metadata={"pattern": "^[0-9a-f]{0,64}$"})


_key_request = KeyRequestSchema()
_page_query = KeyPageQuerySchema()


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


def key_fields(row) -> dict:
    """Turn a key row (the columns of sql/keys/list.sql) into its API form."""
    r = dict(zip(_COLUMNS, row, strict=True))
    return {
        "id": r["id"], "name": r["name"], "scopes": list(r["scopes"]),
        "device": {"kind": r["device_kind"], "id": r["device_id"]} if r["device_kind"] else None,
        "rateLimit": r["rate_limit"], "createdAt": _ts(r["created_at"]), "expiresAt": _ts(r["expires_at"]),
        "revokedAt": _ts(r["revoked_at"]), "lastUsedAt": _ts(r["last_used_at"]),
    }


@dataclass(frozen=True)
class KeySpec:
    """A key to create, validated."""

    name: str
    scopes: tuple[str, ...]
    device: tuple[str, str] | None = None  # (kind name, id)
    rate_limit: str | None = None
    expires_at: datetime | None = None


def _json_messages(messages):
    """Marshmallow names a list item's errors by an int index; JSON keys are strings."""
    if isinstance(messages, dict):
        return {str(k): _json_messages(v) for k, v in messages.items()}
    return messages


def validate_spec(item) -> KeySpec:
    """Return the spec of one request item; raise ``ValidationError`` naming the bad fields."""
    if not isinstance(item, dict):
        raise ValidationError({"_item": ["A key must be a JSON object."]})
    try:
        d = _key_request.load(item)
    except ValidationError as exc:
        raise ValidationError(_json_messages(exc.messages)) from None
    device = (d["device"]["kind"], d["device"]["id"]) if d["device"] else None
    scopes = tuple(dict.fromkeys(d["scopes"]))
    if device is not None:
        scopes = scopes or DEVICE_KEY_SCOPES
        if not set(scopes) <= set(DEVICE_KEY_SCOPES):
            raise ValidationError({"scopes": ["A device key may hold only ingest and read."]})
    elif not scopes:
        raise ValidationError({"scopes": ["Give at least one scope (or a device for a device key)."]})
    return KeySpec(d["name"], scopes, device, d["rateLimit"], d["expiresAt"])


def create_keys(conn: psycopg.Connection, specs: list[KeySpec]) -> list[dict]:
    """Insert every key in one transaction (all or nothing); return each key's fields with its token."""
    created = []
    with conn.transaction():
        for spec in specs:
            key_id, token = new_token()
            row = conn.execute(load_sql("keys/insert"), {
                "id": key_id, "name": spec.name, "token_hash": hash_token(token), "scopes": list(spec.scopes),
                "device_kind": spec.device[0] if spec.device else None,
                "device_id": spec.device[1] if spec.device else None,
                "rate_limit": spec.rate_limit, "expires_at": spec.expires_at,
            }).fetchone()
            created.append({**key_fields(row), "token": token})
    return created


def revoke_key(conn: psycopg.Connection, client, key_id: str) -> bool:
    """Revoke a key and tell every web process (the version key they poll); False if no such key."""
    row = conn.execute(load_sql("keys/revoke"), {"id": key_id}).fetchone()
    if not conn.autocommit:
        conn.commit()
    if row is None:
        return False
    client.incr(API_KEYS_VERSION_KEY)
    return True


def list_keys(conn: psycopg.Connection, limit: int, after: str) -> tuple[list[dict], str | None]:
    """Return one page of keys and the cursor of the next page."""
    rows = conn.execute(load_sql("keys/list"), {"after": after, "limit": limit + 1}).fetchall()
    page = [key_fields(r) for r in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


# -- HTTP ---------------------------------------------------------------------------------------


@bp.post("/v1/keys")
@requires_scope("admin")
def post_keys():
    """Create one key (a JSON object) or up to 1,000 (an array, all or nothing); answer each with its token."""
    body = json_body()
    if isinstance(body, dict):
        try:
            specs = [validate_spec(body)]
        except ValidationError as exc:
            raise ApiError(400, "invalid_key", "The key is invalid; none was created.", fields=exc.messages) from None
    elif isinstance(body, list):
        if not body or len(body) > MAX_KEYS_PER_REQUEST:
            raise ApiError(400, "invalid_batch", f"Give 1 to {MAX_KEYS_PER_REQUEST} keys in one array.")
        specs, problems = [], []
        for index, item in enumerate(body):
            try:
                specs.append(validate_spec(item))
            except ValidationError as exc:
                problems.append({"index": index, "fields": exc.messages})
        if problems:
            raise ApiError(400, "invalid_batch",
                           f"{len(problems)} of {len(body)} keys are invalid; none was created.", items=problems)
    else:
        raise ApiError(400, "invalid_body", "The body must be a JSON object (one key) or an array of them.")
    with db.connection() as conn:
        created = create_keys(conn, specs)
    response = jsonify(created[0] if isinstance(body, dict) else created)
    response.status_code = 201
    return response


@bp.get("/v1/keys")
@requires_scope("admin")
def get_keys():
    """List keys without their secrets, a page at a time (``?limit=&after=``)."""
    try:
        query = _page_query.load(request.args)
    except ValidationError as exc:
        name, messages = next(iter(exc.messages.items()))
        raise ApiError(400, "invalid_parameter", f"{name}: {messages[0]}", parameter=name) from None
    with db.connection() as conn:
        keys, next_after = list_keys(conn, query["limit"], query["after"])
    return jsonify(keys=keys, next=next_after)


@bp.delete("/v1/keys/<key_id>")
@requires_scope("admin")
def delete_key(key_id: str):
    """Revoke a key: every web process refuses it within seconds."""
    if not re.fullmatch(r"[0-9a-f]{16}", key_id):
        raise ApiError(404, "not_found", "No such key.")
    with db.connection() as conn:
        found = revoke_key(conn, current_app.extensions["redis"], key_id)
    if not found:
        raise ApiError(404, "not_found", "No such key.")
    cache = current_app.extensions.get("key_cache")
    if cache is not None:
        cache.poll()  # this process drops the key at once, the others within a poll
    return "", 204


# -- CLI ----------------------------------------------------------------------------------------


def _parse_device(value: str | None) -> dict | None:
    if value is None:
        return None
    kind, sep, device_id = value.partition(":")
    if not sep:
        raise click.BadParameter("give KIND:ID, e.g. vehicle:ev-17")
    return {"kind": kind, "id": device_id}


def _create_one(item: dict) -> dict:
    try:
        spec = validate_spec(item)
    except ValidationError as exc:
        raise click.UsageError(json.dumps(exc.messages)) from None
    with connect(current_app.config["SETTINGS"]) as conn:
        return create_keys(conn, [spec])[0]


keys_cli = click.Group("keys", help="Create, list and revoke API keys.")


@keys_cli.command("create")
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES), help="Repeat for several.")
@click.option("--device", default=None, help="Bind the key to one device: vehicle:ID or meter:ID.")
@click.option("--rate-limit", default=None, help="e.g. 120/minute (default: the setting for its kind of key).")
@click.option("--expires-at", default=None, help="ISO 8601 time with a zone.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object, token included.")
@with_appcontext
def create_command(name, scopes, device, rate_limit, expires_at, as_json) -> None:
    """Create a key and print its token (shown this once only)."""
    created = _create_one({"name": name, "scopes": list(scopes), "device": _parse_device(device),
                           "rateLimit": rate_limit, "expiresAt": expires_at})
    if as_json:
        click.echo(json.dumps(created))
    else:
        click.echo(f"id:    {created['id']}\nscopes: {' '.join(created['scopes'])}\ntoken: {created['token']}")
        click.echo("Store the token now: it is not shown again.", err=True)


@keys_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@with_appcontext
def list_command(as_json) -> None:
    """List every key (never a secret)."""
    keys, after = [], ""
    with connect(current_app.config["SETTINGS"]) as conn:
        while after is not None:
            page, after = list_keys(conn, MAX_PAGE, after)
            keys += page
    if as_json:
        click.echo(json.dumps(keys))
        return
    for k in keys:
        device = f"{k['device']['kind']}:{k['device']['id']}" if k["device"] else "-"
        state = "revoked" if k["revokedAt"] else "active"
        click.echo(f"{k['id']}  {state:7}  {','.join(k['scopes']):20}  {device:24}  {k['name']}")


@keys_cli.command("revoke")
@click.argument("key_id")
@with_appcontext
def revoke_command(key_id) -> None:
    """Revoke a key; every web process refuses it within seconds."""
    with connect(current_app.config["SETTINGS"]) as conn:
        if not revoke_key(conn, current_app.extensions["redis"], key_id):
            raise click.ClickException(f"no key {key_id!r}")
    click.echo(f"revoked {key_id}")


@keys_cli.command("bootstrap-admin")
@click.option("--file", "path", default=".data/admin.key", show_default=True, type=click.Path(dir_okay=False))
@with_appcontext
def bootstrap_admin_command(path) -> None:
    """Create an admin key and write its token to FILE (mode 0600) if no usable admin key exists (``make run``)."""
    target = Path(path)
    with connect(current_app.config["SETTINGS"]) as conn:
        exists = conn.execute(load_sql("keys/usable_admin_exists")).fetchone()[0]
    if exists:
        where = f"in {target}" if target.exists() else "in the database (its token is wherever it was saved)"
        click.echo(f"An admin key exists {where}; create more with: flask --app web keys create --scope admin")
        return
    created = _create_one({"name": "admin (make run)", "scopes": ["admin"]})
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(created["token"] + "\n")
    os.chmod(target, 0o600)
    click.echo(f"Created admin key {created['id']}: its token is in {target} (mode 0600, git-ignored). Use it as\n"
               f'  curl -H "Authorization: Bearer $(cat {target})" http://127.0.0.1:8000/v1/keys')


def init_app(app: Flask) -> None:
    """Register /v1/keys and the ``keys`` CLI on ``app``."""
    app.register_blueprint(bp)
    app.cli.add_command(keys_cli)

