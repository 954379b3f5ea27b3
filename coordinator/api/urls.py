from django.urls import path

from coordinator.api import views

urlpatterns = [
    path("auth/token/", views.TokenObtainApi.as_view(), name="auth-token-obtain"),
    path("auth/token/refresh/", views.TokenRefreshApi.as_view(), name="auth-token-refresh"),
    path("auth/token/verify/", views.TokenVerifyApi.as_view(), name="auth-token-verify"),
    path("auth/me/", views.MeApi.as_view(), name="auth-me"),
    path("healthz", views.HealthApi.as_view(), name="healthz"),
]
