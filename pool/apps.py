from django.apps import AppConfig


class PoolConfig(AppConfig):
    verbose_name = "Device task pool"
    name = "pool"
    default_auto_field = "django.db.models.BigAutoField"
