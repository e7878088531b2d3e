"""The Celery app: queued imports' jobs (:mod:`antioom.workers.jobs`) as tasks.

Messages are acknowledged late (``acks_late``) and given back when the worker running them
dies (``reject_on_worker_lost``; a killed worker's connection closing does the same), so the
broker redelivers the job of a dead worker. A job counts its attempts in its own arguments: a
redelivered or failed one is queued again with one attempt more, and after ``MAX_ATTEMPTS``
the import ends ``failed`` with the reason, so that a job that kills its worker every time
(a poisoned one) does not circle forever.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from antioom.workers.jobs import TRANSIENT, Job, dialect_from, fail, part_from, run_part, run_plan

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
QUEUE = "antioom"
MAX_ATTEMPTS = 5  # deliveries of a job whose workers died
TRANSIENT_ATTEMPTS = 12  # tries while the database or the staging storage is away: ~7 min
RETRY_BASE_S = 2.0
RETRY_MAX_S = 60.0

log = logging.getLogger("antioom.workers")


def broker_url() -> str:
    return os.environ.get("ANTIOOM_BROKER_URL") or DEFAULT_BROKER


app = Celery("antioom", set_as_current=False)
app.conf.update(
    broker_url=broker_url(),
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,  # a worker takes one part at a time: the others stay free
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,  # progress and results are in the database, not in a backend
    task_default_queue=QUEUE,
    # Redis: a message not acknowledged this long is given to another worker (RabbitMQ
    # redelivers when the dead worker's connection closes).
    broker_transport_options={"visibility_timeout": 3600},
    worker_hijack_root_logger=False,
)


def configure(broker: str | None) -> None:
    """Point the app at ``broker`` (else ANTIOOM_BROKER_URL, else the local RabbitMQ)."""
    app.conf.broker_url = broker or broker_url()


def enqueue(kind: str, arguments: dict[str, Any], attempt: int = 1, delay_s: float = 0) -> None:
    task = plan_task if kind == "plan" else part_task
    task.apply_async(kwargs={**arguments, "attempt": attempt}, countdown=delay_s or None)


@app.task(name="antioom.plan", bind=True)
def plan_task(
    self: Task, job: dict[str, Any], attempt: int = 1, give_up: str | None = None
) -> None:
    arguments = {"job": job, "give_up": give_up}
    _attempt(self, "plan", arguments, attempt, lambda: run_plan(Job.from_dict(job), enqueue))


@app.task(name="antioom.part", bind=True)
def part_task(
    self: Task,
    job: dict[str, Any],
    part: dict[str, Any],
    dialect: dict[str, Any],
    dataset: dict[str, Any] | None,
    records: int | None = None,
    attempt: int = 1,
    give_up: str | None = None,
) -> None:
    from antioom.engine.datasets import Dataset

    arguments = {
        "job": job,
        "part": part,
        "dialect": dialect,
        "dataset": dataset,
        "records": records,
        "give_up": give_up,
    }
    _attempt(
        self,
        "part",
        arguments,
        attempt,
        lambda: run_part(
            Job.from_dict(job),
            part_from(part),
            dialect_from(dialect),
            Dataset.model_validate(dataset) if dataset else None,
            records,
        ),
    )


def _attempt(
    task: Task, kind: str, arguments: dict[str, Any], attempt: int, work: Callable[[], Any]
) -> None:
    """Run ``work`` as attempt number ``attempt`` of a job."""
    job = Job.from_dict(arguments["job"])
    what = _what(kind, arguments)
    if arguments.get("give_up"):  # given up before, but the failure could not be saved then
        _give_up(kind, arguments, attempt, arguments["give_up"])
        return
    if (task.request.delivery_info or {}).get("redelivered"):
        # The worker that had it died (or lost its connection) before finishing.
        if attempt >= MAX_ATTEMPTS:
            reason = f"{what} was given up after {attempt} attempts: its workers kept dying"
            _give_up(kind, arguments, attempt, reason)
            return
        log.warning("%s of import %s: redelivered, attempt %d", what, job.import_id, attempt + 1)
        _requeue(kind, arguments, attempt + 1)
        return
    try:
        work()
    except TRANSIENT as exc:
        if attempt >= TRANSIENT_ATTEMPTS:
            _give_up(
                kind, arguments, attempt, f"{what} was given up after {attempt} attempts: {exc}"
            )
            return
        delay = min(RETRY_BASE_S * 2 ** (attempt - 1), RETRY_MAX_S)
        log.warning("%s of import %s: %s; again in %.0f s", what, job.import_id, exc, delay)
        _requeue(kind, arguments, attempt + 1, delay)
    except Exception as exc:  # a bug: end the import with it rather than retry blindly
        log.exception("%s of import %s failed", what, job.import_id)
        _give_up(kind, arguments, attempt, f"internal error in {what}: {exc!r}")


def _give_up(kind: str, arguments: dict[str, Any], attempt: int, reason: str) -> None:
    """End the import failed with ``reason``; if even that cannot be saved (the database is
    away), queue a job that only tries to save it again: no record is left running, and the
    work given up is not done again."""
    try:
        fail(Job.from_dict(arguments["job"]), reason)
    except Exception as exc:
        log.warning("could not record the failure (%s): again in %.0f s", exc, RETRY_MAX_S)
        _requeue(kind, {**arguments, "give_up": reason}, attempt, RETRY_MAX_S)


def _requeue(kind: str, arguments: dict[str, Any], attempt: int, delay_s: float = 0) -> None:
    """Queue the job again; if the broker refuses, give this delivery back to it."""
    try:
        enqueue(kind, arguments, attempt, delay_s)
    except Exception as exc:
        raise Reject(f"could not queue the job again: {exc}", requeue=True) from exc


def _what(kind: str, arguments: dict[str, Any]) -> str:
    if kind == "plan":
        return "planning"
    part = arguments["part"]
    return f"part {part['index'] + 1} of {part['count']}"


def run_worker(broker: str | None, concurrency: int, loglevel: str = "INFO") -> None:
    """Run a worker until it is stopped (threads: a part's pipeline has threads of its own,
    and the consumer stays free to keep the broker connection alive during long parts)."""
    configure(broker)
    app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            "--pool=threads",
            f"--queues={QUEUE}",
            f"--loglevel={loglevel}",
            # One node name per process: RabbitMQ refuses a second consumer of a node's
            # control queue, so two workers on one host named alike would not both start.
            f"--hostname=antioom-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )
