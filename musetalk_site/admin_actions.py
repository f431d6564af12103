from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from musetalk_site.errors import ApplicationError


def run_admin_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    items: Iterable[Any],
    action: Callable[[Any], object],
    verb: str,
) -> None:
    """Apply a service to each selected row; report refusals instead of failing the batch."""
    done = 0
    for item in items:
        try:
            action(item)
        except ApplicationError as exc:
            modeladmin.message_user(request, exc.message, level=messages.WARNING)
        else:
            done += 1
    if done:
        modeladmin.message_user(request, f"{verb} {done} item(s).", level=messages.SUCCESS)
