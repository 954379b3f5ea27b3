"""WSGI entry point: the REST API and the admin, served by a multi-process WSGI server."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")

application = get_wsgi_application()
