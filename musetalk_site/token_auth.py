"""DRF's token authentication, for named API tokens as well as the sign-in token.

Kept apart from :mod:`musetalk_site.auth`: DRF imports its authentication classes while
``rest_framework.views`` loads, before the modules that need that (errors, services) exist.
"""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import TokenAuthentication


class ApiTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>`` with a named API token or the sign-in token."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        from musetalk_site.api_tokens import api_token_user

        named = api_token_user(key=key) if "\x00" not in key else None
        if named is not None:
            return named, None
        return super().authenticate_credentials(key)
