from __future__ import annotations

import pytest
from django.urls import reverse

from sessions_app.models import StreamRequest, StreamSession
from tests.factories import StreamRequestFactory, StreamSessionFactory

pytestmark = pytest.mark.django_db


def test_end_action_ends_active_sessions_and_interrupts_their_stream(admin_client):
    session = StreamSessionFactory()
    streaming = StreamRequestFactory(session=session, status=StreamRequest.Status.STREAMING)
    ended = StreamSessionFactory(status=StreamSession.Status.ENDED)
    url = reverse("admin:sessions_app_streamsession_changelist")
    response = admin_client.post(
        url, {"action": "end_sessions", "_selected_action": [session.pk, ended.pk]}, follow=True
    )
    assert "is already ended" in response.content.decode()
    session.refresh_from_db(), streaming.refresh_from_db()
    assert session.status == StreamSession.Status.ENDED and session.ended_at is not None
    assert streaming.status == StreamRequest.Status.INTERRUPTED


def test_session_admin_shows_timings_read_only(admin_client):
    session = StreamSessionFactory()
    page = admin_client.get(
        reverse("admin:sessions_app_streamsession_change", args=[session.pk])
    ).content.decode()
    assert "Expires at" in page
    assert 'name="expires_at"' not in page  # read-only, not an input
