from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_unknown_api_paths_answer_json_404():
    response = APIClient().get("/no/such/endpoint")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found.", "extra": {}}


def test_browsers_get_an_html_404():
    response = APIClient().get("/no/such/page", HTTP_ACCEPT="text/html")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_wrong_method_uses_the_error_shape():
    user = UserFactory()
    client = APIClient()
    client.force_authenticate(user)
    response = client.delete("/api/me/")
    assert response.status_code == 405
    assert response.json() == {"message": 'Method "DELETE" not allowed.', "extra": {}}


def test_unauthenticated_uses_the_error_shape():
    response = APIClient().get("/api/me/")
    assert response.status_code == 401
    assert response.json()["message"] == "Authentication credentials were not provided."
