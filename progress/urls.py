from django.urls import path

from progress.views import progress_events

urlpatterns = [path("progress/events", progress_events, name="progress-events")]
