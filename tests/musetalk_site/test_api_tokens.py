"""Named API tokens: made, looked up, noted when used, revoked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from musetalk_site import api_tokens
from musetalk_site.api_tokens import (
    KEY_PREFIX,
    api_token_create,
    api_token_revoke,
    api_token_user,
    api_tokens_for_user,
)
from musetalk_site.errors import ApplicationError
from musetalk_site.models import ApiToken
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_new_key_opens_its_owners_account_and_only_its_digest_is_kept():
    user = UserFactory()
    made = api_token_create(user=user, name="  iOS app ")
    assert made.key.startswith(KEY_PREFIX) and len(made.key) > 40
    row = ApiToken.objects.get()
    assert row.name == "iOS app" and made.key.startswith(row.prefix)
    assert made.key not in {row.digest, row.prefix, row.name}
    assert api_token_user(key=made.key) == user
    assert api_token_user(key=made.key[:-1] + "x") is None
    assert api_token_user(key="not-a-key") is None


def test_two_keys_never_repeat():
    user = UserFactory()
    keys = {api_token_create(user=user, name=f"app {i}").key for i in range(20)}
    assert len(keys) == 20


def test_the_last_use_is_noted_at_most_once_a_minute():
    made = api_token_create(user=UserFactory(), name="server")
    assert made.token.last_used_at is None
    api_token_user(key=made.key)
    first = ApiToken.objects.get().last_used_at
    assert first is not None
    api_token_user(key=made.key)
    assert ApiToken.objects.get().last_used_at == first  # not a write per request
    earlier = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.update(last_used_at=earlier)
    api_token_user(key=made.key)
    assert ApiToken.objects.get().last_used_at > earlier


def test_names_are_required_and_unique_per_user():
    user, other = UserFactory(), UserFactory()
    api_token_create(user=user, name="ci")
    with pytest.raises(ApplicationError) as taken:
        api_token_create(user=user, name="ci")
    assert taken.value.status_code == 409
    api_token_create(user=other, name="ci")  # another user's names are theirs
    for name in ("", "   ", "x" * 65):
        with pytest.raises(ApplicationError):
            api_token_create(user=user, name=name)
    assert ApiToken.objects.filter(user=user).count() == 1


def test_a_user_has_at_most_so_many_tokens(monkeypatch):
    monkeypatch.setattr(api_tokens, "TOKENS_MAX", 2)
    user = UserFactory()
    api_token_create(user=user, name="a")
    api_token_create(user=user, name="b")
    with pytest.raises(ApplicationError) as refused:
        api_token_create(user=user, name="c")
    assert refused.value.status_code == 409


def test_a_revoked_key_stops_working_and_only_its_owner_can_revoke_it():
    user, other = UserFactory(), UserFactory()
    made = api_token_create(user=user, name="old")
    with pytest.raises(ApplicationError) as foreign:
        api_token_revoke(user=other, token_id=made.token.pk)
    assert foreign.value.status_code == 404
    assert api_token_user(key=made.key) == user
    api_token_revoke(user=user, token_id=made.token.pk)
    assert api_token_user(key=made.key) is None
    assert list(api_tokens_for_user(user=user)) == []


def test_the_key_of_an_inactive_user_opens_nothing():
    user = UserFactory()
    made = api_token_create(user=user, name="x")
    user.is_active = False
    user.save()
    assert api_token_user(key=made.key) is None


def test_a_users_tokens_are_listed_newest_first_and_only_theirs():
    user = UserFactory()
    api_token_create(user=user, name="first")
    api_token_create(user=user, name="second")
    api_token_create(user=UserFactory(), name="someone else's")
    assert [t.name for t in api_tokens_for_user(user=user)] == ["second", "first"]
