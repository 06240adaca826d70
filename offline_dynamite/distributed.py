"""Ray as an optional back end: shards of seeded episodes run as Ray tasks, beyond one machine.

Collection and evaluation cut their episodes into shards. Episode ``i`` draws its seeds from
``(seed, i)`` alone (:mod:`offline_dynamite.rollout`), and :func:`ray_map` hands the shards'
results back in shard order, so what is built from them is identical to a run on one machine.

- A shard whose worker process or node is lost is run again, up to :data:`SHARD_RETRIES` times
  (Ray's ``max_retries``: system failures only).
- An exception raised inside a shard is not retried: it is a bug or bad input, and it surfaces
  at once.
- At most a few shards per CPU of the cluster are in flight, so that the object store holds
  only the results that are about to be consumed.

Ray is the ``ray`` extra (``pip install 'dynamite-rl[ray]'``); every node of a cluster needs
the same dynamite-rl installed, since shards import it there.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import socket
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

RAY_EXTRA = "pip install 'dynamite-rl[ray]'"
#: Reruns of a shard after its worker (or node) is lost.
SHARD_RETRIES = 3
#: Shards in flight per CPU of the cluster.
SHARDS_PER_CPU = 2
#: Seconds to wait for a cluster's address to answer before giving up (Ray itself retries for minutes).
CONNECT_TIMEOUT_S = 5.0

_ADDRESS = re.compile(r"^(ray://)?(?P<host>[\w.\-]+):(?P<port>\d+)$")

Item = TypeVar("Item")
Result = TypeVar("Result")


class DistributedError(RuntimeError):
    """Ray cannot be used as asked: not installed, no cluster at the address, a shard lost for good."""


@dataclass(frozen=True)
class RayCluster:
    """Where shards run, as ``--ray ADDRESS`` names it.

    ``local`` starts Ray on this machine for the command's duration; ``auto`` joins the cluster
    this machine is part of (``ray start``, or ``$RAY_ADDRESS``); ``host:port`` is the head
    node's GCS address; ``ray://host:port`` goes through Ray Client. A process that already
    called ``ray.init`` (a notebook, a test) keeps its connection, whatever the address.
    """

    address: str

    def __post_init__(self) -> None:
        if self.address not in ("local", "auto") and not _ADDRESS.match(self.address):
            raise DistributedError(
                f"invalid Ray address {self.address!r}: use local, auto, host:port or ray://host:port"
            )


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DistributedError(f"Ray is not installed: --ray needs the ray extra ({RAY_EXTRA})") from None
    return ray


@contextlib.contextmanager
def connected(cluster: RayCluster) -> Iterator[Any]:
    """The ``ray`` module, connected to ``cluster``; disconnected afterwards if this connected it."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = os.environ.get("RAY_ADDRESS", "auto") if cluster.address == "auto" else cluster.address
    _check_reachable(address)
    # A local instance's processes would inherit the held-back stderr: only joining is quieted.
    with contextlib.nullcontext() if address == "local" else _native_stderr_only_on_success():
        try:
            # Workers' own output (library banners, warnings) stays in Ray's log files; what goes
            # wrong in a shard comes back as its exception.
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise DistributedError(
                f"cannot connect to Ray at {address}: {error}. If the cluster uses token authentication "
                "(`ray start` says so), set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (`ray get-auth-token` "
                "on the head)"
            ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _native_stderr_only_on_success() -> Iterator[None]:
    """Hold back what native code writes to stderr (file descriptor 2) meanwhile; show it only if
    the block succeeds.

    While ``ray.init`` retries an address that refuses it (a missing token, a crashed head), Ray's
    C++ client logs a warning every second for about 20 s; the error line that follows says it all.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        sys.stderr.write(captured.read())


def _check_reachable(address: str) -> None:
    """Fail fast on an address nobody answers at (``ray.init`` would retry for minutes)."""
    match = _ADDRESS.match(address)
    if match is None:  # local, or auto without $RAY_ADDRESS: Ray looks on this machine itself
        return
    try:
        socket.create_connection((match["host"], int(match["port"])), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise DistributedError(
            f"no Ray cluster answers at {address} ({error.strerror or error}): start one there with "
            "`ray start --head`, or check the address"
        ) from None


def _call(function: Callable[[Item], Result], item: Item) -> Result:
    return function(item)


def ray_map(function: Callable[[Item], Result], items: Iterable[Item], cluster: RayCluster) -> Iterator[Result]:
    """``function(item)`` for every item, each a Ray task on ``cluster``; results in item order.

    Close the iterator (``contextlib.closing``) to cancel what is still running if the
    consumer stops early; an exception in a shard is re-raised as its own type.
    """
    with connected(cluster) as ray:
        remote = ray.remote(max_retries=SHARD_RETRIES, num_cpus=1)(_call)
        window = max(2, SHARDS_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
        function_ref = ray.put(function)  # sent once, not with every shard
        pending: deque[tuple[int, Any]] = deque()  # (shard index, its result's reference), in order
        shards = enumerate(items)
        try:
            while True:
                for index, item in itertools.islice(shards, window - len(pending)):
                    pending.append((index, remote.remote(function_ref, item)))
                if not pending:
                    return
                index, reference = pending.popleft()
                yield _result(ray, index, reference)
        finally:
            for _, reference in pending:
                ray.cancel(reference, force=True)


def _result(ray: Any, index: int, reference: Any) -> Any:
    try:
        return ray.get(reference)
    except ray.exceptions.RayTaskError as error:
        raise error.as_instanceof_cause() from None
    except ray.exceptions.RayError as error:  # worker, node or object lost more often than retried
        raise DistributedError(
            f"shard {index} was lost {SHARD_RETRIES + 1} times on the Ray cluster ({type(error).__name__}): "
            "check the cluster's nodes and memory"
        ) from None
