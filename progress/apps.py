from django.apps import AppConfig


class ProgressConfig(AppConfig):
    verbose_name = "Live progress"
    name = "progress"
    default_auto_field = "django.db.models.BigAutoField"
