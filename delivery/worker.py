"""The worker's batch: new tasks and due retries in, inbox rows and channel sends out."""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connection

from delivery import metrics, services
from delivery.channels import ChannelError, PermanentChannelError, channels_available
from delivery.consumer import StopFlag
from delivery.failures import Backoff, FailureKind, describe, failure_kind
from delivery.messages import ChannelRetry, Envelope, InvalidRecord, NotificationTask

logger = logging.getLogger(__name__)


class FailureGuard:
    """Trips when at least `ratio` of the last `window` channel attempts and records failed: a bad
    deploy or a broken channel then stops the worker instead of draining the topic into the DLQ."""

    def __init__(self, *, window: int, ratio: float) -> None:
        self.window = window
        self.ratio = ratio
        self.outcomes: deque[bool] = deque(maxlen=window)
        self.last_error = ""
        self.message = ""

    def observe(self, *, failures: int, successes: int, last_error: str = "") -> bool:
        self.outcomes.extend([False] * successes + [True] * failures)
        if last_error:
            self.last_error = last_error
        failed = sum(self.outcomes)
        if len(self.outcomes) == self.window and failed >= self.ratio * self.window:
            self.message = (
                f"worker: {failed} of the last {self.window} deliveries and records failed (last error: "
                f"{self.last_error}). Stopping instead of draining the topic into the dead-letter topic; "
                "fix the channel or the producer, then start the worker again (nothing is lost)."
            )
            return True
        return False


class Worker:
    def __init__(self, *, stop: StopFlag) -> None:
        self.stop = stop
        self.channels = {channel.name: channel for channel in channels_available()}
        self.pool = ThreadPoolExecutor(max_workers=settings.CHANNEL_SEND_CONCURRENCY, thread_name_prefix="channel")
        self.guard = FailureGuard(window=settings.FAILURE_GUARD_WINDOW, ratio=settings.FAILURE_GUARD_RATIO)

    @staticmethod
    def due_at(message) -> float | None:
        return message.due_at if isinstance(message, ChannelRetry) else None

    def handle_batch(self, envelopes: list[Envelope]) -> None:
        tasks = [e.message for e in envelopes if isinstance(e.message, NotificationTask)]
        retries = [e.message for e in envelopes if isinstance(e.message, ChannelRetry)]
        sends = []
        if tasks:
            origins = {e.message.notification_id: e.origin for e in envelopes if isinstance(e.message, NotificationTask)}
            result = services.deliveries_settle(tasks=tasks, origins=origins)
            sends += result.sends
            for (outcome, kind), count in result.by_outcome_and_kind.items():
                metrics.DELIVERIES.labels(outcome, kind).inc(count)
            if logger.isEnabledFor(logging.DEBUG):  # one line per notification: costly at full speed
                for task in tasks:
                    logger.debug("settled notification", extra={
                        "notification_id": task.notification_id, "campaign_id": task.campaign_id, "recipient": task.recipient})
        if retries:
            sends += services.channel_retries_claim(retries=retries)
        if not sends:
            return
        outcomes = list(zip(sends, self.pool.map(self._send, sends)))
        counts = self._record(outcomes)
        for send, error in outcomes:
            metrics.CHANNEL_ATTEMPTS.labels(send.channel, "sent" if error is None else "failed").inc()
        errors = [str(error) for _, error in outcomes if error is not None]
        if counts.retried or counts.dead:
            logger.info("worker: %d sent, %d to retry, %d dead-lettered", counts.sent, counts.retried, counts.dead)
        self._observe(failures=len(errors), successes=counts.sent, last_error=errors[-1] if errors else "")

    def handle_failed(self, envelope: Envelope, error: BaseException) -> None:
        """One task failed on its own (bad data, a bug it triggers): dead-letter it alone."""
        try:
            written = services.envelope_dead_letter(envelope=envelope, error=describe(error))
        except Exception as exc:
            if failure_kind(exc) is not FailureKind.POISON:
                raise  # an outage: the consumer waits it out and calls again
            services.envelope_dead_letter_raw(envelope=envelope, error=f"{describe(error)}; recording it: {describe(exc)}")
            written = True
        if written:
            self._observe(failures=1, successes=0, last_error=f"processing failed: {describe(error)}")

    def _record(self, outcomes) -> services.OutcomeCounts:
        """Record what was sent, waiting out an outage here: raising would make the consumer handle the
        batch again, and its sends still `pending` in the database would go out a second time."""
        backoff = Backoff()
        while True:
            try:
                return services.channel_outcomes_record(outcomes=outcomes)
            except Exception as exc:
                if failure_kind(exc) is FailureKind.POISON or self.stop.is_set():
                    raise
                delay = backoff.next()
                logger.warning("worker: recording %d channel attempts failed (%s); retrying in %.1f s",
                               len(outcomes), describe(exc), delay)
                with contextlib.suppress(Exception):
                    connection.close()
                self.stop.wait(delay)

    def handle_invalid(self, records: list[InvalidRecord]) -> None:
        services.dead_letters_record_invalid(records=records)
        self._observe(failures=len(records), successes=0, last_error=f"invalid payload: {records[-1].error}")

    def _send(self, send) -> ChannelError | None:
        """One attempt; never raises. A channel classifies its own errors; anything else it lets
        escape (a library raising the unexpected) is a permanent failure of this one send, recorded
        like any other, so that the other sends of the batch are recorded too and never repeated."""
        try:
            self.channels[send.channel].send(send.outgoing)
        except ChannelError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - see the docstring
            logger.warning("worker: %s via %s raised %s", send.outgoing.notification_id, send.channel, describe(exc))
            return PermanentChannelError(f"unexpected error: {describe(exc)}")
        return None

    def _observe(self, *, failures: int, successes: int, last_error: str) -> None:
        if self.guard.observe(failures=failures, successes=successes, last_error=last_error):
            logger.error(self.guard.message)
            self.stop.set()  # the batch in hand is committed, then the loop ends

    def close(self) -> None:
        self.pool.shutdown(wait=True)
