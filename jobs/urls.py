from django.urls import path

from jobs.api.booklogr import (
    FileDownloadApi,
    FileListApi,
    TaskCancelApi,
    TaskDetailApi,
    TaskListApi,
    TaskRerunApi,
    TaskRetryApi,
)
from jobs.api.pytasks import (
    PytasksPingApi,
    PytasksProtectedApi,
    PytasksTaskCreateApi,
    PytasksTaskDetailApi,
    PytasksTaskListApi,
    PytasksTokenApi,
)
from jobs.api.schedules import ScheduleDetailApi, ScheduleListApi

urlpatterns = [
    path("v1/tasks", TaskListApi.as_view(), name="job-list"),
    path("v1/tasks/<int:task_id>", TaskDetailApi.as_view(), name="job-detail"),
    path("v1/tasks/<int:task_id>/retry", TaskRetryApi.as_view(), name="job-retry"),
    path("v1/tasks/<int:task_id>/cancel", TaskCancelApi.as_view(), name="job-cancel"),
    path("v1/tasks/<int:task_id>/rerun", TaskRerunApi.as_view(), name="job-rerun"),
    path("v1/schedules", ScheduleListApi.as_view(), name="schedule-list"),
    path("v1/schedules/<int:schedule_id>", ScheduleDetailApi.as_view(), name="schedule-detail"),
    path("v1/files", FileListApi.as_view(), name="jobfile-list"),
    path("v1/files/<str:filename>", FileDownloadApi.as_view(), name="jobfile-download"),
    path("task", PytasksTaskCreateApi.as_view(), name="pytasks-task-create"),
    path("task/<str:task_id>", PytasksTaskDetailApi.as_view(), name="pytasks-task-detail"),
    path("tasks", PytasksTaskListApi.as_view(), name="pytasks-task-list"),
    path("ping", PytasksPingApi.as_view(), name="pytasks-ping"),
    path("token", PytasksTokenApi.as_view(), name="pytasks-token"),
    path("protected", PytasksProtectedApi.as_view(), name="pytasks-protected"),
]
