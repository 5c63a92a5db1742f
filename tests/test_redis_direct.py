"""DirectRedis: a connection per thread that survives what a pooled client survives."""

from __future__ import annotations

import threading

import pytest
import redis

from web.redis_direct import DirectRedis


@pytest.fixture
def direct(settings, redis_client):
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=0.5)
    yield DirectRedis(client)
    client.close()


def test_commands_answer_like_the_client(direct, redis_client):
    assert direct.execute("HSET", "h", "a", "1") == 1
    assert direct.execute("HGET", "h", "a") == "1"
    assert direct.execute("HGET", "h", "missing") is None


def test_a_killed_connection_is_replaced_and_the_command_still_runs(direct, redis_client):
    direct.execute("SET", "k", "before")
    assert redis_client.client_kill_filter(_id=direct.execute("CLIENT", "ID")) == 1  # as a Redis restart would
    assert direct.execute("GET", "k") == "before"


def test_a_script_redis_forgot_is_loaded_again(direct, redis_client):
    script = redis_client.register_script("return ARGV[1] .. KEYS[1]")
    assert direct.evalsha(script, ["k"], ["v"]) == "vk"
    redis_client.script_flush()
    assert direct.evalsha(script, ["k"], ["w"]) == "wk"


def test_an_error_reply_leaves_the_connection_usable(direct):
    direct.execute("SET", "s", "text")
    with pytest.raises(redis.ResponseError):
        direct.execute("HGET", "s", "field")  # WRONGTYPE
    assert direct.execute("GET", "s") == "text"


def test_a_timeout_does_not_leave_its_answer_for_the_next_command(direct, redis_client):
    with pytest.raises(redis.TimeoutError):
        direct.execute("BLPOP", "queue", 2)  # blocks past the 0.5 s socket timeout
    redis_client.rpush("queue", "late")  # had the old connection been kept, its BLPOP answer would arrive now
    assert direct.execute("GET", "nothing") is None
    assert redis_client.lrange("queue", 0, -1) == ["late"]


def test_each_thread_has_its_own_connection(direct, redis_client):
    seen = []
    together = threading.Barrier(3)

    def work():
        first = direct.execute("CLIENT", "ID")
        together.wait(timeout=10)  # all three hold a connection at once
        seen.append((first, direct.execute("CLIENT", "ID")))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(first == second for first, second in seen)  # a thread keeps its connection
    assert len({first for first, _ in seen}) == 3  # and no two threads share one


def test_the_connection_of_an_ended_thread_goes_back_to_the_pool(direct):
    pool = direct.client.connection_pool

    def work():
        direct.execute("PING")

    for _ in range(5):
        t = threading.Thread(target=work)
        t.start()
        t.join()
    direct.execute("PING")  # a new owner gives back the connections of the threads that ended
    assert len(pool._in_use_connections) == 1
