"""Channel sends, off the poll loop: released from the scheduler, sent on a thread pool, recorded.

The worker's poll loop only settles tasks (inbox rows, ledger, a `pending` channel delivery and its
scheduled item per external send) and commits; it never waits for an endpoint. This thread releases
due sends (`core.scheduler`, with a lease), at most CHANNEL_SEND_CONCURRENCY at once in the process
and CHANNEL_HOST_CONCURRENCY to any one lane (an endpoint host): a slow host fills its own lane and
nothing else. Each outcome is recorded as the send finishes: sent, due again after the backoff, or
dead-lettered.

What if this process is SIGKILLed: sends in flight were released under a lease; when it ends they
are due again and another worker (or this one restarted) sends them again, with the same
`Idempotency-Key`. What if an endpoint never answers: the channel's timeout ends the attempt, a
transient failure, retried with backoff. What if the database is down: recording waits it out (the
outcomes are kept in memory meanwhile) and releasing pauses; released items not sent (their lane
filled up, or the database failed before they were submitted) are kept in memory too and given
back as soon as it answers, so a blip never leaves a send waiting for its lease to end.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import connection

from core import metrics, scheduler
from core.consumer import StopFlag
from core.failures import Backoff, FailureKind, describe, failure_kind
from delivery import services
from delivery.channels import ChannelError, ExternalChannel, PermanentChannelError

logger = logging.getLogger(__name__)

Outcome = tuple[services.ChannelSend, ChannelError | None]


def send_lease() -> timedelta:
    """How long a released send is held before it is due again: several attempts' time-outs, so that
    only a holder that died lets it go."""
    return timedelta(seconds=max(60.0, 6 * settings.WEBHOOK_TIMEOUT_SECONDS))


class Sender:
    def __init__(self, *, channels: dict[str, ExternalChannel], stop: StopFlag,
                 on_recorded: Callable[[list[Outcome], services.OutcomeCounts], object]) -> None:
        self.channels = channels
        self.stop = stop
        self.on_recorded = on_recorded
        self.capacity = settings.CHANNEL_SEND_CONCURRENCY
        self.lane_limit = settings.CHANNEL_HOST_CONCURRENCY
        self.pool = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="channel")
        self.in_flight: Counter[str] = Counter()  # per lane; touched by this thread only
        self.finished: queue.SimpleQueue[tuple[str, Outcome]] = queue.SimpleQueue()
        self.unsent: list[scheduler.Due] = []  # released, not submitted: to give back (touched by this thread only)
        self.wake = threading.Event()  # new sends scheduled, or a send finished
        self.thread = threading.Thread(target=self._run, name="sender", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.wake.set()
        self.thread.join()

    def _run(self) -> None:
        backoff = Backoff()
        try:
            while not self.stop.is_set():
                self.wake.clear()
                try:
                    self._give_back()
                    self._record_finished()
                    released = self._release()
                    # Nothing to send: sleep until the next send is due (a retry, a lease that runs out),
                    # SCHEDULER_IDLE_SECONDS at most, unless this worker schedules one or a send ends.
                    pause = 0.0 if released else scheduler.seconds_until_next_due(
                        at_least=settings.SCHEDULER_POLL_SECONDS, at_most=settings.SCHEDULER_IDLE_SECONDS)
                except Exception as exc:  # noqa: BLE001 - an outage: wait and try again
                    delay = backoff.next()
                    logger.warning("sender: %s; trying again in %.1f s", describe(exc), delay)
                    with contextlib.suppress(Exception):
                        connection.close()
                    self.stop.wait(delay)
                    continue
                backoff = Backoff()
                if pause:
                    self.wake.wait(pause)
        finally:
            self.pool.shutdown(wait=True)  # sends in flight end within their time-outs
            with contextlib.suppress(Exception):
                self._give_back()
            with contextlib.suppress(Exception):
                self._record_finished()
            connection.close()

    def _release(self) -> int:
        free = self.capacity - sum(self.in_flight.values())
        if free <= 0:
            return 0
        busy = {lane for lane, n in self.in_flight.items() if n >= self.lane_limit}
        items = scheduler.release(kind=services.SEND, limit=free, lease=send_lease(), busy_lanes=busy)
        if not items:
            return 0
        try:
            sends = services.channel_sends_of(items=items)
        except Exception:
            self.unsent += items  # none submitted: due again as they were once the database answers
            raise
        for send in sends:
            lane = send.item.lane or services.send_lane(send.channel, send.outgoing)
            if self.in_flight[lane] >= self.lane_limit:
                self.unsent.append(send.item)  # its lane filled up within this release
                continue
            self.in_flight[lane] += 1
            self.pool.submit(self._send, lane, send)
        waiting = len(self.unsent)
        self._give_back()
        return len(items) - waiting

    def _give_back(self) -> None:
        """Give back the released items this thread did not send. Kept until that succeeds: found from
        a database blip right after a release, whose lost give-back held a send for its whole lease."""
        if self.unsent:
            scheduler.give_back(self.unsent)
            self.unsent = []

    def _send(self, lane: str, send: services.ChannelSend) -> None:
        """One attempt (a pool thread); never raises. A channel classifies its own errors; anything
        else it lets escape is a permanent failure of this one send."""
        error: ChannelError | None = None
        try:
            self.channels[send.channel].send(send.outgoing)
        except ChannelError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - see the docstring
            logger.warning("sender: %s via %s raised %s", send.outgoing.notification_id, send.channel, describe(exc))
            error = PermanentChannelError(f"unexpected error: {describe(exc)}")
        self.finished.put((lane, (send, error)))
        self.wake.set()

    def _record_finished(self) -> None:
        outcomes: list[Outcome] = []
        lanes: list[str] = []
        with contextlib.suppress(queue.Empty):
            while True:
                lane, outcome = self.finished.get_nowait()
                lanes.append(lane)
                outcomes.append(outcome)
        if not outcomes:
            return
        try:
            counts = self._record(outcomes)
        finally:
            for lane in lanes:  # recorded, or left to come due again when their leases end
                self.in_flight[lane] -= 1
        for send, error in outcomes:
            metrics.CHANNEL_ATTEMPTS.labels(send.channel, "sent" if error is None else "failed").inc()
        if counts.retried or counts.dead:
            logger.info("sender: %d sent, %d to retry, %d dead-lettered", counts.sent, counts.retried, counts.dead)
        self.on_recorded(outcomes, counts)

    def _record(self, outcomes: list[Outcome]) -> services.OutcomeCounts:
        """Record what was sent, waiting out an outage (nothing is sent again meanwhile). Once stopping
        it gives up after a few tries: the items' leases end and those sends are repeated, never lost."""
        backoff = Backoff()
        tries = 0
        while True:
            try:
                return services.channel_outcomes_record(outcomes=outcomes)
            except Exception as exc:
                tries += 1
                if failure_kind(exc) is FailureKind.POISON or (self.stop.is_set() and tries > 3):
                    raise
                delay = backoff.next()
                logger.warning("sender: recording %d channel attempts failed (%s); retrying in %.1f s",
                               len(outcomes), describe(exc), delay)
                with contextlib.suppress(Exception):
                    connection.close()
                self.stop.wait(delay)
