"""A device client process for the concurrency test: answers tasks over HTTP, prints status codes.

Usage: python device_worker.py BASE_URL JSON  where JSON is a list of [token, parent_id, status].
"""

from __future__ import annotations

import json
import sys

import requests


def main() -> None:
    base, jobs = sys.argv[1], json.loads(sys.argv[2])
    session = requests.Session()
    codes = []
    for token, parent_id, status in jobs:
        response = session.post(
            f"{base}/pool/response",
            json={"parent_id": parent_id, "status": status, "body": f"{status} from worker"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        codes.append([parent_id, token[-12:], status, response.status_code])
    print(json.dumps(codes))


if __name__ == "__main__":
    main()
