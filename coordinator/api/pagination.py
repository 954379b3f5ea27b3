from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination


class DefaultPagination(PageNumberPagination):
    """`?page=N&page_size=M`, at most 500 rows a page."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def page_of(name: str, item: serializers.Serializer) -> serializers.Serializer:
    """The schema of one `DefaultPagination` page of `item`s (`?page=&page_size=`; a page past the last is a 404)."""
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item,
        },
    )
