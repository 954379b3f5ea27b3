"""Streaming CSV / JSON / HTML exports and the JSONL import, used by the built-in jobs.

Rows come from iterators (`.iterator()` querysets), are written one at a time to a temporary
file next to the target and renamed when complete, so memory stays flat in the number of rows
and a half-written export is never offered. The `JobFile` row is written at the end.
"""

from __future__ import annotations

import contextlib
import csv
import html
import json
import os
import secrets
import string
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from django.db.models import QuerySet

from coordinator.models import User
from jobs import conf
from jobs.context import JobContext
from jobs.models import JobFile
from jobs.registry import Choice

RowSource = Callable[..., Iterator[dict[str, Any]]]
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class ExportDataset:
    """What an app offers to the exports: its rows (`rows(user=..., everything=...)`) and columns."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: RowSource


# Filled by each app's `jobs.py` (imported at start-up by the jobs app), in INSTALLED_APPS order.
_DATASETS: dict[str, ExportDataset] = {}


def dataset_register(*, name: str, title: str, columns: Sequence[str], rows: RowSource) -> None:
    """Offer a dataset to the CSV, JSON and HTML exports; registering a name again replaces it."""
    _DATASETS[name] = ExportDataset(name=name, title=title, columns=tuple(columns), rows=rows)


def dataset_get(name: str) -> ExportDataset:
    try:
        return _DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; use one of {dataset_names()}") from None


def dataset_names() -> list[str]:
    return list(_DATASETS)


class DatasetName(Choice):
    """A job argument naming one of the registered datasets."""

    @classmethod
    def choices(cls) -> list[str]:
        return dataset_names()


def new_filename(prefix: str, ext: str) -> str:
    """BookLogr's name scheme: `<prefix>_<yymmdd>_<8 random [A-Za-z0-9]>.<ext>`."""
    stamp = datetime.now(UTC).strftime("%y%m%d")
    return f"{prefix}_{stamp}_{''.join(secrets.choice(_ALPHABET) for _ in range(8))}.{ext}"


_dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str).encode


def _cell(value: Any) -> Any:
    # Exact type checks first: this runs for every cell of a million-row export.
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return value
    if value is None:
        return ""
    if kind is dict or kind is list or isinstance(value, dict | list):
        return _dumps(value)
    return str(value)


# A text cell a spreadsheet would read as a formula (OWASP, "CSV Injection"): a device name such as
# `=HYPERLINK(…)` registered by anyone must reach the admin's spreadsheet as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    cell = _cell(value)
    if type(cell) is str and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


class _Writer:
    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle

    def begin(self) -> None: ...

    def dataset(self, name: str, columns: list[str]) -> None: ...

    def row(self, name: str, columns: list[str], row: dict[str, Any]) -> None: ...

    def end_dataset(self, name: str, count: int) -> None: ...

    def finish(self) -> None: ...


class _CsvWriter(_Writer):
    """One file; the first column names the dataset, then the union of the datasets' columns."""

    def __init__(self, handle: IO[str], all_columns: list[str]) -> None:
        super().__init__(handle)
        self.columns = all_columns
        self.writer = csv.writer(handle)

    def begin(self) -> None:
        self.writer.writerow(["dataset", *self.columns])

    def row(self, name: str, columns: list[str], row: dict[str, Any]) -> None:
        get = row.get
        self.writer.writerow([name, *[_csv_cell(get(col)) for col in self.columns]])


class _JsonWriter(_Writer):
    """A JSON array of objects, each with a `dataset` key, written element by element."""

    first = True

    def begin(self) -> None:
        self.handle.write("[")

    def row(self, name: str, columns: list[str], row: dict[str, Any]) -> None:
        self.handle.write("\n" if self.first else ",\n")
        self.first = False
        self.handle.write(
            json.dumps({"dataset": name, **{col: row.get(col) for col in columns}}, ensure_ascii=False, default=str)
        )

    def finish(self) -> None:
        self.handle.write("\n]\n")


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ margin-top: 2rem; font-size: 1.2rem; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} tr:nth-child(even) td {{ background: #fafafa; }}
td.json {{ font-family: monospace; white-space: pre-wrap; }} p.count {{ color: #666; }}
</style></head><body>
<h1>{title}</h1>
<p>Exported {when} for {owner}.</p>
"""


class _HtmlWriter(_Writer):
    """A readable page: one titled table per dataset."""

    def __init__(self, handle: IO[str], owner: str) -> None:
        super().__init__(handle)
        self.owner = owner

    def begin(self) -> None:
        self.handle.write(
            _HTML_HEAD.format(
                title="Coordinator export",
                owner=html.escape(self.owner),
                when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            )
        )

    def dataset(self, name: str, columns: list[str]) -> None:
        title = html.escape(dataset_get(name).title)
        header = "".join(f"<th>{html.escape(col.replace('_', ' '))}</th>" for col in columns)
        self.handle.write(
            f'<section id="{html.escape(name)}"><h2>{title}</h2>\n<table><thead><tr>{header}</tr></thead><tbody>\n'
        )

    def row(self, name: str, columns: list[str], row: dict[str, Any]) -> None:
        cells = []
        for col in columns:
            value = row.get(col)
            css = ' class="json"' if isinstance(value, dict | list) else ""
            cells.append(f"<td{css}>{html.escape(str(_cell(value)))}</td>")
        self.handle.write("<tr>" + "".join(cells) + "</tr>\n")

    def end_dataset(self, name: str, count: int) -> None:
        self.handle.write(f'</tbody></table><p class="count">{count} rows.</p></section>\n')

    def finish(self) -> None:
        self.handle.write("</body></html>\n")


def export_run(ctx: JobContext, *, fmt: str, datasets: Sequence[str] | None, everything: bool) -> dict[str, Any]:
    """Stream the chosen datasets of the job's owner into a new file; record it when complete."""
    user = ctx.user
    if everything and not (user is not None and user.is_admin):
        raise PermissionError("Only admins may export everything.")
    names = list(dict.fromkeys(datasets)) if datasets else dataset_names()
    sources = [(name, list(dataset_get(name).columns), dataset_get(name).rows) for name in names]
    all_columns = list(dict.fromkeys(col for _, columns, _ in sources for col in columns))
    filename = new_filename("export", fmt)
    target = conf.export_root() / filename
    partial = target.with_name(f".{filename}.part")
    counts: dict[str, int] = {}
    total = 0
    try:
        with open(partial, "w", encoding="utf-8", newline="") as handle:
            writer: _Writer
            if fmt == "csv":
                writer = _CsvWriter(handle, all_columns)
            elif fmt == "json":
                writer = _JsonWriter(handle)
            else:
                writer = _HtmlWriter(handle, user.email if user else "everyone")
            writer.begin()
            for index, (name, columns, source) in enumerate(sources):
                writer.dataset(name, columns)
                count = 0
                for row in source(user=user, everything=everything):
                    writer.row(name, columns, row)
                    count += 1
                    if count % 1000 == 0:
                        ctx.report(100 * index / len(sources), f"{name}: {count} rows written", rows=total + count)
                writer.end_dataset(name, count)
                counts[name] = count
                total += count
                ctx.report(100 * (index + 1) / len(sources), f"{name}: {count} rows written", force=True, rows=total)
            writer.finish()
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
    record = JobFile.objects.create(
        filename=filename, owner=user, format=fmt, size=target.stat().st_size, rows=total, job_id=ctx.job_id
    )
    return {"filename": record.filename, "format": fmt, "rows": counts, "size": record.size}


# An export writes its `.part` file row by row: one untouched this long belongs to a job that was
# killed (a running export is either writing or heart-beating, and is recovered long before this).
ORPHAN_PART_SECONDS = 15 * 60


def orphan_parts_remove(*, older_than: float = ORPHAN_PART_SECONDS) -> list[str]:
    """Delete the `.part` files killed exports left behind; returns their names."""
    root = conf.export_root()
    cutoff = time.time() - older_than
    removed = []
    for part in root.glob(".*.part"):
        with contextlib.suppress(FileNotFoundError):
            if part.stat().st_mtime < cutoff:
                part.unlink()
                removed.append(part.name)
    return removed


def upload_store(*, user: User, chunks: Iterator[bytes], suffix: str = "jsonl") -> JobFile:
    """Save an uploaded file under EXPORT_ROOT with a generated name and record it."""
    filename = new_filename("upload", suffix)
    target = conf.export_root() / filename
    size = 0
    with open(target, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            size += len(chunk)
    return JobFile.objects.create(filename=filename, owner=user, format=JobFile.Format.JSONL, size=size, uploaded=True)


def file_path(row: JobFile) -> Path:
    """Where a file row's content lives (the name comes from the database, never the request)."""
    root = conf.export_root()
    path = (root / row.filename).resolve()
    if path.parent != root:
        raise FileNotFoundError(row.filename)
    return path


def uploaded_file(*, user: User | None, filename: str) -> Path:
    """The stored upload `filename` the user may read (admins: anyone's), for an import job."""
    files: QuerySet[JobFile] = JobFile.objects.filter(filename=filename, uploaded=True)
    if user is None:
        files = files.none()
    elif not user.is_admin:
        files = files.filter(owner=user)
    row = files.first()
    if row is None:
        raise FileNotFoundError(f"no uploaded file named {filename!r} for this user")
    return file_path(row)
