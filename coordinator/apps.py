from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class CoordinatorConfig(AppConfig):
    default = True
    name = "coordinator"
    verbose_name = "Users and platform"
    default_auto_field = "django.db.models.BigAutoField"


class CoordinatorAdminConfig(admin_apps.AdminConfig):
    """The Django admin with the platform's own site (branding and a dashboard index)."""

    default = False
    default_site = "coordinator.admin_site.CoordinatorAdminSite"
