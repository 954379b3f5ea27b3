"""WSGI entry point: the REST API and the admin, served by a multi-process WSGI server."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")

application = get_wsgi_application()

# granian builds each request's environ from the process environment: with the secrets still in
# it, every request.META (and every error report) would carry the secret key and database password.
from coordinator.settings import forget_secret_environment  # noqa: E402

forget_secret_environment()
