from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pool.models import Delivery, Message
from pool.services import device_create, task_create
from pool.tokens import device_token_encode
from tests.factories import UserFactory
from tests.live import run_wsgi_server

WORKER = Path(__file__).with_name("device_worker.py")


@pytest.mark.slow
def test_concurrent_responses_from_many_device_processes_lose_nothing(transactional_db):
    master = UserFactory(role="master")
    devices = [device_create(name=f"d{i}", validated=True)[0] for i in range(12)]
    tokens = {d.pk: device_token_encode(device_id=d.pk)[0] for d in devices}
    broadcast = task_create(user=master, to="device:*", title="all")
    listed = task_create(user=master, to="device:[" + ",".join(str(d.pk) for d in devices) + "]")
    direct = {d.pk: task_create(user=master, to=f"device:{d.pk}") for d in devices}

    # Every device: progress then done on the broadcast and the list task, done on its direct
    # task; and its direct task is answered `done` by two processes at once (only one may win).
    per_process: list[list[list[str]]] = [[] for _ in range(6)]
    for i, d in enumerate(devices):
        token = tokens[d.pk]
        jobs = [
            [token, broadcast.msg_id, "progress"],
            [token, broadcast.msg_id, "done"],
            [token, listed.msg_id, "progress"],
            [token, listed.msg_id, "failed"],
        ]
        per_process[i % 6].extend(jobs)
        per_process[i % 6].append([token, direct[d.pk].msg_id, "done"])
        per_process[(i + 3) % 6].append([token, direct[d.pk].msg_id, "done"])

    with run_wsgi_server(workers=4) as base:
        procs = [
            subprocess.Popen([sys.executable, str(WORKER), base, json.dumps(jobs)], stdout=subprocess.PIPE)
            for jobs in per_process
        ]
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0
            results.extend(json.loads(out))

    codes = Counter(code for *_, code in results)
    assert set(codes) <= {201, 409}, codes
    # Each direct task was answered twice concurrently: exactly one 201 and one 409.
    for d in devices:
        answers = [code for parent, _, _, code in results if parent == direct[d.pk].msg_id]
        assert sorted(answers) == [201, 409]
    assert codes[201] == 12 * 5 and codes[409] == 12

    responses = Message.objects.filter(type="response")
    assert responses.count() == 12 * 5
    assert responses.filter(parent_id=broadcast.msg_id, meta__status="done").count() == 12
    assert Counter(Delivery.objects.values_list("state", flat=True)) == {"done": 24, "failed": 12}
    # The list task's last answers came at once from several processes: one of them completed it.
    assert Message.objects.get(pk=listed.pk).state == "completed"
    assert set(Message.objects.filter(pk__in=[t.pk for t in direct.values()]).values_list("state", flat=True)) == {
        "completed"
    }
    assert Message.objects.get(pk=broadcast.pk).state == "in_progress"  # device:* waits for devices to come
