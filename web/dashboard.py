"""The dashboard: one page at / and its static files; every number on it comes from the public API."""

from __future__ import annotations

from flask import Blueprint, make_response, render_template

bp = Blueprint("dashboard", __name__)

# Only this origin's scripts run on the page that holds the key; uPlot sets inline styles on its canvas.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
# The vendored chart library (web/static/vendor/): its version is part of the path, its licence beside it.
UPLOT_DIR = "vendor/uplot-1.6.32"


@bp.get("/")
def index():
    """Return the dashboard's single page (it signs in, then reads the API from the browser)."""
    response = make_response(render_template("dashboard.html", uplot_dir=UPLOT_DIR))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
