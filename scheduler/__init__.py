"""The scheduler process: ``rq cron scheduler/cron_config.py`` and the maintenance jobs it enqueues."""
