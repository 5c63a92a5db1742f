"""The benchmark: ``make bench`` (full size) and ``make bench-smoke``; see bench/README.md."""
