"""Steps the browser tests share."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

PASSWORD = "correct horse battery"  # tests.factories.UserFactory's


def sign_in(browser: Any, base: str, username: str) -> None:
    """Signs ``username`` in through the login page; waits for the dashboard."""
    browser.get(base + "/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    WebDriverWait(browser, 20).until(expected_conditions.url_to_be(base + "/"))
