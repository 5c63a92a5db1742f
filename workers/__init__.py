"""The worker process: drains the Redis stream into Postgres."""
