"""The avatar's HLS idle parts: built in the worker (on avatar_prepared, or by the actor on
first use), only read by the playlists, which answer 503 with Retry-After until then."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from avatars.models import Avatar
from avatars.services.avatar import avatar_dir
from avatars.signals import avatar_prepared
from musetalk_site.redis_conn import redis_client
from sessions_app.hls import IDLE_RETRY_AFTER_SECONDS, hls_idle_build, hls_idle_missing
from sessions_app.hls.idle import hls_idle_home
from sessions_app.models import StreamSession
from sessions_app.tasks import hls_idle_build as hls_idle_build_actor
from sessions_app.tokens import player_token_make
from tests.factories import StreamSessionFactory
from tests.media import make_face_video
from tests.sessions_app.test_hls import parse_m3u8

DEFAULT_QUEUE = "musetalk:dramatiq:default"


def _idle_video(avatar: Avatar, seconds: float = 1.6) -> Path:
    """The idle loop a preparation leaves in the avatar's folder."""
    folder = avatar_dir(avatar)
    folder.mkdir(parents=True, exist_ok=True)
    return make_face_video(folder / "idle.mp4", seconds=seconds, fps=25, size=(64, 80))


@pytest.fixture
def unbuilt(db) -> StreamSession:
    """A session on an avatar prepared before the worker built idle parts."""
    session = StreamSessionFactory(chunk_duration=1.0, fps=25)
    _idle_video(session.avatar)
    return session


def _hls_files() -> list[Path]:
    return sorted((Path(settings.MEDIA_ROOT) / "hls" / "avatars").rglob("*"))


def _built(avatar: Avatar) -> dict[str, float]:
    """Every file of ``avatar``'s idle parts, with its modification time."""
    home = hls_idle_home(avatar)
    return {str(p.relative_to(home)): p.stat().st_mtime_ns for p in home.rglob("*") if p.is_file()}


def _get(session: StreamSession, name: str):
    token = player_token_make(session_id=session.session_id)
    return APIClient().get(f"/hls/{session.session_id}/{name}?token={token}")


def _queued(queue: str) -> list[dict]:
    client = redis_client()
    ids = [raw.decode() for raw in client.lrange(queue, 0, -1)]
    messages = [json.loads(client.hget(queue + ".msgs", i)) for i in ids]
    client.delete(queue, queue + ".msgs")
    return messages


# -- the playlists only read ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["master.m3u8", "playlist.m3u8"])
def test_a_playlist_before_the_idle_parts_answers_503_and_writes_nothing(unbuilt, name):
    response = _get(unbuilt, name)
    assert response.status_code == 503
    assert response["Retry-After"] == str(IDLE_RETRY_AFTER_SECONDS)
    assert response["Access-Control-Allow-Origin"] == "*"
    body = response.json()
    assert set(body) == {"message", "extra"} and "retry" in body["message"]
    assert body["extra"] == {
        "avatar_id": unbuilt.avatar.avatar_id,
        "retry_after": IDLE_RETRY_AFTER_SECONDS,
    }
    assert _hls_files() == []
    assert hls_idle_missing(avatar=unbuilt.avatar)


def test_the_player_page_and_segments_do_not_build_the_parts_either(unbuilt):
    token = player_token_make(session_id=unbuilt.session_id)
    page = Client().get(f"/hls/player/{unbuilt.session_id}?token={token}")
    assert page.status_code == 200
    assert f"/hls/{unbuilt.session_id}/master.m3u8?token={token}" in page.content.decode()
    assert _get(unbuilt, "idle_0.ts").status_code == 404
    assert _hls_files() == []


def test_an_avatar_without_an_idle_video_is_still_a_404(db):
    session = StreamSessionFactory()
    assert _get(session, "playlist.m3u8").status_code == 404
    assert not hls_idle_missing(avatar=session.avatar)  # nothing the worker could build
    assert hls_idle_build(avatar=session.avatar) is False
    assert _hls_files() == []


def test_once_the_worker_built_them_the_playlists_play(unbuilt):
    assert hls_idle_build(avatar=unbuilt.avatar) is True
    assert not hls_idle_missing(avatar=unbuilt.avatar)
    playlist = parse_m3u8(_get(unbuilt, "playlist.m3u8").content.decode())
    assert {entry.uri.split("/")[-1].split("_")[0] for entry in playlist.segments} == {"idle"}
    assert _get(unbuilt, "idle_0.ts").status_code == 200
    master = _get(unbuilt, "master.m3u8")
    assert master.status_code == 200 and "CODECS=" in master.content.decode()


def test_reading_the_playlists_leaves_the_idle_parts_untouched(unbuilt):
    hls_idle_build(avatar=unbuilt.avatar)
    before = _built(unbuilt.avatar)
    for name in ("master.m3u8", "playlist.m3u8", "idle_0.ts", "playlist.m3u8"):
        assert _get(unbuilt, name).status_code == 200
    assert _built(unbuilt.avatar) == before


# -- built in the worker when the avatar is prepared ---------------------------------------


def test_the_avatar_prepared_signal_builds_the_parts(unbuilt):
    avatar_prepared.send(sender=Avatar, avatar=unbuilt.avatar)
    [folder] = [path for path in hls_idle_home(unbuilt.avatar).iterdir() if path.is_dir()]
    assert sorted(path.name for path in folder.iterdir()) == [
        "idle_000.mp4",
        "idle_001.mp4",
        "parts.json",
        "variant.json",
    ]
    assert _get(unbuilt, "master.m3u8").status_code == 200


def test_preparing_again_replaces_the_parts_of_the_previous_idle_loop(unbuilt):
    avatar_prepared.send(sender=Avatar, avatar=unbuilt.avatar)
    [old] = [path for path in hls_idle_home(unbuilt.avatar).iterdir() if path.is_dir()]
    source = _idle_video(unbuilt.avatar, seconds=2.4)
    os.utime(source, ns=(1, 1))  # another idle.mp4: another stamp
    assert _get(unbuilt, "playlist.m3u8").status_code == 503  # not built for this one yet
    assert old.is_dir()  # and the playlist removed nothing
    avatar_prepared.send(sender=Avatar, avatar=unbuilt.avatar)
    [new] = [path for path in hls_idle_home(unbuilt.avatar).iterdir() if path.is_dir()]
    assert new != old and not old.exists()
    parts = json.loads((new / "parts.json").read_text())
    assert [part["duration"] for part in parts] == [1.2, 1.2]  # the new loop: 60 frames


def test_a_failed_build_does_not_fail_the_preparation(unbuilt, caplog):
    (avatar_dir(unbuilt.avatar) / "idle.mp4").write_bytes(b"not a video")
    with caplog.at_level(logging.ERROR, logger="sessions_app.receivers"):
        avatar_prepared.send(sender=Avatar, avatar=unbuilt.avatar)
    assert "building the HLS idle parts failed" in caplog.text
    assert hls_idle_missing(avatar=unbuilt.avatar)
    assert _get(unbuilt, "playlist.m3u8").status_code == 503


# -- built by the actor on first use -------------------------------------------------------


def test_creating_a_session_on_an_old_avatar_queues_the_build(
    api, redis_server, django_capture_on_commit_callbacks
):
    avatar = Avatar.objects.get(owner=api.user, avatar_id="anna")
    _idle_video(avatar)
    _queued(DEFAULT_QUEUE)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/sessions/create?avatar_id=anna").status_code == 200
    [message] = _queued(DEFAULT_QUEUE)
    assert (message["actor_name"], message["args"]) == ("hls_idle_build", [avatar.pk])
    assert _hls_files() == []  # the web process only asked

    hls_idle_build_actor(*message["args"])  # what the worker runs for that message
    assert not hls_idle_missing(avatar=avatar)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/sessions/create?avatar_id=anna").status_code == 200
    assert _queued(DEFAULT_QUEUE) == []  # built: nothing more to ask


def test_a_session_on_an_avatar_without_an_idle_video_queues_nothing(
    api, redis_server, django_capture_on_commit_callbacks
):
    _queued(DEFAULT_QUEUE)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/sessions/create?avatar_id=anna").status_code == 200
    assert _queued(DEFAULT_QUEUE) == []


def test_the_actor_builds_the_parts_of_an_old_avatar_once(unbuilt):
    avatar = unbuilt.avatar
    hls_idle_build_actor(avatar.pk)
    built = _built(avatar)
    assert "parts.json" in {Path(name).name for name in built}
    assert _get(unbuilt, "playlist.m3u8").status_code == 200
    hls_idle_build_actor(avatar.pk)  # a second message: nothing to do
    assert _built(avatar) == built


def test_the_actor_skips_an_avatar_deleted_meanwhile(unbuilt):
    pk = unbuilt.avatar.pk
    Avatar.objects.filter(pk=pk).delete()
    hls_idle_build_actor(pk)
    assert _hls_files() == []
