from django.apps import AppConfig


class JobsConfig(AppConfig):
    verbose_name = "Background jobs"
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"
