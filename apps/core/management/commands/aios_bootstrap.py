"""Create the admin user and its API token; print secrets only when they are new."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create the 'admin' superuser (password from AIOS_ADMIN_PASSWORD) and an API token."

    def handle(self, *args, **options):
        user_model = get_user_model()
        password = os.environ.get("AIOS_ADMIN_PASSWORD")
        user = user_model.objects.filter(username="admin").first()
        if user is None:
            generated = not password
            password = password or secrets.token_urlsafe(12)
            user = user_model.objects.create_superuser("admin", "admin@localhost", password)
            shown = password if generated else "(from AIOS_ADMIN_PASSWORD)"
            self.stdout.write(f"admin user created: username=admin password={shown}")
        elif password and not user.check_password(password):
            user.set_password(password)
            user.save(update_fields=["password"])
            self.stdout.write("admin password updated from AIOS_ADMIN_PASSWORD")
        else:
            self.stdout.write("admin user exists (password unchanged)")
        token, created = Token.objects.get_or_create(user=user)
        if created:
            self.stdout.write(f"API token for admin (shown once): {token.key}")
        else:
            self.stdout.write(
                "API token for admin exists (manage.py drf_create_token -r admin to rotate)"
            )
