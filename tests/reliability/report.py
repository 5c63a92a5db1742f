"""The suite's summary table: every test adds its figures; the conftest prints the table once at the end."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One figure of the summary."""

    section: str
    name: str
    value: object
    expected: str = ""


@dataclass
class Report:
    """Figures in the order the tests produced them."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, name: str, value: object, expected: str = "") -> None:
        """Add (or replace) the figure ``name`` of ``section``."""
        self.rows = [r for r in self.rows if (r.section, r.name) != (section, name)]
        self.rows.append(Row(section, name, value, expected))

    def note(self, text: str) -> None:
        """Add a line printed under the table."""
        self.notes.append(text)

    def render(self) -> str:
        """Return the table as text."""
        if not self.rows:
            return "reliability suite: no figures were recorded"
        headers = ("section", "figure", "value", "must be")
        cells = [(r.section, r.name, _fmt(r.value), r.expected) for r in self.rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        rule = "+-" + "-+-".join("-" * w for w in widths) + "-+"

        def line(values) -> str:
            return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

        out = [rule, line(headers), rule]
        previous = None
        for c in cells:
            if previous is not None and c[0] != previous:
                out.append(rule)
            out.append(line(c))
            previous = c[0]
        out.append(rule)
        out += self.notes
        return "\n".join(out)

    def write(self, directory: Path) -> Path:
        """Write the table to ``directory/summary.txt`` and return the path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "summary.txt"
        path.write_text(self.render() + "\n")
        return path


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


REPORT = Report()


def results_dir() -> Path:
    """Where the summary and the logs of a run go (``RELIABILITY_RESULTS_DIR``, default $TMPDIR/reliability-results)."""
    default = Path(tempfile.gettempdir()) / "reliability-results"
    return Path(os.environ.get("RELIABILITY_RESULTS_DIR", default)).resolve()
