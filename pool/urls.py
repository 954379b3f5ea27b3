from django.urls import include, path

urlpatterns = [path("", include("pool.api.urls"))]
