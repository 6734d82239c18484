"""graphnn on a ``dask.distributed`` cluster (the optional extra ``graphnn[dask]``): the analyses
of :func:`graphnn.analyse` for models that do not fit one machine, with the blocks placed on
workers by shard and per-iteration messages of O(nodes) floats (see :mod:`.analyse`).

Example (not run as a doctest: it starts a cluster)::

    import graphnn
    from graphnn.distributed import close, connect

    client = connect("local:2")            # or connect("tcp://scheduler:8786")
    a = graphnn.analyse(graphnn.extract("llama-folder"), client=client)
    close(client)

See docs/distributed.md for real clusters (dask-jobqueue, Kubernetes).
"""

from __future__ import annotations

from ..errors import InvalidParameterError, MissingDependencyError

__all__ = ["analyse_distributed", "close", "connect", "parse_address"]


def analyse_distributed(g, client, **options):
    """See :func:`graphnn.distributed.analyse.analyse_distributed`."""
    from .analyse import analyse_distributed as run

    return run(g, client, **options)


def parse_address(spec: str) -> tuple[str, int | str]:
    """``"local:N"`` -> ``("local", N)`` (a LocalCluster of N workers); ``"tcp://HOST:PORT"``
    (or another Dask scheme: ``tls://``, ``inproc://``, ``ucx://``) -> ``("scheduler", spec)``.
    Anything else raises :class:`~graphnn.errors.InvalidParameterError`."""
    if not isinstance(spec, str) or not spec:
        raise InvalidParameterError(f"--dask {spec!r}: use local:N (N local workers) or tcp://HOST:PORT")
    if spec.startswith("local:"):
        n = spec[len("local:"):]
        if not n.isdigit() or int(n) < 1:
            raise InvalidParameterError(f"--dask {spec!r}: N in local:N must be a whole number >= 1 (e.g. local:4)")
        return "local", int(n)
    scheme, sep, rest = spec.partition("://")
    if sep and scheme in ("tcp", "tls", "inproc", "ucx", "ws", "wss") and rest:
        return "scheduler", spec
    raise InvalidParameterError(f"--dask {spec!r}: use local:N (N local workers) or tcp://HOST:PORT (the address "
                                "of a running Dask scheduler)")


def connect(spec: str, *, processes: bool = True, memory_limit: str | int | None = "auto", timeout: float = 30):
    """A ``distributed.Client``: ``"local:N"`` starts a LocalCluster of N single-threaded
    workers (``processes``, ``memory_limit`` per worker) that closes with the client;
    ``"tcp://HOST:PORT"`` connects to a running scheduler (``timeout`` seconds)."""
    kind, value = parse_address(spec)
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise MissingDependencyError("the Dask engine needs dask.distributed: pip install 'graphnn[dask]'") from e
    if kind == "local":
        import logging

        cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=processes,
                               memory_limit=memory_limit, dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        client._graphnn_cluster = cluster  # closed with the client (Client.close does not close it)
        return client
    try:
        return Client(value, timeout=timeout)
    except OSError as e:
        raise InvalidParameterError(f"--dask {spec}: no Dask scheduler answered at {value} within {timeout:g} s "
                                    f"({e}); start one (dask scheduler) or check the address") from e


def close(client) -> None:
    """Close a client from :func:`connect`, and the LocalCluster it started, if any."""
    cluster = getattr(client, "_graphnn_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close(timeout=60)
