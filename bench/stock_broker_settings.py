"""The platform's settings with django-q2's stock ORM broker: the baseline `bench/jobs.py` measures
the LISTEN/NOTIFY broker against (`DJANGO_SETTINGS_MODULE=bench.stock_broker_settings`)."""

from coordinator.settings import *  # noqa: F403
from coordinator.settings import Q_CLUSTER

Q_CLUSTER = {**Q_CLUSTER, "broker_class": None}
