"""WSGI entry point: the REST API and the admin, served by a multi-process WSGI server.

The task farm's per-task worker requests are answered by `farm.api.fastpath` in front of Django
(the same services, authentication and answers; everything else goes to Django)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")

django_application = get_wsgi_application()

from farm.api.fastpath import FarmFastPath  # noqa: E402  (needs the apps loaded)

application = FarmFastPath(django_application)
