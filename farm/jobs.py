"""The farm's part in background jobs: its export dataset."""

from __future__ import annotations

from farm.selectors import FARM_EXPORT_COLUMNS, farm_export_rows
from jobs.exports import dataset_register

dataset_register(name="farm", title="Farm runs and tasks", columns=FARM_EXPORT_COLUMNS, rows=farm_export_rows)
