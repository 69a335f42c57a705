from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create (or rotate) the API token of a service client; the token is the last line of the output."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the service client's name, e.g. 'web-app'")

    def handle(self, *args, name: str, **options):
        user_model = get_user_model()
        with transaction.atomic():
            user, created = user_model.objects.get_or_create(username=name)
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            Token.objects.filter(user=user).delete()
            token = Token.objects.create(user=user)
        self.stdout.write(f"{'New' if created else 'Rotated'} token for service client {name!r}:")
        self.stdout.write(token.key)
