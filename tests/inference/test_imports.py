"""Process boundaries: inference/ never imports Django; the web process never imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from musetalk_site.stack import BASE_DIR

FORBIDDEN_IN_INFERENCE = ("django", "channels", "dramatiq", "rest_framework", "daphne")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_inference_sources_never_import_the_web_stack():
    offenders = {
        str(path.relative_to(BASE_DIR)): sorted(
            _imported_modules(path) & set(FORBIDDEN_IN_INFERENCE)
        )
        for path in (BASE_DIR / "inference").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_engine_imports_without_django_loaded():
    out = _run(
        "import sys, inference.pipeline, inference.cli; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_INFERENCE!r}))"
    )
    assert out == "[]"


def test_the_web_process_never_imports_torch():
    out = _run(
        "import os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'musetalk_site.settings');"
        "from musetalk_site.asgi import application;"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "import avatars.apis, avatars.views, avatars.consumers, musetalk_site.uploads;"
        "print('torch' in sys.modules)"
    )
    assert out == "False"
