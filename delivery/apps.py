from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "delivery"
    verbose_name = "Delivery pipeline"

    def ready(self) -> None:
        from campaigns import selectors as campaign_selectors
        from delivery.selectors import campaign_notification_settled

        # A held campaign's later parts leave out the recipients an earlier part reached (the ledger's say).
        campaign_selectors.settled_condition_register(campaign_notification_settled)
