"""The engine without its access control: the same app as production, less the key check and the rate limits.

Only the benchmark serves it, taking turns with the real engine on the same single-reading load,
so that what authentication and rate limiting cost is measured, not guessed. No setting of the
engine turns access control off: this module builds the app through
``web.build_app_without_access_control``, which ``web.create_app`` wraps.
"""

from __future__ import annotations

from web import build_app_without_access_control

app = build_app_without_access_control()
