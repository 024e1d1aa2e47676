"""The one raw redis-py client and the registered Lua scripts.

Redis is derived state in finn (caches, locks, rate limits); Postgres is the
truth. Everything that talks to Redis directly goes through ``get_redis()``
so timeouts are short everywhere: a slow Redis must degrade a request, never
hang it.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from django.conf import settings
from redis.commands.core import Script

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def get_redis() -> redis.Redis:
    """The process-wide client for ``settings.REDIS_URL`` (thread-safe pool)."""
    url: str = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=1.0,
                    socket_connect_timeout=1.0,
                    health_check_interval=30,
                    decode_responses=True,
                )
                _clients[url] = client
    return client


# Balance cache write guarded by a version: on_commit callbacks of two
# transactions on one account may run in either order, and the older one
# must not overwrite the newer balances.
BALANCE_CACHE_SET = """
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'available', ARGV[2], 'held', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


SCRIPTS: dict[str, str] = {"balance_cache_set": BALANCE_CACHE_SET}

_script_objects: dict[tuple[str, str], Script] = {}


def register_script(name: str, source: str) -> str:
    """Register a Lua script under ``name`` (at import time of its module)."""
    existing = SCRIPTS.get(name)
    if existing is not None and existing != source:
        raise ValueError(f"Lua script {name!r} registered twice with different sources")
    SCRIPTS[name] = source
    return name


def run_script(name: str, keys: list[str], args: list[Any]) -> Any:
    """Run a registered script by name (EVALSHA, falling back to EVAL)."""
    client = get_redis()
    cache_key = (settings.REDIS_URL, name)
    script = _script_objects.get(cache_key)
    if script is None:
        script = client.register_script(SCRIPTS[name])
        _script_objects[cache_key] = script
    return script(keys=keys, args=args, client=client)
