"""The worker: its poll loop settles batches of tasks (inbox rows, ledger, scheduled channel sends);
its sender thread (delivery/sender.py) sends them."""

from __future__ import annotations

import logging
import threading
from collections import deque

from django.conf import settings

from campaigns import services as campaign_services
from core import broker, dead_letters, metrics, monitoring, scheduler, topics
from core.consumer import BatchConsumer, Heartbeat, StopFlag
from core.failures import FailureKind, describe, failure_kind
from core.messages import CampaignChunk, ChannelRetry, Envelope, InvalidRecord, NotificationTask
from delivery import digests, services
from delivery.channels import channels_available
from delivery.sender import Outcome, Sender
from inbox import services as inbox_services
from inbox.templating import TemplateRenderError

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
        self.guard = FailureGuard(window=settings.FAILURE_GUARD_WINDOW, ratio=settings.FAILURE_GUARD_RATIO)
        self._guard_lock = threading.Lock()  # observed from the poll loop and from the sender
        self.sender = Sender(channels={channel.name: channel for channel in channels_available()}, stop=stop,
                             on_recorded=self._sends_recorded)

    def handle_batch(self, envelopes: list[Envelope]) -> None:
        tasks = [e.message for e in envelopes if isinstance(e.message, NotificationTask)]
        chunks = [(e.message, e.origin) for e in envelopes if isinstance(e.message, CampaignChunk)]
        retries = [e.message for e in envelopes if isinstance(e.message, ChannelRetry)]
        scheduled = 0
        if tasks or chunks:
            origins = {e.message.notification_id: e.origin for e in envelopes if isinstance(e.message, NotificationTask)}
            result = services.deliveries_settle(tasks=tasks, chunks=chunks, origins=origins)
            scheduled += result.sends_scheduled
            for (outcome, kind), count in result.by_outcome_and_kind.items():
                metrics.DELIVERIES.labels(outcome, kind).inc(count)
            for (channel, reason), count in result.held.items():
                metrics.CHANNEL_HELD.labels(channel, reason).inc(count)
            if logger.isEnabledFor(logging.DEBUG):  # one line per notification: costly at full speed
                for task in [*tasks, *(t for chunk, _ in chunks for t in chunk.unpack())]:
                    logger.debug("settled notification", extra={
                        "notification_id": task.notification_id, "campaign_id": task.campaign_id, "recipient": task.recipient})
        if retries:
            scheduled += services.channel_retries_schedule(retries=retries)
        if scheduled:
            self.sender.wake.set()

    def handle_failed(self, envelope: Envelope, error: BaseException) -> None:
        """One task failed on its own (bad data, a bug it triggers): dead-letter it alone."""
        try:
            written = services.envelope_dead_letter(envelope=envelope, error=describe(error))
        except Exception as exc:
            if failure_kind(exc) is not FailureKind.POISON:
                raise  # an outage: the consumer waits it out and calls again
            dead_letters.envelope_dead_letter_raw(envelope=envelope, error=f"{describe(error)}; recording it: {describe(exc)}")
            written = True
        # A template that does not render is the operator's content, not a broken channel or producer: its
        # notifications are dead-lettered (replayable once it is fixed) and never trip the failure guard.
        if written and not isinstance(error, TemplateRenderError):
            self._observe(failures=1, successes=0, last_error=f"processing failed: {describe(error)}")

    def handle_invalid(self, records: list[InvalidRecord]) -> None:
        dead_letters.dead_letters_record_invalid(records=records)
        self._observe(failures=len(records), successes=0, last_error=f"invalid payload: {records[-1].error}")

    def _sends_recorded(self, outcomes: list[Outcome], counts: services.OutcomeCounts) -> None:
        errors = [str(error) for _, error in outcomes if error is not None]
        self._observe(failures=len(errors), successes=counts.sent, last_error=errors[-1] if errors else "")

    def _observe(self, *, failures: int, successes: int, last_error: str) -> None:
        with self._guard_lock:
            tripped = self.guard.observe(failures=failures, successes=successes, last_error=last_error)
        if tripped:
            logger.error(self.guard.message)
            self.stop.set()  # the batch in hand is committed, then the loop ends


def worker_run(*, stop: StopFlag, heartbeat: Heartbeat, batch_size: int, group: str) -> str:
    """Consume notifications.send and due notifications.retry until `stop` is set; returns the failure
    guard's message when it stopped the worker (empty otherwise)."""
    worker = Worker(stop=stop)
    logger.info("worker: consuming %s and %s as group %s", topics.SEND.name, topics.RETRY.name, broker.group_name(group))
    worker.sender.start()
    # Work that waits and whose release is a database write: held notifications (send_at), held
    # campaigns' parts (send_at, local_time by zone), digest windows that close, and the second erase of
    # deleted recipients' inboxes.
    due = scheduler.DueLoop(name="scheduler", handlers=[inbox_services.notifications_release_due,
                                                        campaign_services.campaigns_release_due,
                                                        digests.digests_close_due,
                                                        inbox_services.recipients_erase_due], stop=stop)
    due.start()
    try:
        BatchConsumer(
            name="worker",
            topics=(topics.SEND, topics.RETRY),
            logical_group=group,
            handle_batch=worker.handle_batch,
            handle_invalid=worker.handle_invalid,
            handle_failed=worker.handle_failed,
            max_poll_records=batch_size,
            # A batch only settles (channel sends are the sender's): seconds at worst, so a member that
            # is gone is noticed, and a rebalance waits for its members, one minute at most.
            max_poll_interval_ms=60_000,
            stop=stop,
            heartbeat=heartbeat,
            **monitoring.CALLBACKS,
        ).run()
    finally:
        stop.set()  # the sender, the scheduler and the relay thread too, whatever ended the loop
        worker.sender.join()
        due.join()
    return worker.guard.message
