"""Steps the browser tests share, and waits on pages that navigate.

An element found by one WebDriver call and read by the next may belong to a page that has gone
in between (a form submitted, a link followed, a page that reloads itself); Chrome then answers
with an error the stock waits do not expect ("Node with given id does not belong to the
document"). The waits here read the page in one script, and try again until their bound while
the browser is between two documents.
"""

from __future__ import annotations

from typing import Any

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

PASSWORD = "correct horse battery"  # tests.factories.UserFactory's

READ_TEXT = """
const element = document.querySelector(arguments[0]);
return element ? element.innerText : null;
"""


def sign_in(browser: Any, base: str, username: str) -> None:
    """Signs ``username`` in through the login page; waits for the dashboard."""
    browser.get(base + "/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    WebDriverWait(browser, 20).until(expected_conditions.url_to_be(base + "/"))


def page_text(browser: Any, selector: str) -> str | None:
    """The rendered text of the first element ``selector`` matches (None: no such element)."""
    return browser.execute_script(READ_TEXT, selector)


def wait_for_text(browser: Any, selector: str, text: str, timeout: float = 20) -> None:
    """Wait until the element ``selector`` matches shows ``text``, across navigations."""

    def shown(b: Any) -> bool:
        return text in (page_text(b, selector) or "")

    WebDriverWait(browser, timeout, ignored_exceptions=(WebDriverException,)).until(
        shown, f"{selector!r} never showed {text!r}"
    )


def wait_for_heading(browser: Any, text: str, timeout: float = 20) -> None:
    """Wait for the page whose heading (``h1``) shows ``text``."""
    wait_for_text(browser, "h1", text, timeout)
