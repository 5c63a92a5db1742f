"""Contracts shared by the web, worker and scheduler processes."""
