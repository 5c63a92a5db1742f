"""Flask's JSON answers through orjson: several times faster than the stdlib encoder on large bodies."""

from __future__ import annotations

import orjson
from flask.json.provider import DefaultJSONProvider


class OrjsonProvider(DefaultJSONProvider):
    """Serialize responses with orjson; types it does not know fall back to Flask's default hook."""

    sort_keys = False

    def dumps(self, obj, **kwargs) -> str:
        """Return ``obj`` as JSON text."""
        return orjson.dumps(obj, default=self.default).decode()
