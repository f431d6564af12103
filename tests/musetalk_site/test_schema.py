from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

OPENAPI = "application/vnd.oai.openapi+json"


def test_openapi_schema_lists_the_platform_endpoints():
    client = APIClient()
    client.force_authenticate(UserFactory())
    response = client.get("/api/schema/", HTTP_ACCEPT=OPENAPI)
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in ("/api/auth/token/", "/api/me/", "/health"):
        assert path in schema["paths"], path
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_schema_and_docs_need_a_login():
    assert APIClient().get("/api/schema/", HTTP_ACCEPT=OPENAPI).status_code == 401
    response = APIClient().get("/api/docs/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_swagger_ui_is_served_to_signed_in_users(client):
    client.force_login(UserFactory())
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content
