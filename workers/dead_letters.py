"""Dead letters: list, replay or purge the readings the drain gave up on.

The drain moves each reading whose write failed DEAD_LETTER_AFTER times to its shard's
dead-letter stream (``telemetry:dead``, or ``telemetry:{sK}:dead`` with several shards; fields
id: the stream entry it came from, k, r, error, failures, failed_at) and acknowledges the entry
on the main stream, whose other readings are written: one bad reading never blocks the others.
With several shards a dead letter's id is ``K/ID`` (its shard, its id in that shard's stream);
a bare ID is looked for in every shard. From the shell::

    python -m workers.dead_letters list [--limit N] [--json]
    python -m workers.dead_letters replay (--all | DEAD_ID ...)   # back onto the main stream
    python -m workers.dead_letters purge (--all | DEAD_ID ...)    # delete for good

Replay appends the reading to its shard's stream as a new entry and deletes the dead letter in
the same MULTI/EXEC transaction (one shard, one cluster slot): a reading is never in both places,
nor in neither.
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
from common.streams import DEAD_LETTER_STREAM_KEY, KINDS, SINGLE, KeySpace, encode_record, parse_copy_row

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


def _wanted(keys: KeySpace, dead_ids: list[str] | None) -> dict[int, set[str] | None]:
    """Return, per shard, the dead ids asked for there (None: all of them)."""
    if dead_ids is None:
        return dict.fromkeys(range(keys.shards))
    wanted: dict[int, set[str] | None] = {}
    for dead_id in dead_ids:
        shard, _, bare = dead_id.rpartition("/")
        shards = [int(shard)] if shard.isdigit() and int(shard) < keys.shards else range(keys.shards)
        for k in shards:
            wanted.setdefault(k, set()).add(bare)
    return wanted


def shown_id(keys: KeySpace, shard: int, dead_id: str) -> str:
    """Return a dead letter's id as the command line shows and takes it."""
    return dead_id if keys.shards == 1 else f"{shard}/{dead_id}"


def iter_all_dead_letters(client: redis.Redis, keys: KeySpace = SINGLE) -> Iterator[tuple[str, dict]]:
    """Yield every shard's dead letters (shown id, fields), shard by shard, oldest first in each."""
    for shard in range(keys.shards):
        for dead_id, fields in iter_dead_letters(client, keys.dead_letters(shard)):
            yield shown_id(keys, shard, dead_id), fields


def replay(client: redis.Redis, dead_ids: list[str] | None, keys: KeySpace = SINGLE) -> dict:
    """Move dead letters (all when ``dead_ids`` is None) back onto their shard's stream; return what happened."""
    replayed, skipped, found = [], [], set()
    for shard, wanted in _wanted(keys, dead_ids).items():
        stream_key, dead_key = keys.stream(shard), keys.dead_letters(shard)
        for dead_id, fields in list(iter_dead_letters(client, dead_key)):
            if wanted is not None and dead_id not in wanted:
                continue
            shown = shown_id(keys, shard, dead_id)
            found.update((shown, dead_id))
            if fields.get("k") not in KINDS or not fields.get("r"):
                skipped.append(shown)  # a malformed record would only come back: purge it instead
                continue
            pipe = client.pipeline(transaction=True)
            pipe.xadd(stream_key, encode_record({fields["k"]: [fields["r"]]}))
            pipe.xdel(dead_key, dead_id)
            new_id, _deleted = pipe.execute()
            replayed.append({"deadId": shown, "newEntryId": new_id})
    missing = sorted(d for d in dead_ids if d not in found) if dead_ids is not None else []
    return {"replayed": replayed, "skipped_malformed": skipped, "not_found": missing}


def purge(client: redis.Redis, dead_ids: list[str] | None, keys: KeySpace = SINGLE) -> int:
    """Delete dead letters for good (all when ``dead_ids`` is None); return how many were deleted."""
    deleted = 0
    for shard, wanted in _wanted(keys, dead_ids).items():
        dead_key = keys.dead_letters(shard)
        ids = [d for d, _ in iter_dead_letters(client, dead_key)] if wanted is None else sorted(wanted)
        for start in range(0, len(ids), _PAGE):
            deleted += int(client.xdel(dead_key, *ids[start:start + _PAGE]))
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


def main(argv: list[str] | None = None, client: redis.Redis | None = None, out: TextIO = sys.stdout,
         keys: KeySpace | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    settings = Settings.from_env() if client is None or keys is None else None
    client = client or data_client(settings)
    keys = keys or KeySpace.for_settings(settings)
    if args.command == "list":
        total = sum(int(client.xlen(keys.dead_letters(shard))) for shard in range(keys.shards))
        shown = 0
        for dead_id, fields in iter_all_dead_letters(client, keys):
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
            where = keys.dead_letters(0) if keys.shards == 1 else f"the {keys.shards} shards' dead-letter streams"
            out.write(f"{total} dead letter(s) in {where}; {shown} shown.\n")
        return 0
    if not args.all and not args.ids:
        _parser().error(f"{args.command}: give --all or at least one DEAD_ID")
    ids = None if args.all else list(args.ids)
    if args.command == "replay":
        result = replay(client, ids, keys)
        out.write(json.dumps(result) + "\n")
        return 1 if result["not_found"] else 0
    deleted = purge(client, ids, keys)
    out.write(json.dumps({"purged": deleted}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
