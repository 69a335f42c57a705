"""Dead letters: a record or task set aside with its error and provenance, in the table and, through the
outbox, on the dead-letter topic, in one transaction. Every consumer writes them (the worker, the
dispatcher), so they live here, below both."""

import logging
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from core import metrics, topics
from core.failures import safe_text
from core.messages import DEAD_LETTER_PAYLOAD_BYTES, Envelope, InvalidRecord
from core.models import DeadLetter, DeadLetterReason, OutboxEvent
from core.outbox import outbox_enqueue_many

logger = logging.getLogger("core.dead_letters")


def dead_letter_of(*, envelope: Envelope, error: str) -> DeadLetter:
    """An unsaved dead letter (reason `processing failed`) for a record whose handling failed, with
    the record as consumed and where it was read; the caller adds the ids it knows."""
    origin = envelope.origin
    return DeadLetter(reason=DeadLetterReason.PROCESSING_FAILED, error=error, attempts=1, original_topic=origin.topic,
                      original_partition=origin.partition, original_offset=origin.offset,
                      payload=_record_of(envelope)[:DEAD_LETTER_PAYLOAD_BYTES], created_at=timezone.now())


def _record_of(envelope: Envelope) -> bytes:
    """The record as consumed; for a message that came in a pack, the single record it stands for
    (so that its dead letter replays as that one message)."""
    if envelope.raw is not None:
        return envelope.raw
    return envelope.message.encode() if hasattr(envelope.message, "encode") else b""


def dead_letters_record_invalid(*, records: Sequence[InvalidRecord]) -> None:
    """Records that are not messages of ours go to the dead-letter topic (and table) with the reason."""
    now = timezone.now()
    letters = [
        DeadLetter(
            reason=DeadLetterReason.INVALID_PAYLOAD, error=r.error, original_topic=r.origin.topic,
            original_partition=r.origin.partition, original_offset=r.origin.offset,
            payload=(r.value or b"")[:DEAD_LETTER_PAYLOAD_BYTES], created_at=now,
        )
        for r in records
    ]
    events: list[OutboxEvent] = []
    with transaction.atomic():
        dead_letters_store(letters, events, keys=[(r.key or b"").decode(errors="replace") for r in records])
        outbox_enqueue_many(events=events)
    for r in records:
        logger.warning("dead letter: invalid payload at %s[%d]@%d: %s", r.origin.topic, r.origin.partition, r.origin.offset, r.error)


def dead_letter_write(*, letter: DeadLetter) -> None:
    """Save one dead letter and queue its dead-letter-topic record, in one transaction."""
    events: list[OutboxEvent] = []
    with transaction.atomic():
        dead_letters_store([letter], events)
        outbox_enqueue_many(events=events)


def envelope_dead_letter_raw(*, envelope: Envelope, error: str) -> None:
    """The last resort when even the consumer's own dead-lettering fails on a record's data: a dead
    letter with the record as consumed and where it was read, and nothing taken from its content."""
    dead_letter_write(letter=dead_letter_of(envelope=envelope, error=error))
    origin = envelope.origin
    logger.warning("dead letter: record %s[%d]@%d failed: %s", origin.topic, origin.partition, origin.offset, error)


def dead_letters_store(letters: list[DeadLetter], events: list[OutboxEvent], keys: list[str] | None = None) -> None:
    """Save dead letters and add their dead-letter-topic records (payload, provenance in headers) to events.

    Their text comes from records anyone could produce: made storable first (no NUL, no lone
    surrogate, within each column's length), so that writing a dead letter cannot fail on it."""
    for letter in letters:
        for name in ("error", "notification_id", "channel", "recipient_external_id", "original_topic"):
            field = DeadLetter._meta.get_field(name)
            setattr(letter, name, safe_text(getattr(letter, name), field.max_length))
    keys = [safe_text(k, 200) for k in keys] if keys else None
    DeadLetter.objects.bulk_create(letters)
    for letter in letters:
        metrics.DEAD_LETTERS.labels(letter.reason, letter.channel or "none").inc()
    for i, letter in enumerate(letters):
        headers = {
            "reason": letter.reason, "error": letter.error[:1000], "attempts": letter.attempts,
            "original_topic": letter.original_topic, "original_partition": letter.original_partition,
            "original_offset": letter.original_offset, "notification_id": letter.notification_id,
            "channel": letter.channel,
        }
        key = keys[i] if keys else letter.recipient_external_id
        events.append(OutboxEvent(topic=topics.DLQ.logical, key=key, payload=bytes(letter.payload),
                                  headers={k: v for k, v in headers.items() if v not in ("", None)}))


