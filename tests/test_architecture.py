"""The import contract (``.importlinter``, README "Architecture") holds, and covers everything.

``lint-imports`` checks the static import graph. Two things it cannot see are checked here:
that every module of ``musetalk_site`` is classified as ground or wiring (so a new module
cannot slip past the contract), and what the web process imports at run time through
settings strings (middleware, DRF classes, the broker's middleware).
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from musetalk_site.stack import BASE_DIR

# The wiring: the only modules that name every app.
WIRING = {"__init__", "asgi", "routing", "selectors", "settings", "stats_apis", "urls", "views"}


def _contract_sources(name: str) -> set[str]:
    config = configparser.ConfigParser()
    config.read(BASE_DIR / ".importlinter")
    return set(config[f"importlinter:contract:{name}"]["source_modules"].split())


def test_the_import_contract_holds() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_module_of_musetalk_site_is_ground_or_wiring() -> None:
    package = BASE_DIR / "musetalk_site"
    modules = {path.stem for path in package.glob("*.py")}
    modules |= {path.parent.name for path in package.glob("*/__init__.py")}
    ground = {name.removeprefix("musetalk_site.") for name in _contract_sources("ground")}
    assert not ground & WIRING
    assert modules == ground | WIRING, "classify each new module in .importlinter or WIRING"


def test_the_web_process_never_imports_torch() -> None:
    code = (
        "import os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'musetalk_site.settings');"
        "from musetalk_site.asgi import application;"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "import dramatiq; dramatiq.get_broker();"
        "import avatars.apis, avatars.views, avatars.consumers, musetalk_site.uploads;"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
