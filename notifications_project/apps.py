from django.apps import AppConfig


class NotificationsProjectConfig(AppConfig):
    """The project's own app: API access (tokens, permissions) and shared API behaviour."""

    name = "notifications_project"
    verbose_name = "API access"
