from django.apps import AppConfig


class FarmConfig(AppConfig):
    verbose_name = "Task farm"
    name = "farm"
    default_auto_field = "django.db.models.BigAutoField"
