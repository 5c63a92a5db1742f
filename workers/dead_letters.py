"""Dead letters: list, replay or purge the entries the drain gave up on.

The drain moves an entry whose write failed DEAD_LETTER_AFTER times to the stream
``telemetry:dead`` (fields id, k, r, error, failures, failed_at) and acknowledges it on the main
stream, so one bad entry never blocks the others. From the shell::

    python -m workers.dead_letters list [--limit N] [--json]
    python -m workers.dead_letters replay (--all | DEAD_ID ...)   # back onto the main stream
    python -m workers.dead_letters purge (--all | DEAD_ID ...)    # delete for good

Replay appends the original record to the main stream as a new entry and deletes the dead letter
in the same MULTI/EXEC transaction: a reading is never in both places, nor in neither.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import TextIO

import redis

from common.redis_clients import data_client
from common.settings import Settings
from common.streams import DEAD_LETTER_STREAM_KEY, KINDS, STREAM_KEY, parse_copy_row

_PAGE = 500


def iter_dead_letters(client: redis.Redis, key: str = DEAD_LETTER_STREAM_KEY) -> Iterator[tuple[str, dict]]:
    """Yield every dead letter (its id in the dead-letter stream, its fields), oldest first."""
    start = "-"
    while True:
        page = client.xrange(key, min=start, max="+", count=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        start = "(" + page[-1][0]


def describe(dead_id: str, fields: dict) -> dict:
    """Return a dead letter as a plain dict, with the reading decoded when the record is well formed."""
    out = {
        "deadId": dead_id,
        "entryId": fields.get("id"),
        "kind": fields.get("k"),
        "failures": int(fields["failures"]) if str(fields.get("failures", "")).isdigit() else fields.get("failures"),
        "failedAt": fields.get("failed_at"),
        "error": fields.get("error"),
        "record": fields.get("r"),
    }
    if fields.get("k") in KINDS and fields.get("r"):
        try:
            out["reading"] = parse_copy_row(fields["k"], fields["r"])
        except (ValueError, KeyError):
            out["reading"] = None
    return out


def replay(client: redis.Redis, dead_ids: list[str] | None, stream_key: str = STREAM_KEY,
           dead_key: str = DEAD_LETTER_STREAM_KEY) -> dict:
    """Move dead letters (all when ``dead_ids`` is None) back onto the main stream; return what happened."""
    wanted = None if dead_ids is None else set(dead_ids)
    replayed, skipped = [], []
    for dead_id, fields in list(iter_dead_letters(client, dead_key)):
        if wanted is not None and dead_id not in wanted:
            continue
        if fields.get("k") not in KINDS or not fields.get("r"):
            skipped.append(dead_id)  # a malformed record would only come back: purge it instead
            continue
        pipe = client.pipeline(transaction=True)
        pipe.xadd(stream_key, {"k": fields["k"], "r": fields["r"]})
        pipe.xdel(dead_key, dead_id)
        new_id, _deleted = pipe.execute()
        replayed.append({"deadId": dead_id, "newEntryId": new_id})
    missing = sorted(wanted - {r["deadId"] for r in replayed} - set(skipped)) if wanted is not None else []
    return {"replayed": replayed, "skipped_malformed": skipped, "not_found": missing}


def purge(client: redis.Redis, dead_ids: list[str] | None, dead_key: str = DEAD_LETTER_STREAM_KEY) -> int:
    """Delete dead letters for good (all when ``dead_ids`` is None); return how many were deleted."""
    if dead_ids is None:
        dead_ids = [dead_id for dead_id, _ in iter_dead_letters(client, dead_key)]
    deleted = 0
    for start in range(0, len(dead_ids), _PAGE):
        deleted += int(client.xdel(dead_key, *dead_ids[start:start + _PAGE]))
    return deleted


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers.dead_letters", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="show the dead letters, oldest first")
    listing.add_argument("--limit", type=int, default=100, help="show at most this many (default 100, 0: all)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    for name, text in (("replay", "append them to the main stream again and delete them here"),
                       ("purge", "delete them for good")):
        command = commands.add_parser(name, help=text)
        which = command.add_mutually_exclusive_group(required=True)
        which.add_argument("--all", action="store_true", help="every dead letter")
        which.add_argument("ids", nargs="*", default=[], metavar="DEAD_ID", help="ids in the dead-letter stream")
    return parser


def main(argv: list[str] | None = None, client: redis.Redis | None = None, out: TextIO = sys.stdout) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    client = client or data_client(Settings.from_env())
    if args.command == "list":
        total = client.xlen(DEAD_LETTER_STREAM_KEY)
        shown = 0
        for dead_id, fields in iter_dead_letters(client):
            if args.limit and shown >= args.limit:
                break
            item = describe(dead_id, fields)
            if args.json:
                out.write(json.dumps(item) + "\n")
            else:
                out.write(f"{item['deadId']}  entry {item['entryId']}  kind {item['kind']}  "
                          f"failures {item['failures']}  at {item['failedAt']}\n"
                          f"    reading: {json.dumps(item.get('reading', item['record']))}\n"
                          f"    error:   {item['error']}\n")
            shown += 1
        if not args.json:
            out.write(f"{total} dead letter(s) in {DEAD_LETTER_STREAM_KEY}; {shown} shown.\n")
        return 0
    if not args.all and not args.ids:
        _parser().error(f"{args.command}: give --all or at least one DEAD_ID")
    ids = None if args.all else list(args.ids)
    if args.command == "replay":
        result = replay(client, ids)
        out.write(json.dumps(result) + "\n")
        return 1 if result["not_found"] else 0
    deleted = purge(client, ids)
    out.write(json.dumps({"purged": deleted}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
