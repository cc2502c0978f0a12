"""Cluster stage: where the chunk tasks of a classify run: a Dask client (one in-process worker with
a thread per core by default, a LocalCluster of processes, or a running scheduler) or this process,
with a progress bar, and what arithmetic the workers' inference runtime used."""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from ..errors import AtlasError
from ..model.infer import runtime_precision

#: held while a local Dask cluster starts: two threads of one process starting theirs at once raced in
#: distributed's lazy imports ("module 'distributed.dashboard' has no attribute 'scheduler'")
_CLUSTER_START = threading.Lock()


#: seconds to wait for a --scheduler address to answer
CONNECT_TIMEOUT_S = 10


def default_workers() -> int:
    """One worker using every core through threads, in this process: faster than one process per core
    (benchmarks/RESULTS.md), and no process to start."""
    return 1


def local_scheduler(workers: int | None, scheduler: str | None) -> str | None:
    """What `dask_client` starts when no address is given: 'threads' (one worker in this process, the
    default), 'LocalCluster' (`workers` > 1 processes), or `scheduler` as given ('sync', an address)."""
    if scheduler is not None:
        return scheduler
    return "threads" if (workers or default_workers()) == 1 else "LocalCluster"


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A Dask client: 'threads' (and the default of one worker) = one in-process worker with a thread
    per core (no process is spawned: safe from a script without a __main__ guard); `workers` > 1 = a
    new LocalCluster of that many processes sharing the cores as threads; an address = a running
    scheduler ('tcp://host:8786'); None for scheduler='sync' (in this process, one chunk at a time)."""
    if scheduler == "sync":
        yield None
        return
    from distributed import Client

    if local_scheduler(workers, scheduler) == "threads":
        with _local_cluster(n_workers=1, threads_per_worker=os.cpu_count() or 1, processes=False) as client:
            yield client
        return

    if scheduler:
        try:
            client = Client(scheduler, set_as_default=False, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as e:
            raise AtlasError(f"--scheduler {scheduler}: no Dask scheduler answers there within "
                             f"{CONNECT_TIMEOUT_S} s ({type(e).__name__}); start one (dask scheduler) or leave "
                             "--scheduler out for a local cluster") from None
        with client:
            yield client
        return
    # GDAL's block cache (default 5 % of RAM per process) need only hold what one chunk reads: its
    # window, and for cloud masking the window plus a 1 km margin, band by band (a 13-band
    # pixel-interleaved file: ~110 MB of decoded blocks per chunk; with 64 MB every band decoded
    # the blocks again: cloud stage 33 worker-s instead of 8.5 on a 4096 x 4096 scene)
    workers = workers or default_workers()
    with _local_cluster(n_workers=workers, threads_per_worker=max(1, (os.cpu_count() or 1) // workers), processes=True,
                        env={"GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", "256")}) as client:
        yield client


@contextmanager
def _local_cluster(**kwargs) -> Iterator[Any]:
    """A LocalCluster (dashboard on any free port, quiet logs) and its Client, started under
    _CLUSTER_START: distributed imports its dashboard modules lazily, racily between threads."""
    import dask
    from distributed import Client, LocalCluster

    # dashboard_address ":0" = any free port: None still binds the scheduler's HTTP server to 8787,
    # with a warning on stderr whenever another run holds that port
    # the workers' scratch space in a folder of this run's, removed afterwards (distributed leaves an
    # empty dask-scratch-space/ in the temporary folder otherwise)
    scratch = tempfile.TemporaryDirectory(prefix="atlas-dask-")
    with _CLUSTER_START, dask.config.set({"temporary-directory": scratch.name}):
        cluster = LocalCluster(dashboard_address=":0", silence_logs=logging.ERROR, local_directory=scratch.name,
                               **kwargs)
        try:
            # not the process's default scheduler: the tasks go to this client explicitly, and two
            # threads' clients closing out of order left dask's global config naming a closed one
            # ("Requested dask.distributed scheduler but no Client active" in the user's own dask code)
            client = Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            scratch.cleanup()
            raise
    with scratch, cluster, client:
        yield client


class Refused(str):
    """What a task returns instead of raising AtlasError (bad input: no retry, no worker log, and the
    message reaches the user as the one line it is, whatever the scheduler)."""


def guarded(fn: Callable, *args):
    """fn(*args), or its AtlasError's message as a `Refused`."""
    try:
        return fn(*args)
    except AtlasError as e:
        return Refused(str(e))


def run_tasks(tasks, client, quiet: bool, on_result: Callable[[tuple], None]) -> list:
    """Run the chunk tasks on `client` (or in this process when it is None), calling `on_result`
    in this process as each one finishes; a task's AtlasError is raised here, as it was raised there
    (not retried: bad input stays bad; other failures, e.g. a worker that died, are retried twice)."""
    bar = tqdm(total=len(tasks), disable=quiet, unit="chunk", desc="classify", dynamic_ncols=True)
    results = []
    with bar:
        if client is None:
            done = (guarded(fn, *args) for fn, args in tasks)
        else:
            from distributed import as_completed

            done = (f.result() for f in as_completed([client.submit(guarded, fn, *args, pure=False, retries=2)
                                                      for fn, args in tasks], loop=client.loop))
        for r in done:
            if isinstance(r, Refused):
                raise AtlasError(str(r))
            on_result(r)
            results.append(r)
            bar.update()
    return results


def workers_precision(client, runtime: str, card=None) -> str:
    """The arithmetic `runtime` uses for `card` where the chunks ran: asked of every Dask worker (a
    cluster's CPUs need not be this one's: bfloat16 on some, float32 on others reads 'bfloat16,
    float32'), or of this process without a client."""
    if client is None:
        return runtime_precision(runtime, card)
    return ", ".join(sorted(set(client.run(runtime_precision, runtime, card).values())))
