"""``GET /avatars/{id}/thumbnail``: a square still around the prepared face, made once."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from avatars.models import Avatar
from avatars.services import avatar_thumbnail
from avatars.services.avatar import avatar_dir
from tests.factories import AvatarFactory

pytestmark = pytest.mark.django_db

FACE = (100, 40, 160, 120)  # x1, y1, x2, y2 in a 320x240 frame


def _prepared(owner) -> Avatar:
    avatar = AvatarFactory(owner=owner, avatar_id="anna", status=Avatar.Status.READY)
    folder = avatar_dir(avatar)
    (folder / "frames").mkdir(parents=True)
    frame = Image.new("RGB", (320, 240), (0, 0, 255))
    frame.paste((255, 0, 0), FACE)  # the "face" is red, the rest blue
    frame.save(folder / "frames" / "00000000.png")
    Image.new("RGB", (320, 240), (0, 255, 0)).save(folder / "frames" / "00000001.png")
    (folder / "boxes.json").write_text(json.dumps({"face_boxes": [list(FACE), list(FACE)]}))
    return avatar


def test_the_thumbnail_is_a_square_around_the_face_of_the_first_frame(api):
    avatar = _prepared(api.user)
    response = api.get("/avatars/anna/thumbnail")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert image.size == (256, 256)
    red, green, blue = image.getpixel((128, 128))
    assert red > 200 and green < 60 and blue < 60  # the face at the centre
    assert image.getpixel((2, 2))[2] > 200  # blue around it, from the same (first) frame
    assert (avatar_dir(avatar) / "thumbnail.jpg").is_file()  # made once, kept


def test_a_second_call_serves_the_same_file():
    avatar = _prepared(AvatarFactory().owner)
    first = avatar_thumbnail(avatar=avatar)
    stamp = first.stat().st_mtime_ns
    assert avatar_thumbnail(avatar=avatar) == first and first.stat().st_mtime_ns == stamp


def test_no_thumbnail_before_preparation_or_for_another_user(api, other_api):
    AvatarFactory(owner=api.user, avatar_id="fresh", status=Avatar.Status.PREPARING)
    assert api.get("/avatars/fresh/thumbnail").status_code == 404
    _prepared(api.user)
    assert other_api.get("/avatars/anna/thumbnail").status_code == 404


def test_the_gallery_links_the_still_of_this_preparation(client):
    """Browsers keep a thumbnail 5 min: the gallery's link changes when the avatar does
    (prepared again), so the new still shows at once."""
    import re

    avatar = _prepared(AvatarFactory().owner)
    client.force_login(avatar.owner)

    def link() -> str:
        page = client.get("/").content.decode()
        return re.search(r'<img src="(/avatars/anna/thumbnail[^"]*)"', page).group(1)

    first = link()
    assert first == f"/avatars/anna/thumbnail?v={int(avatar.updated_at.timestamp())}"
    assert client.get(first).status_code == 200
    Avatar.objects.filter(pk=avatar.pk).update(updated_at=avatar.updated_at.replace(year=2030))
    assert link() != first
