"""Site-wide pages: the favicon that browsers ask for on pages without an icon link."""

from __future__ import annotations

import pytest

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_the_favicon_is_served_so_browsers_log_no_404(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    icon = client.get(response["Location"])
    assert icon.status_code == 200 and icon["Content-Type"].startswith("image/svg+xml")


def test_browsers_get_a_page_for_a_missing_path_and_api_clients_json(client):
    client.force_login(UserFactory())
    page = client.get("/dashboard/avatars/nobody/delete/", headers={"accept": "text/html"})
    assert page.status_code == 404 and b"Nothing here" in page.content
    assert b'href="/static/css/site.css"' in page.content  # the site's own layout
    api = client.get("/no/such/path", headers={"accept": "application/json"})
    assert api.status_code == 404 and api.json() == {"message": "Not found.", "extra": {}}
