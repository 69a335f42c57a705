from django.db.models import QuerySet

from inbox.models import Notification, Recipient


def notification_list(*, recipient_external_id: str) -> QuerySet[Notification]:
    """One recipient's inbox (ordering is the paginator's: newest first). An unknown recipient has an
    empty inbox: the product may read a feed before its first notification arrives."""
    return Notification.objects.filter(recipient__external_id=recipient_external_id)


def recipient_list(*, email: str | None = None, locale: str | None = None, attributes: dict[str, str] | None = None):
    recipients = Recipient.objects.all()
    if email:
        recipients = recipients.filter(email__iexact=email)
    if locale:
        recipients = recipients.filter(locale=locale)
    for name, value in (attributes or {}).items():
        recipients = recipients.with_attribute(name, value)
    return recipients
