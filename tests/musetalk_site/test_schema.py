from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from avatars.models import Avatar
from tests.factories import AvatarFactory, UserFactory

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


def test_the_schema_is_valid_openapi_and_builds_without_a_warning(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert target.read_text().startswith("openapi: 3.")


@pytest.fixture
def schema() -> dict:
    client = APIClient()
    client.force_authenticate(UserFactory())
    return client.get("/api/schema/", HTTP_ACCEPT=OPENAPI).json()


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def _ref(response: dict, media_type: str = "application/json") -> str:
    return response["content"][media_type]["schema"]["$ref"].rsplit("/", 1)[1]


def test_the_lists_are_documented_as_pages_with_limit_and_offset(schema):
    for path in ("/avatars/", "/generate/", "/sessions/"):
        operation = schema["paths"][path]["get"]
        assert {p["name"] for p in operation["parameters"]} == {"limit", "offset"}, path
        page = schema["components"]["schemas"][_ref(operation["responses"]["200"])]
        assert set(page["properties"]) == {"count", "next", "previous", "results"}, path
        assert page["properties"]["results"]["type"] == "array"


def test_every_error_answer_is_the_one_error_body(schema):
    error = schema["components"]["schemas"]["Error"]
    assert error["properties"]["message"]["type"] == "string"
    assert error["properties"]["extra"]["type"] == "object"
    assert set(error["required"]) == {"message", "extra"}
    for path, method, operation in _operations(schema):
        errors = {code: r for code, r in operation["responses"].items() if code >= "400"}
        if path in ("/health", "/capabilities"):
            continue  # /health's 503 is the health report itself; /capabilities cannot fail
        assert errors, f"{method} {path} documents no error answer"
        for code, response in errors.items():
            assert _ref(response) == "Error", f"{method} {path} {code}"
            assert response["description"], f"{method} {path} {code}"


def test_the_common_error_answers_follow_from_each_view(schema):
    for path, method, operation in _operations(schema):
        codes = set(operation["responses"])
        authenticated = any(requirement for requirement in operation.get("security", []))
        if authenticated:
            assert "401" in codes, f"{method} {path}"
        looks_up = "{" in path or path in (
            "/generate",
            "/generate/stream",
            "/sessions/create",
            "/hls/sessions/create",
            "/hls/groups/create",
            "/webrtc/sessions/create",
        )  # an avatar_id
        assert ("404" in codes) == looks_up, f"{method} {path}"
        assert ("403" in codes) == (authenticated and method not in ("GET", "HEAD")), path
    responses = {
        (path, method): set(operation["responses"])
        for path, method, operation in _operations(schema)
    }
    assert responses[("/avatars/prepare", "POST")] >= {"400", "409", "413", "415"}
    assert responses[("/sessions/{session_id}/stream", "POST")] >= {"400", "409", "410", "413"}
    assert responses[("/hls/{session_id}/playlist.m3u8", "GET")] >= {"410", "503"}
    assert responses[("/avatars/prepare", "POST")] >= {"411", "413", "415"}
    assert responses[("/generate", "POST")] >= {"403", "404", "409", "429"}
    assert responses[("/sessions/create", "POST")] >= {"403", "404", "409"}
    assert responses[("/api/auth/token/", "POST")] == {"200", "400", "401", "413", "415", "429"}
    assert responses[("/api/me/", "GET")] == {"200", "401"}
    assert responses[("/avatars/", "GET")] == {"200", "401"}
    assert responses[("/health", "GET")] == {"200", "503"}


def test_an_answer_given_for_two_reasons_names_both(schema):
    forbidden = schema["paths"]["/avatars/prepare"]["post"]["responses"]["403"]["description"]
    assert "quota" in forbidden and "CSRF" in forbidden


def test_each_cache_path_has_its_one_operation(schema):
    paths = schema["paths"]
    assert set(paths["/avatars/{avatar_id}/cache/status"]) == {"get"}
    assert set(paths["/avatars/{avatar_id}/cache/warm"]) == {"post"}
    assert set(paths["/avatars/{avatar_id}/cache"]) == {"delete"}


def test_a_cache_path_refuses_the_other_operations(django_capture_on_commit_callbacks):
    avatar = AvatarFactory(status=Avatar.Status.READY)
    client = APIClient()
    client.force_authenticate(avatar.owner)
    base = f"/avatars/{avatar.avatar_id}/cache"
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(f"{base}/status").status_code == 405
        assert client.delete(f"{base}/status").status_code == 405
        assert client.get(f"{base}/warm").status_code == 405
        assert client.delete(f"{base}/warm").status_code == 405
        assert client.get(base).status_code == 405
        assert client.post(base).status_code == 405
    assert callbacks == []
    assert client.get(f"{base}/status").json()["avatar_id"] == avatar.avatar_id


def test_a_page_never_holds_more_than_the_largest_limit():
    owner = UserFactory()
    AvatarFactory.create_batch(3, owner=owner)
    client = APIClient()
    client.force_authenticate(owner)
    for limit in ("2", str(10**30), "-1", "x"):
        response = client.get("/avatars/", {"limit": limit, "offset": "0"})
        assert response.status_code == 200, (limit, response.content)
        assert response.json()["count"] == 3
    assert len(client.get("/avatars/", {"limit": "2"}).json()["results"]) == 2
    assert client.get("/avatars/", {"offset": str(10**30)}).json()["results"] == []


def test_the_docs_page_loads_swagger_ui_from_this_server_only(client):
    client.force_login(UserFactory())
    page = client.get("/api/docs/").content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any("swagger-ui-bundle.js" in source for source in sources), sources
    assert [source for source in sources if re.match(r"(https?:)?//", source)] == []
    for source in sources:  # every file it names is served here
        assert client.get(source).status_code == 200, source
