from django.urls import path

from farm.api import views

urlpatterns = [
    path("token", views.TokenApi.as_view(), name="farm-token"),
    path("run", views.RunCreateApi.as_view(), name="farm-run-create"),
    path("runs", views.RunListApi.as_view(), name="farm-run-list"),
    path("runs/<str:uuid>", views.RunDetailApi.as_view(), name="farm-run-detail"),
    path("runs/<str:uuid>/controls", views.RunControlsApi.as_view(), name="farm-run-controls"),
    path("runs/<str:uuid>/restart", views.RunRestartApi.as_view(), name="farm-run-restart"),
    path("runs/<str:uuid>/task", views.RunTaskClaimApi.as_view(), name="farm-task-claim"),
    path("runs/<str:uuid>/tasks/claim", views.TaskBatchClaimApi.as_view(), name="farm-task-batch-claim"),
    path("runs/<str:uuid>/tasks/done", views.TaskBatchDoneApi.as_view(), name="farm-task-batch-done"),
    path("runs/<str:uuid>/tasks/fail", views.TaskBatchFailApi.as_view(), name="farm-task-batch-fail"),
    path("runs/<str:uuid>/tasks/<int:n>", views.TaskDetailApi.as_view(), name="farm-task-detail"),
    path("worker", views.WorkerCreateApi.as_view(), name="farm-worker-create"),
]
