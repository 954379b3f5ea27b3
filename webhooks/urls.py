from django.urls import path

from webhooks.api import views

urlpatterns = [
    path("webhooks/", views.WebhookListApi.as_view(), name="webhook-list"),
    path("webhooks/<int:webhook_id>", views.WebhookDetailApi.as_view(), name="webhook-detail"),
]
