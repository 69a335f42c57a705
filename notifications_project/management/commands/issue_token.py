import re
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = ("Create (or rotate) the API token of a service client; the token is the last line of the output. "
            "With --key-file, the token kept in that file is used (written there the first time): it stays the "
            "same from run to run, even on a new database.")

    def add_arguments(self, parser):
        parser.add_argument("name", help="the service client's name, e.g. 'web-app'")
        parser.add_argument("--key-file", type=Path, help="keep the token in this file and use it again")

    def handle(self, *args, name: str, key_file: Path | None = None, **options):
        kept = key_file.read_text(errors="replace").strip() if key_file is not None and key_file.exists() else ""
        if kept and not re.fullmatch(r"[0-9A-Za-z]{40}", kept):  # an empty file is as if absent
            raise CommandError(f"{key_file} does not hold a token (40 letters and digits): delete it to make a new one")
        user_model = get_user_model()
        with transaction.atomic():
            user, created = user_model.objects.get_or_create(username=name)
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            current = Token.objects.filter(user=user).first()
            if kept and current is not None and current.key == kept:
                token, verb = current, "Kept"
            else:
                Token.objects.filter(user=user).delete()
                if kept:
                    Token.objects.filter(key=kept).delete()  # another client's: the file wins
                token = Token.objects.create(user=user, key=kept) if kept else Token.objects.create(user=user)
                verb = "New" if created or kept else "Rotated"
        if key_file is not None and not kept:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.touch(mode=0o600)
            key_file.write_text(token.key + "\n")
        self.stdout.write(f"{verb} token for service client {name!r}:")
        self.stdout.write(token.key)
