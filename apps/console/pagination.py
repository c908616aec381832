"""One pagination rule for every console table.

Failure mode prevented: a table that renders every row of a large tenant (10k documents, years of audit
events) and takes seconds; each page is a bounded slice, and a page number out of range shows the last
page instead of an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest

# Rows per table page: a screenful or two, and a bounded query whatever the tenant's size.
PAGE_SIZE = 50


def console_page(request: HttpRequest, items: QuerySet | Sequence, *, per_page: int = PAGE_SIZE) -> Page:
    """The page of `items` named by the request's `page` parameter (1 when missing or not a number)."""
    return Paginator(items, per_page).get_page(request.GET.get("page"))
