"""The model pool: the pool file's entries, the calls the graphs make through ``graphs.ports.ModelPool``,
recorded-outcome replay, and the embedded llama.cpp / vLLM servers (``app.pool.local_servers``).

The names most callers need are re-exported here: ``from app.pool import Pool, load_pool``.
"""

from app.pool.entries import Backend, Mode, ModelEntry, PoolError, PoolFile, router_from_checkpoint
from app.pool.keys import CacheMode, ResponseCache
from app.pool.loader import configured_pool, load_pool
from app.pool.pool import ClientFactory, Pool
from graphs.ports import CallResult, EndpointError

__all__ = [
    "Backend",
    "CacheMode",
    "CallResult",
    "ClientFactory",
    "EndpointError",
    "Mode",
    "ModelEntry",
    "Pool",
    "PoolError",
    "PoolFile",
    "ResponseCache",
    "configured_pool",
    "load_pool",
    "router_from_checkpoint",
]
