from __future__ import annotations

from typing import Any

# The WebView players (session/MSE, mobile).
urlpatterns: list[Any] = []
