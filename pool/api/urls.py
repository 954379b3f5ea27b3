from django.urls import path

from pool.api import views

urlpatterns = [
    path("pool/register", views.DeviceRegisterApi.as_view(), name="pool-device-register"),
    path("pool/token", views.DeviceTokenApi.as_view(), name="pool-device-token"),
    path("pool/pending", views.PendingApi.as_view(), name="pool-pending"),
    path("pool/response", views.ResponseApi.as_view(), name="pool-response"),
    path("pool/heartbeat", views.HeartbeatApi.as_view(), name="pool-heartbeat"),
    path("pool/task", views.TaskCreateApi.as_view(), name="pool-task-create"),
    path("pool/tasks", views.TaskListApi.as_view(), name="pool-task-list"),
    path("pool/tasks/<str:task_id>", views.TaskDetailApi.as_view(), name="pool-task-detail"),
    path("pool/tasks/<str:task_id>/cancel", views.TaskCancelApi.as_view(), name="pool-task-cancel"),
    path("pool/tasks/<str:task_id>/pause", views.TaskPauseApi.as_view(), name="pool-task-pause"),
    path("pool/tasks/<str:task_id>/resume", views.TaskResumeApi.as_view(), name="pool-task-resume"),
    path("pool/log", views.LogApi.as_view(), name="pool-log"),
    path("pool/devices", views.DeviceListApi.as_view(), name="pool-device-list"),
    path("pool/devices/<int:device_id>", views.DeviceDetailApi.as_view(), name="pool-device-detail"),
]
