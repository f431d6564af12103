"""HTTPS and CORS settings read from the environment.

The production environment is the one the README's ``check --deploy`` line sets: the test
reads that line and runs it. Behaviour is then checked in this process with the settings a
fresh process computed from that environment.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.factories import UserFactory

BASE_DIR = Path(__file__).resolve().parents[2]
SECURITY_VARIABLES = (
    "HTTPS",
    "TRUST_X_FORWARDED_PROTO",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "CORS_ALLOWED_ORIGINS",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DEBUG",
)
DUMPED = (
    "MIDDLEWARE",
    "INSTALLED_APPS",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "CORS_ALLOWED_ORIGINS",
    "CORS_ALLOW_CREDENTIALS",
)
DUMP_SCRIPT = (
    "import json, django; django.setup(); from django.conf import settings; "
    f"print(json.dumps({{name: getattr(settings, name) for name in {DUMPED!r}}}))"
)
APP = "https://app.example.com"
CORS_PATHS = (
    "/api/me/",
    "/avatars/",
    "/sessions/abc/events",
    "/chunks/stream_req_1/chunk_0001.mp4",
    "/player/chunks/stream_req_1/chunk_0001.mp4",
    "/hls/abc/master.m3u8",
)


def _readme_deploy_line() -> tuple[dict[str, str], list[str]]:
    """The README's one-line ``check --deploy``: its variables and its command."""
    lines = (BASE_DIR / "README.md").read_text().splitlines()
    [line] = [line for line in lines if line.endswith("manage.py check --deploy")]
    words = shlex.split(line)
    assignments = [word for word in words if "=" in word and not word.startswith("-")]
    environ = dict(word.split("=", 1) for word in assignments)
    return environ, words[len(assignments) :]


def _run(args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SECURITY_VARIABLES}
    env.update(environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "musetalk_site.settings")
    return subprocess.run(
        args, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _settings_from(environ: dict[str, str]) -> dict[str, Any]:
    done = _run([sys.executable, "-c", DUMP_SCRIPT], environ)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _apply(settings: Any, dumped: dict[str, Any]) -> None:
    for name, value in dumped.items():
        if name == "SECURE_PROXY_SSL_HEADER" and value is not None:
            value = tuple(value)
        if name == "ALLOWED_HOSTS":
            value = [*value, "testserver"]  # as Django's test set-up does
        if name != "INSTALLED_APPS":
            setattr(settings, name, value)


@pytest.fixture(scope="module")
def production() -> dict[str, Any]:
    return _settings_from(_readme_deploy_line()[0])


@pytest.fixture(scope="module")
def cors() -> dict[str, Any]:
    return _settings_from({"CORS_ALLOWED_ORIGINS": APP})


# -- the environment ------------------------------------------------------------------------


def test_the_readme_production_line_passes_check_deploy_with_no_warning():
    environ, command = _readme_deploy_line()
    assert command == ["python", "manage.py", "check", "--deploy"]
    assert {"HTTPS", "TRUST_X_FORWARDED_PROTO", "SECURE_HSTS_SECONDS"} <= set(environ)
    done = _run([sys.executable, "manage.py", "check", "--deploy"], environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "System check identified no issues (0 silenced)."
    assert "WARNING" not in done.stderr


def test_the_defaults_stay_those_of_local_development():
    dumped = _settings_from({})
    assert not dumped["SESSION_COOKIE_SECURE"] and not dumped["CSRF_COOKIE_SECURE"]
    assert not dumped["SECURE_SSL_REDIRECT"] and dumped["SECURE_HSTS_SECONDS"] == 0
    assert dumped["SECURE_PROXY_SSL_HEADER"] is None
    assert dumped["CORS_ALLOWED_ORIGINS"] == []
    assert "corsheaders" not in dumped["INSTALLED_APPS"]
    assert "corsheaders.middleware.CorsMiddleware" not in dumped["MIDDLEWARE"]


def test_the_production_line_turns_every_https_setting_on(production):
    assert production["SESSION_COOKIE_SECURE"] and production["CSRF_COOKIE_SECURE"]
    assert production["SECURE_SSL_REDIRECT"]
    assert production["SECURE_HSTS_SECONDS"] == 31536000
    assert production["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_bad_values_stop_the_settings_naming_the_variable():
    done = _run([sys.executable, "-c", DUMP_SCRIPT], {"SECURE_HSTS_SECONDS": "a year"})
    assert done.returncode != 0 and "SECURE_HSTS_SECONDS must be an integer" in done.stderr
    done = _run([sys.executable, "manage.py", "check"], {"CORS_ALLOWED_ORIGINS": "example.com"})
    assert done.returncode != 0 and "CORS_ALLOWED_ORIGINS" in done.stderr


# -- HTTPS behind the proxy -----------------------------------------------------------------


@pytest.mark.django_db
def test_plain_http_is_redirected_but_the_health_probe_is_not(settings, production, redis_server):
    _apply(settings, production)
    client = Client(headers={"host": "avatars.example.com"})
    response = client.get("/api/me/")
    assert response.status_code == 301
    assert response["Location"] == "https://avatars.example.com/api/me/"
    probe = Client(headers={"host": "127.0.0.1:8000"}).get("/health")
    assert probe.status_code in (200, 503)


@pytest.mark.django_db
def test_behind_the_proxy_requests_are_secure_with_hsts_and_secure_cookies(settings, production):
    _apply(settings, production)
    client = Client(headers={"host": "avatars.example.com", "x-forwarded-proto": "https"})
    page = client.get("/login/")
    assert page.status_code == 200
    hsts = page["Strict-Transport-Security"]
    assert hsts == "max-age=31536000; includeSubDomains; preload"
    assert page.cookies["csrftoken"]["secure"] is True
    UserFactory(username="ada")
    login = client.post("/login/", {"username": "ada", "password": "correct horse battery"})
    assert login.status_code == 302
    assert login.cookies["sessionid"]["secure"] is True


def test_a_forged_forwarded_proto_is_not_trusted_by_default(settings):
    assert settings.SECURE_PROXY_SSL_HEADER is None
    settings.SECURE_SSL_REDIRECT = True
    client = Client(headers={"x-forwarded-proto": "https"})
    assert client.get("/api/me/").status_code == 301


# -- CORS -----------------------------------------------------------------------------------


def _preflight(client: Client, path: str, origin: str) -> Any:
    return client.options(
        path,
        headers={
            "origin": origin,
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization, last-event-id",
        },
    )


@pytest.mark.django_db
def test_a_preflight_from_an_allowed_origin_needs_no_credentials(settings, cors):
    _apply(settings, cors)
    for path in CORS_PATHS:
        response = _preflight(Client(), path, APP)
        assert response.status_code == 200, path
        assert response["Access-Control-Allow-Origin"] == APP, path
        allowed = response["Access-Control-Allow-Headers"]
        assert "authorization" in allowed and "last-event-id" in allowed, path
        assert "GET" in response["Access-Control-Allow-Methods"], path
        assert "Access-Control-Allow-Credentials" not in response, path


@pytest.mark.django_db(transaction=True)  # the SSE feed is an async view
def test_answers_to_an_allowed_origin_carry_the_header_errors_included(settings, cors):
    _apply(settings, cors)
    client = Client(headers={"origin": APP})
    for path in ("/sessions/abc/events", "/chunks/stream_req_1/chunk_0001.mp4"):
        refused = client.get(f"{path}?token=not-a-token")
        assert refused.status_code == 401, path
        assert refused["Access-Control-Allow-Origin"] == APP, path
        assert "Access-Control-Allow-Credentials" not in refused, path
    key = Token.objects.create(user=UserFactory()).key
    me = client.get("/api/me/", headers={"authorization": f"Token {key}"})
    assert me.status_code == 200 and me["Access-Control-Allow-Origin"] == APP


@pytest.mark.django_db
def test_another_origin_and_the_pages_get_no_cors_headers(settings, cors):
    _apply(settings, cors)
    for path in CORS_PATHS:
        response = _preflight(Client(), path, "https://evil.example.net")
        assert "Access-Control-Allow-Origin" not in response, path
        assert "Access-Control-Allow-Headers" not in response, path
    for page in ("/login/", "/admin/login/", "/hls/player/abc"):
        response = _preflight(Client(), page, APP)
        assert "Access-Control-Allow-Origin" not in response, page


@pytest.mark.django_db
def test_with_cors_off_a_preflight_is_answered_as_before(settings):
    assert settings.CORS_ALLOWED_ORIGINS == []
    assert _preflight(Client(), "/api/me/", APP).status_code == 401
    for path in ("/api/me/", "/sessions/abc/status"):
        bare = Client().options(path)
        preflight = _preflight(Client(), path, APP)
        assert preflight.status_code == bare.status_code, path
        assert preflight.content == bare.content, path
        assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]
