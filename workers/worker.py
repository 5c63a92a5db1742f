"""The RQ worker class for the engine: a HerokuWorker whose drain finishes its batch on SIGTERM."""

from __future__ import annotations

import signal

from rq.worker import HerokuWorker

from workers.drain import STOP


class DrainWorker(HerokuWorker):
    """On SIGTERM (a dyno restart, ``docker stop``) let the drain commit and acknowledge its batch.

    HerokuWorker forwards SIGTERM to the work horse as SIGRTMIN and kills the job
    ``imminent_shutdown_delay`` seconds later. The drain loop checks ``STOP`` between batches, so
    it returns cleanly well within that delay; anything cut short stays pending and is reclaimed.
    """

    imminent_shutdown_delay = 8

    def request_stop_sigrtmin(self, signum, frame):
        """Ask the running drain to stop after its batch, then fall back to HerokuWorker's deadline."""
        STOP.set()
        signal.signal(signal.SIGRTMIN, self.request_force_stop_sigrtmin)
        signal.signal(signal.SIGALRM, self.request_force_stop_sigrtmin)
        signal.alarm(self.imminent_shutdown_delay)
