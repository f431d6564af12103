"""The seed API's WebRTC sessions: ``/webrtc/sessions/...``.

``create`` is a DRF view; the signaling and streaming endpoints are async views, because the
peer connections live on this process's event loop (``services/webrtc.py``): an offer is
answered after ICE gathering without holding a thread. The owner's credentials open every
endpoint; the player token of ``player_url`` opens offer, ice and status (what the player
page does). A session that is not a WebRTC one, ended, expired or another user's is not
found (404). Errors have the usual body ``{"message", "extra"}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from musetalk_site.auth import TOKEN_PARAM, authenticated_user, request_user
from musetalk_site.errors import ApplicationError, error_response
from musetalk_site.params import query_or_form
from musetalk_site.uploads import require_upload
from sessions_app import selectors, services
from sessions_app.apis import SESSION_CREATE_ERRORS
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.services import webrtc
from sessions_app.tokens import webrtc_player_url

View = Callable[..., Coroutine[Any, Any, HttpResponse]]


class WebrtcCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        avatar_id = serializers.CharField(max_length=64)
        user_id = serializers.CharField(max_length=128, required=False, default="")
        batch_size = serializers.IntegerField(default=2, min_value=1, max_value=64)
        fps = serializers.IntegerField(default=25, min_value=1, max_value=60)
        playback_fps = serializers.IntegerField(
            required=False, allow_null=True, default=None, min_value=1, max_value=60
        )
        chunk_duration = serializers.FloatField(default=2.0, min_value=0.2, max_value=30.0)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            playback = attrs.get("playback_fps")
            if playback is not None and playback < attrs["fps"]:
                raise serializers.ValidationError(
                    {"playback_fps": "playback_fps must be at least fps (frames are repeated)."}
                )
            return attrs

    class OutputSerializer(serializers.Serializer):
        session_id = serializers.CharField()
        player_url = serializers.CharField(help_text="The WebRTC player page, with its token")
        avatar_id = serializers.CharField()
        user_id = serializers.CharField()
        ice_servers = serializers.ListField(
            child=serializers.DictField(), help_text="[{urls, username?, credential?}]"
        )
        ice_transport_policy = serializers.ChoiceField(choices=["all", "relay"])
        expires_in_seconds = serializers.IntegerField()
        config = serializers.DictField(
            help_text="fps, playback_fps, batch_size, chunk_duration, prebuffer_seconds"
        )

    @extend_schema(
        parameters=[InputSerializer],
        request=None,
        responses={200: OutputSerializer, **SESSION_CREATE_ERRORS},
        tags=["webrtc"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=query_or_form(request))
        data.is_valid(raise_exception=True)
        session = services.session_create(
            owner=authenticated_user(request),
            kind=StreamSession.Kind.WEBRTC,
            **data.validated_data,
        )
        return Response(self.OutputSerializer(webrtc_created_payload(session)).data)


def webrtc_created_payload(session: StreamSession) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "player_url": webrtc_player_url(session_id=session.session_id),
        "avatar_id": session.avatar.avatar_id,
        "user_id": session.user_id,
        "ice_servers": webrtc.ice_servers(),
        "ice_transport_policy": settings.WEBRTC_ICE_TRANSPORT_POLICY,
        "expires_in_seconds": settings.SESSION_TTL_SECONDS,
        "config": webrtc.webrtc_config(session),
    }


# -- async endpoints ----------------------------------------------------------------------------


def endpoint(*methods: str) -> Callable[[View], View]:
    """An async JSON endpoint: only ``methods``, known failures as the error body."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                allowed = ", ".join(methods)
                response = error_response(
                    ApplicationError(f"Method {request.method} not allowed.", status=405)
                )
                response["Allow"] = allowed
                return response
            try:
                return await view(request, *args, **kwargs)
            except Exception as exc:
                return error_response(exc)

        return wrapped

    return decorate


async def _session(request: HttpRequest, session_id: str, *, owner: bool) -> StreamSession:
    """The open WebRTC session: the owner's (``owner``), or the owner's or the player's."""
    user = await request_user(request)
    if owner:
        if not getattr(user, "is_authenticated", False):
            raise ApplicationError("Authentication credentials were not provided.", status=401)
        session = await sync_to_async(selectors.session_get_open_for_user)(
            user=user, session_id=session_id
        )
    else:
        session = await sync_to_async(selectors.session_get_open_for_access)(
            user=user, token=request.GET.get(TOKEN_PARAM), session_id=session_id
        )
    if session.kind != StreamSession.Kind.WEBRTC:
        raise Http404(f"Session {session_id!r} is not a WebRTC session.")
    await sync_to_async(lambda: session.avatar)()  # loaded here, not on the event loop
    return session


def _json_body(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApplicationError(f"The body is not JSON: {exc}") from exc


@endpoint("POST")
async def webrtc_offer(request: HttpRequest, session_id: str) -> HttpResponse:
    """``POST /webrtc/sessions/{id}/offer`` ``{"sdp", "type": "offer"}`` -> the answer."""
    session = await _session(request, session_id, owner=False)
    answer = await webrtc.webrtc_offer(session=session, offer=_json_body(request))
    return JsonResponse(answer)


@endpoint("POST")
async def webrtc_ice(request: HttpRequest, session_id: str) -> HttpResponse:
    """``POST /webrtc/sessions/{id}/ice`` ``{"candidate", "sdpMid", "sdpMLineIndex"}``."""
    session = await _session(request, session_id, owner=False)
    await webrtc.webrtc_candidate(session=session, payload=_json_body(request))
    return JsonResponse({"status": "ok"})


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@endpoint("POST")
async def webrtc_stream(request: HttpRequest, session_id: str) -> HttpResponse:
    """``POST /webrtc/sessions/{id}/stream`` multipart ``audio_file`` (``interrupt=true``
    replaces an utterance under way; without it that is a 409)."""
    session = await _session(request, session_id, owner=True)
    received = timezone.now()
    # The multipart body streams in (musetalk_site/body_stream.py): parsed off the loop.
    files, form = await sync_to_async(
        lambda: (request.FILES, request.POST), thread_sensitive=False
    )()
    audio = require_upload(request, files, "audio_file")
    interrupt = _flag(request.GET.get("interrupt") or form.get("interrupt"))
    utterance = await webrtc.webrtc_stream(session=session, audio=audio, interrupt=interrupt)
    stream = utterance.request
    frames = int(utterance.seconds * session.fps)
    return JsonResponse(
        {
            "request_id": stream.request_id,
            "session_id": session.session_id,
            "status": "streaming",
            "timing": {
                "received_at": received.isoformat(),
                "queued_at": stream.queued_at.isoformat(),
            },
            "audio_timeline": {
                "fps": session.fps,
                "frames": frames,
                "duration_seconds": round(utterance.seconds, 3),
                "start_cycle_position": stream.cycle_start,
            },
            "message": "Live frames go to the connected peer as the worker makes them.",
        }
    )


@endpoint("POST")
async def webrtc_interrupt(request: HttpRequest, session_id: str) -> HttpResponse:
    """``POST /webrtc/sessions/{id}/interrupt``: back to idle at the next frame."""
    session = await _session(request, session_id, owner=True)
    stopped = await webrtc.webrtc_interrupt(session=session)
    return JsonResponse({"session_id": session.session_id, "interrupted": stopped})


def _active_request(session: StreamSession) -> StreamRequest | None:
    return session.requests.filter(status__in=StreamRequest.ACTIVE_STATUSES).first()


@endpoint("GET")
async def webrtc_status(request: HttpRequest, session_id: str) -> HttpResponse:
    """``GET /webrtc/sessions/{id}/status``: the seed's status, polled by its clients."""
    session = await _session(request, session_id, owner=False)
    active = await sync_to_async(_active_request)(session)
    peer = webrtc.peer_registry().get(session.session_id)
    playing = peer.request_id if peer is not None and peer.video.live_requested else ""
    active_stream = (active.request_id if active else "") or playing or None
    state = peer.state if peer is not None else "new"
    remaining = (session.expires_at - timezone.now()).total_seconds()
    return JsonResponse(
        {
            "session_id": session.session_id,
            "status": "streaming" if active_stream else state,
            "peer_state": state,
            "active_stream": active_stream,
            "track_stats": peer.stats() if peer is not None else None,
            "config": webrtc.webrtc_config(session),
            "expires_in_seconds": max(0, int(remaining)),
        }
    )


@endpoint("DELETE")
async def webrtc_session(request: HttpRequest, session_id: str) -> HttpResponse:
    """``DELETE /webrtc/sessions/{id}``: closes the peer connection and ends the session."""
    session = await _session(request, session_id, owner=True)
    await webrtc.webrtc_delete(session=session)
    return JsonResponse({"status": "deleted", "session_id": session.session_id})


@endpoint("GET")
async def webrtc_stats(request: HttpRequest) -> HttpResponse:
    """``GET /webrtc/sessions/stats``: this process's peer connections, and the caller's open
    WebRTC sessions."""
    user = await request_user(request)
    if not getattr(user, "is_authenticated", False):
        raise ApplicationError("Authentication credentials were not provided.", status=401)
    open_sessions = await sync_to_async(
        lambda: selectors.session_open_list(user=user, kind=StreamSession.Kind.WEBRTC).count()
    )()
    return JsonResponse({"active_sessions": open_sessions, **webrtc.peer_registry().stats()})
