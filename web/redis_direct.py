"""DirectRedis: the web's hot-path commands sent on a connection that each thread keeps for itself.

Every ingest request and latest-state read makes one Redis call. Through redis-py's client that
call also checks a connection out of the shared pool and back (a lock, a readiness poll of the
socket, observability counters) and goes through the retry and Script wrappers: ~45 us of CPU
a call on this machine against ~25 us for the command itself. A gunicorn thread serves one
request at a time, so a connection of its own is never shared and needs none of that.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence

import redis
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError


class DirectRedis:
    """Send commands on the calling thread's own connection, taken once from ``client``'s pool."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._local = threading.local()
        self._lock = threading.Lock()
        self._owners: dict[int, tuple[weakref.ref, object]] = {}  # thread id -> (thread, connection)
        self._owners_pid = os.getpid()

    def _connection(self):
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or a forked child of the owner
            pool = self.client.connection_pool
            with self._lock:
                self._give_back_connections_of_ended_threads(pool)
                local.connection = pool.get_connection()
                local.pid = os.getpid()
                self._owners[threading.get_ident()] = (weakref.ref(threading.current_thread()), local.connection)
        return local.connection

    def _give_back_connections_of_ended_threads(self, pool) -> None:
        if self._owners_pid != os.getpid():  # the parent's connections are not this process's
            self._owners, self._owners_pid = {}, os.getpid()
        for ident, (thread_ref, connection) in list(self._owners.items()):
            thread = thread_ref()
            if thread is None or not thread.is_alive():
                del self._owners[ident]
                pool.release(connection)

    def execute(self, *args):
        """Run one command and return its answer, reconnecting once if the connection was lost.

        A lost connection (Redis restarted, or closed an idle client) fails the first send; the
        command then goes again on a new connection (at least once, as with redis-py's retries:
        every hot-path command is safe to repeat). Other errors are raised as they are.
        """
        connection = self._connection()
        try:
            return self._send(connection, args)
        except RedisConnectionError:
            return self._send(connection, args)  # connects again

    @staticmethod
    def _send(connection, args):
        try:
            connection.send_command(*args)
            return connection.read_response()
        except ResponseError:
            raise  # an error reply, read in full: the connection is ready for the next command
        except BaseException:
            connection.disconnect()  # a reply left unread must not be taken for the next one's
            raise

    def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[str]):
        """Run a registered Lua script by its SHA, loading it first if Redis does not know it."""
        try:
            return self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted and lost its script cache
            script.sha = self.execute("SCRIPT", "LOAD", script.script)
            return self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    def evalsha_then_wait(self, script: Script, keys: Sequence[str], args: Sequence[str], replicas: int,
                          timeout_ms: int) -> tuple[object, int]:
        """Run a script and ``WAIT replicas timeout_ms`` after it on the same connection, in one round trip.

        Returns the script's answer and how many replicas acknowledged its writes. WAIT counts the
        writes of its own connection, so both must go on one.
        """
        commands = [("EVALSHA", script.sha, len(keys), *keys, *args), ("WAIT", replicas, timeout_ms)]
        connection = self._connection()
        try:
            answer, acked = self._send_all(connection, commands)
        except RedisConnectionError:
            answer, acked = self._send_all(connection, commands)  # connects again
        if isinstance(answer, NoScriptError):
            script.sha = self.execute("SCRIPT", "LOAD", script.script)
            commands[0] = ("EVALSHA", script.sha, len(keys), *keys, *args)
            answer, acked = self._send_all(connection, commands)
        for reply in (answer, acked):
            if isinstance(reply, Exception):
                raise reply
        return answer, int(acked)

    @staticmethod
    def _send_all(connection, commands):
        """Send ``commands`` at once and read every reply; an error reply is returned, not raised."""
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            replies = []
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            connection.disconnect()
            raise
