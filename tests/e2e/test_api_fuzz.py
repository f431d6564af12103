"""Schemathesis against the running stack: every operation of the live ``/api/schema/`` is
called with generated input, valid and invalid, and every answer must be one the schema
documents (status code, content type, body), never a server error.

The budget is small and fixed: a few examples per operation on top of schemathesis' coverage
cases, a fixed seed, one worker, loopback only. Ids and tokens are drawn either from the
generator or from real rows of the caller (``fuzz_hooks.py``): a prepared avatar, jobs, an
open and an ended session, so the answers about existing objects are checked too. The upload
endpoints get generated multipart bodies (never real media): they must answer 4xx.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from avatars.models import Avatar, GenerationJob
from musetalk_site.stack import Stack
from sessions_app.models import StreamSession
from sessions_app.tokens import player_token_make
from tests.e2e.client import ApiClient, ready_avatar_user
from tests.e2e.fuzz_hooks import KNOWN_ENV
from tests.factories import (
    AvatarFactory,
    GenerationJobFactory,
    StreamRequestFactory,
    StreamSessionFactory,
)
from tests.media import make_face_video

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = "application/vnd.oai.openapi+json"
MAX_EXAMPLES = 8  # generated cases per operation and phase
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
CONFIG = """\
hooks = "tests.e2e.fuzz_hooks"
seed = 20260101
workers = 1
request-timeout = 30
headers = {{ Authorization = "Token {token}" }}

[generation]
max-examples = {max_examples}
database = "none"
"""


def _known_rows(owner_name: str) -> dict[str, dict[str, list[str]]]:
    """Real objects of the fuzzing user, in every state an answer depends on; a DELETE gets
    its own (``disposable``)."""
    avatar = Avatar.objects.get(owner__username=owner_name)
    owner = avatar.owner
    jobs = [
        GenerationJobFactory(owner=owner, avatar=avatar, status=status)
        for status in (GenerationJob.Status.QUEUED, GenerationJob.Status.SUCCEEDED)
    ]
    live = StreamSessionFactory(owner=owner, avatar=avatar)
    ended = StreamSessionFactory(owner=owner, avatar=avatar, status=StreamSession.Status.ENDED)
    stream = StreamRequestFactory(session=live)
    spare = AvatarFactory(owner=owner, avatar_id="spare")
    spare_session = StreamSessionFactory(owner=owner, avatar=spare)
    ids = {
        "avatar_id": [avatar.avatar_id],
        "request_id": [job.request_id for job in jobs] + [stream.request_id],
        "session_id": [live.session_id, ended.session_id],
        "name": ["chunk_0001.mp4", "idle_0.ts"],
        "token": [player_token_make(session_id=live.session_id)],
    }
    disposable = {"avatar_id": [spare.avatar_id], "session_id": [spare_session.session_id]}
    return {"ids": ids, "disposable": disposable}


def _operation_count(client: ApiClient) -> int:
    schema = client.get("/api/schema/", headers={"Accept": OPENAPI}).json()
    return sum(len(operations) for operations in schema["paths"].values())


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    live_stack: Stack, tmp_path: Path
):
    video = make_face_video(tmp_path / "face.mp4", seconds=0.8, fps=25, size=(256, 320))
    client = ready_avatar_user(live_stack.base_url, video, "fuzzer", "host")
    known = _known_rows("fuzzer")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(token=client.token, max_examples=MAX_EXAMPLES))
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{live_stack.base_url}/api/schema/",
        "--url",
        live_stack.base_url,
        "--phases",
        "examples,coverage,fuzzing",
        "--checks",
        ",".join(CHECKS),
        "--no-color",
    ]
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env.update({KNOWN_ENV: json.dumps(known), "PYTHONPATH": str(ROOT), "NO_PROXY": "*"})
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20000:]
    tested = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert tested is not None, report[-4000:]
    assert {int(count) for count in tested.groups()} == {_operation_count(client)}, tested[0]
