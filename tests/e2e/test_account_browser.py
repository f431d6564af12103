"""Accounts in a real headless Chromium against daphne on the live stack: sign up, make an
API token (shown once) and use it, revoke it; the API docs load from this server alone. Each
page passes axe-core (no serious or critical violation), logs no console error and fits a
phone's width; screenshots at desktop and phone width go to test-artifacts/."""

from __future__ import annotations

import pytest
import requests
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from musetalk_site.stack import Stack
from tests.e2e.a11y import PHONE, axe_violations, console_errors, fits_the_width, screenshots
from tests.e2e.pages import wait_for_heading

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "a much longer passphrase 42"


def _check_page(browser, name: str) -> None:
    assert axe_violations(browser) == [], name
    assert console_errors(browser) == [], name
    screenshots(browser, name)
    browser.set_window_size(*PHONE)
    assert fits_the_width(browser), name
    browser.set_window_size(1280, 900)


def _wait_heading(browser, text: str) -> None:
    wait_for_heading(browser, text)


def test_sign_up_then_make_use_and_revoke_a_token(live_stack: Stack, browser):
    base = live_stack.base_url
    browser.get(base + "/")
    WebDriverWait(browser, 20).until(expected_conditions.url_contains("/login/"))
    _check_page(browser, "login")
    browser.find_element(By.LINK_TEXT, "Create an account").click()
    _wait_heading(browser, "Create your account")
    _check_page(browser, "signup")
    browser.find_element(By.ID, "id_username").send_keys("browser-newcomer")
    browser.find_element(By.ID, "id_password1").send_keys(PASSWORD)
    browser.find_element(By.ID, "id_password2").send_keys(PASSWORD + Keys.ENTER)
    _wait_heading(browser, "Your avatars")
    assert "Welcome, browser-newcomer" in browser.find_element(By.TAG_NAME, "body").text

    browser.find_element(By.LINK_TEXT, "API tokens").click()
    _wait_heading(browser, "API tokens")
    assert "No tokens yet" in browser.find_element(By.TAG_NAME, "main").text
    _check_page(browser, "tokens-empty")
    name = browser.find_element(By.ID, "id_name")
    name.send_keys("phone app" + Keys.ENTER)
    key_field = WebDriverWait(browser, 20).until(
        expected_conditions.presence_of_element_located((By.ID, "new-token-key"))
    )
    key = key_field.get_attribute("value")
    assert key.startswith("mtk_")
    _check_page(browser, "tokens-created")
    me = requests.get(base + "/api/me/", headers={"Authorization": f"Token {key}"}, timeout=30)
    assert me.status_code == 200 and me.json()["username"] == "browser-newcomer"

    browser.get(base + "/account/tokens/")
    listed = browser.find_element(By.ID, "token-list").text
    assert "phone app" in listed and key not in browser.page_source  # shown once
    browser.find_element(By.PARTIAL_LINK_TEXT, "Revoke").click()
    _wait_heading(browser, "Revoke “phone app”?")
    _check_page(browser, "token-revoke")
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    _wait_heading(browser, "API tokens")
    assert "revoked" in browser.find_element(By.CSS_SELECTOR, ".messages").text
    me = requests.get(base + "/api/me/", headers={"Authorization": f"Token {key}"}, timeout=30)
    assert me.status_code == 401

    browser.find_element(By.LINK_TEXT, "Usage").click()
    _wait_heading(browser, "Usage")
    assert "Minutes generated this month" in browser.find_element(By.TAG_NAME, "main").text
    _check_page(browser, "usage")


def _sign_up(browser, base: str, username: str) -> None:
    browser.get(base + "/signup/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password1").send_keys(PASSWORD)
    browser.find_element(By.ID, "id_password2").send_keys(PASSWORD + Keys.ENTER)
    _wait_heading(browser, "Your avatars")


def test_keyboard_users_skip_to_the_content_and_see_where_they_are(live_stack: Stack, browser):
    _sign_up(browser, live_stack.base_url, "keyboard-user")
    browser.get(live_stack.base_url + "/account/tokens/")
    ActionChains(browser).send_keys(Keys.TAB).perform()
    focused = browser.switch_to.active_element
    assert focused.get_attribute("outerHTML").startswith('<a class="skip-link"'), (
        focused.get_attribute("outerHTML")
    )
    assert focused.is_displayed() and focused.text == "Skip to content"
    outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    focused.send_keys(Keys.ENTER)
    assert browser.execute_script("return location.hash") == "#main"


def test_the_api_docs_load_from_this_server_alone(live_stack: Stack, browser):
    base = live_stack.base_url
    _sign_up(browser, base, "docs-reader")
    browser.get(base + "/api/docs/")
    WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".opblock"))
    )
    hosts = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => new URL(e.name).host)"
    )
    assert hosts and set(hosts) == {base.split("://")[1]}
    assert "/avatars/prepare" in browser.find_element(By.TAG_NAME, "body").text
    assert console_errors(browser) == []
    screenshots(browser, "api-docs")
