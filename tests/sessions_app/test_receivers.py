"""What sessions do when an avatar changes, told by the avatars app's signals."""

from __future__ import annotations

import pytest

from avatars.services import avatar_delete
from sessions_app.hls.services import hls_root
from tests.factories import AvatarFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_deleting_an_avatar_removes_its_hls_idle_parts(redis_server: str) -> None:
    avatar, other = AvatarFactory(), AvatarFactory()
    parts, kept = hls_root() / avatar.storage_key, hls_root() / other.storage_key
    for folder in (parts, kept):
        (folder / "1a-2b").mkdir(parents=True)
        (folder / "1a-2b" / "idle_000.mp4").write_bytes(b"part")

    avatar_delete(avatar=avatar)

    assert not parts.exists()
    assert (kept / "1a-2b" / "idle_000.mp4").is_file()
