"""The dashboard in a real headless Chromium, against daphne on the live stack."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from avatars.models import Avatar
from musetalk_site.stack import Stack
from tests.conftest import ARTIFACTS_DIR
from tests.e2e.pages import wait_for_heading
from tests.factories import AvatarFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_user_signs_in_and_sees_only_their_avatars(live_stack: Stack, browser):
    owner = UserFactory(username="browser-user")
    AvatarFactory(owner=owner, avatar_id="my_presenter", status=Avatar.Status.READY)
    AvatarFactory(avatar_id="someone_elses", status=Avatar.Status.READY)

    browser.get(live_stack.base_url + "/")
    WebDriverWait(browser, 20).until(expected_conditions.url_contains("/login/"))
    browser.find_element(By.NAME, "username").send_keys("browser-user")
    browser.find_element(By.NAME, "password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for_heading(browser, "Your avatars")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "my_presenter" in page and "Ready" in page
    assert "someone_elses" not in page
    assert browser.find_elements(By.ID, "demo-banner") == []  # real profile chosen explicitly
    browser.save_screenshot(str(ARTIFACTS_DIR / "dashboard.png"))
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
