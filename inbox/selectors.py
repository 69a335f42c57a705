from django.db.models import QuerySet

from inbox.models import Notification


def notification_list(*, recipient_external_id: str) -> QuerySet[Notification]:
    """One recipient's inbox (ordering is the paginator's: newest first). An unknown recipient has an
    empty inbox: the product may read a feed before its first notification arrives."""
    return Notification.objects.filter(recipient__external_id=recipient_external_id)
