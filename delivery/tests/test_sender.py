"""The sender thread's release step, against the real database (no broker, no thread: `_release`
and `_give_back` are called as its loop calls them)."""

import threading

import pytest
from django.db import OperationalError
from django.utils import timezone

from core import scheduler
from core.consumer import StopFlag
from core.factories import ScheduledItemFactory
from core.models import ScheduledItem
from delivery.factories import ChannelDeliveryFactory
from delivery.sender import Sender, send_lease
from inbox.factories import RecipientFactory

pytestmark = pytest.mark.django_db


class _Blocking:
    """A webhook channel whose sends wait until the test lets them go."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[str] = []

    def send(self, outgoing) -> None:
        self.release.wait(10)
        self.sent.append(outgoing.notification_id)


CONTENT = {"kind": "custom", "message": "hi", "created_at": "2026-11-22T10:00:00+00:00"}


def _leased(items: list[ScheduledItem]) -> int:
    """How many of the items are held under a lease (due far ahead) rather than due now."""
    return ScheduledItem.objects.filter(id__in=[i.id for i in items], due_at__gt=timezone.now() + send_lease() / 2).count()


def _sends(n: int) -> list[ScheduledItem]:
    items = []
    for i in range(n):
        recipient = RecipientFactory(external_id=f"r{i}", push_endpoint="https://hooks.example.com/in")
        row = ChannelDeliveryFactory(recipient_external_id=recipient.external_id, content=CONTENT)
        items.append(ScheduledItemFactory(key=f"send:{row.id}", payload={"channel_delivery": row.id}))
    return items


def test_a_send_whose_lane_is_full_is_given_back_due_as_it_was(settings):
    settings.CHANNEL_HOST_CONCURRENCY = 4
    items = _sends(5)
    channel = _Blocking()
    sender = Sender(channels={"webhook": channel}, stop=StopFlag(), on_recorded=lambda *_: None)
    try:
        assert sender._release() == 4
        assert _leased(items) == 4  # the fifth is due now, not leased
    finally:
        channel.release.set()
        sender.pool.shutdown(wait=True)


def test_a_database_blip_right_after_a_release_never_holds_a_send_for_its_lease(settings, monkeypatch):
    """Found in CI: the database dropped between the release and giving back the send whose lane was
    full; the give-back was lost and that send waited for its lease (a minute) to end."""
    settings.CHANNEL_HOST_CONCURRENCY = 4
    items = _sends(5)
    channel = _Blocking()
    sender = Sender(channels={"webhook": channel}, stop=StopFlag(), on_recorded=lambda *_: None)
    real_give_back = scheduler.give_back
    calls = []

    def flaky_give_back(due):
        calls.append(list(due))
        if len(calls) == 1:
            raise OperationalError("terminating connection due to administrator command")
        return real_give_back(due)

    monkeypatch.setattr(scheduler, "give_back", flaky_give_back)
    try:
        with pytest.raises(OperationalError):
            sender._release()  # the sender's loop logs it and tries again after a backoff
        assert _leased(items) == 5  # four in flight, one not given back yet
        sender._give_back()  # the loop's next pass
        assert _leased(items) == 4 and sender.unsent == []
        assert sender._release() == 0  # its lane is still full: nothing more released, nothing lost
    finally:
        channel.release.set()
        sender.pool.shutdown(wait=True)
    assert len(channel.sent) == 4


def test_released_items_are_given_back_when_reading_their_sends_fails(monkeypatch):
    items = _sends(2)
    sender = Sender(channels={"webhook": _Blocking()}, stop=StopFlag(), on_recorded=lambda *_: None)

    def failing(**_):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("delivery.services.channel_sends_of", failing)
    with pytest.raises(OperationalError):
        sender._release()
    assert len(sender.unsent) == 2 and _leased(items) == 2
    monkeypatch.undo()
    sender._give_back()
    assert _leased(items) == 0
    sender.pool.shutdown(wait=True)
