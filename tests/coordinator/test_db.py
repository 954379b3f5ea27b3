from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from coordinator.db import prepared_cursor
from coordinator.models import User

pytestmark = pytest.mark.django_db

QUERY = "SELECT email FROM coordinator_user WHERE email = %(email)s"


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
        return [row[0] for row in cursor.fetchall()]


def run_query(email: str) -> Any:
    with prepared_cursor() as cursor:
        cursor.execute(QUERY, {"email": email})
        return cursor.fetchone()


def test_prepared_cursor_reads_what_a_plain_cursor_reads(user: User) -> None:
    assert run_query(user.email) == (user.email,)
    assert run_query("nobody@example.com") is None


def test_query_log_shows_the_statement_with_its_values(user: User) -> None:
    with CaptureQueriesContext(connection) as queries:
        run_query(user.email)
    assert len(queries) == 1
    assert user.email in queries.captured_queries[0]["sql"]


def test_database_errors_arrive_as_django_errors(user: User, admin: User) -> None:
    with pytest.raises(IntegrityError), prepared_cursor() as cursor:
        cursor.execute(
            "UPDATE coordinator_user SET email = %(taken)s WHERE id = %(id)s", {"taken": admin.email, "id": user.pk}
        )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_postgresql_plans_the_statement_once_per_connection(user: User) -> None:
    for _ in range(3):
        run_query(user.email)
    assert prepared_statements().count(QUERY.replace("%(email)s", "$1")) == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_preparing_can_be_turned_off_for_poolers(user: User, settings: Any) -> None:
    settings.DATABASE_PREPARED_STATEMENTS = False
    for _ in range(3):
        run_query(user.email)
    assert not any("coordinator_user" in statement for statement in prepared_statements())


@pytest.mark.django_db(transaction=True)
def test_a_statement_first_prepared_in_a_rolled_back_transaction_still_runs(user: User) -> None:
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        assert run_query(user.email) == (user.email,)
        raise RuntimeError("roll back")
    assert run_query(user.email) == (user.email,)


def test_a_failed_statement_does_not_break_the_next_ones(user: User, admin: User) -> None:
    from django.db import transaction

    with pytest.raises(IntegrityError), transaction.atomic(), prepared_cursor() as cursor:
        cursor.execute(
            "UPDATE coordinator_user SET email = %(taken)s WHERE id = %(id)s", {"taken": admin.email, "id": user.pk}
        )
    assert run_query(user.email) == (user.email,)
