"""kopf handlers: thin glue between kopf's events and the operator's parts.

The operator's settings are read once, by the start-up handler (settings.py), which builds
everything else (runtime.py) and hands it to the handlers through kopf's `memo`. A MailDomain's
pass, its retries and its periodic work live in domains.py and on one scheduler
(scheduler.py): no kopf timer or daemon per object, and no retry that kopf would record in an
annotation. kopf keeps its own bookkeeping in `mailward.io/*` annotations rather than in
`status`, because a structural CRD schema prunes unknown status fields (kopf #321) and because
the status belongs to the users' tools (kstatus, Argo CD, Flux).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from mailward import fleet_handlers as fleet_handlers  # registers the MailServer handlers
from mailward import peering
from mailward import provider_handlers as provider_handlers  # and the DNS providers'
from mailward.adapters.kube_watch import KubeHTTP
from mailward.adapters.peering_watch import follow
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL
from mailward.diffbase import InMemoryDiffBase
from mailward.parts import ReleasePending
from mailward.runtime import API_THREADS, Runtime, build
from mailward.settings import load

FINALIZER = f"{API_GROUP}/finalizer"


def runtime_of(memo: Any) -> Runtime:
    return cast(Runtime, memo.runtime)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    # Not an annotation: one PATCH less per object and per change (diffbase.py).
    memo.diffbase = settings.persistence.diffbase_storage = InMemoryDiffBase()
    # Events for warnings only: kopf's per-handler "succeeded" events would be noise.
    settings.posting.level = logging.WARNING
    # Reconnect watches that a load balancer silently dropped (kopf #204 and many since).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = 360
    # No CRD and namespace discovery: the resources are named, and the chart grants no right
    # to list CRDs.
    settings.scanning.disabled = True
    # The default pool (CPUs + 4) would queue the API requests of the passes that run at once
    # behind a handful of threads.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(API_THREADS))
    # A wrong setting stops the operator here, naming the variable (settings.SettingsError).
    me = peering.CURRENT
    # Under peering, the scheduler's jobs wait until this replica is the active one.
    runtime = build(load(), standby=me is not None)
    memo.runtime = runtime
    # `kill -USR1 <pid>`: what every task of the operator awaits, in its log.
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _log_tasks)
    runtime.scheduler.start()
    stream = KubeHTTP.from_environment()
    memo.watches = asyncio.create_task(runtime.observed.run(stream), name="mailward watches")
    memo.stream = stream
    if me is not None:
        scheduler = runtime.scheduler

        def standing(active: bool) -> None:
            if active:
                scheduler.resume()
            else:
                scheduler.pause()

        memo.peering = asyncio.create_task(follow(stream, me, standing), name="mailward peering")
    metrics_address = runtime.settings.metrics_address
    if metrics_address:
        from mailward.compliance import metrics

        metrics.serve(metrics_address)


def _log_tasks() -> None:
    for task in asyncio.all_tasks():
        frames = "".join(
            f"\n    {f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}"
            for f in task.get_stack()
        )
        logging.getLogger("mailward.tasks").warning("task %s:%s", task.get_name(), frames)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in ("peering", "watches"):
        if task in memo:
            memo[task].cancel()
            await asyncio.gather(memo[task], return_exceptions=True)
    if "stream" in memo:
        await memo.stream.close()
    if "runtime" in memo:
        await runtime_of(memo).scheduler.stop()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def observe(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every MailDomain event, before the change handlers: what the parts that look at a whole
    namespace (the TLSRPT collector) read instead of listing it."""
    runtime_of(memo).directory.observe(event.get("type"), body)
    if event.get("type") == "DELETED":
        cast(InMemoryDiffBase, memo.diffbase).forget(body)


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL)
async def reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """One pass; its retries and the periodic resync are the scheduler's (domains.py)."""
    await runtime_of(memo).domains.reconcile(body)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL)
async def release(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Release what the MailDomain owns outside the cluster, last part first."""
    try:
        await runtime_of(memo).domains.release(body)
    except ReleasePending as pending:
        # The bound is counted from deletionTimestamp, so a restarted operator keeps it.
        raise kopf.TemporaryError(str(pending), delay=pending.delay) from None
