"""Accessibility and console checks of a page open in the test browser (axe-core, vendored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import ARTIFACTS_DIR

AXE = Path(__file__).resolve().parent.parent / "vendor" / "axe.min.js"
BLOCKING = ("serious", "critical")
PHONE = (390, 844)
DESKTOP = (1280, 900)

RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ["violations"]}).then(
  (result) => done(result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
  }))),
  (error) => done([{id: "axe-error", impact: "critical", help: String(error), nodes: []}]),
);
"""


def axe_violations(browser: Any) -> list[dict[str, Any]]:
    """The page's serious and critical accessibility violations, per axe-core."""
    if not browser.execute_script("return typeof window.axe !== 'undefined'"):
        browser.execute_script(AXE.read_text())
    browser.set_script_timeout(60)
    violations = browser.execute_async_script(RUN_AXE)
    return [v for v in violations if v["impact"] in BLOCKING]


def console_errors(browser: Any) -> list[dict[str, Any]]:
    """SEVERE entries of the browser console since the last read."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def screenshots(browser: Any, name: str) -> None:
    """Save the page at desktop and at phone width (test artifacts); leaves it at desktop."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        browser.set_window_size(*size)
        browser.save_screenshot(str(ARTIFACTS_DIR / f"{name}-{label}.png"))
    browser.set_window_size(*DESKTOP)


def fits_the_width(browser: Any) -> bool:
    """No horizontal scrolling of the whole page at the current width."""
    return bool(
        browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        )
    )
