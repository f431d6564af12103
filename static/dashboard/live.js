// The live playground: starts a session through the REST API (POST /sessions/create, or
// /webrtc/sessions/create for the WebRTC player), shows the session's player in a frame, sends
// audio to .../stream (barging in on what is playing), and measures each utterance's latency:
// from the moment its audio is sent to the moment the player shows its first frame. The MSE
// and HLS players say so themselves ({type: "musetalk-live"} by postMessage); for WebRTC the
// page watches the session's status for the first live frame leaving the server, then takes
// the next frame the player's <video> presents.
(() => {
  "use strict";
  const forms = window.MuseTalkForms;
  const startForm = document.getElementById("live-start");
  if (!startForm) return; // no prepared avatar yet
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const card = $("live-session");
  const frame = $("live-player");
  const switcher = $("live-player-switch");
  const showStartError = forms.errorBox($("live-start-error"));
  const showTalkError = forms.errorBox($("live-talk-error"));
  const talkForm = $("live-talk");
  const limits = {
    kind: "audio", what: "audio: choose a WAV, MP3, M4A, OGG or WebM file",
    extensions: [".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".webm"],
    maxBytes: Number(talkForm.dataset.maxBytes), maxSeconds: Number(talkForm.dataset.maxSeconds),
  };
  // session: the create answer plus {kind: "sse" | "webrtc", base: "/sessions" | "/webrtc/sessions"}
  const state = { session: null, player: "mse", utterances: [], lastAudio: null, watching: null };
  window.musetalkPlayground = state; // for tests and for the curious

  async function api(method, url, body) {
    const response = await fetch(url, {
      method, body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, Accept: "application/json" },
    });
    let data = null;
    try { data = await response.json(); } catch (error) { /* not JSON */ }
    if (!response.ok) {
      const error = new Error((data && data.message) || `The request failed (${response.status}).`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function playerToken() {
    return new URL(state.session.player_url, location.origin).searchParams.get("token");
  }

  function playerUrl(player) {
    const id = encodeURIComponent(state.session.session_id);
    if (player === "hls") return `/hls/player/${id}?token=${encodeURIComponent(playerToken())}`;
    return state.session.player_url; // the MSE player, or the WebRTC one for a WebRTC session
  }

  function showPlayer(player) {
    state.player = player;
    frame.src = playerUrl(player);
    for (const button of switcher.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.player === player));
    }
    fillSnippets();
  }

  /* ---- start and end ---------------------------------------------------------------- */

  startForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showStartError("");
    const transport = startForm.elements.transport.value;
    const kind = transport === "webrtc" ? "webrtc" : "sse";
    const base = kind === "webrtc" ? "/webrtc/sessions" : "/sessions";
    const data = new FormData();
    data.append("avatar_id", startForm.elements.avatar_id.value);
    data.append("chunk_duration", startForm.elements.chunk_duration.value);
    const button = $("live-start-submit");
    button.disabled = true;
    button.textContent = "Starting…";
    try {
      const created = await api("POST", `${base}/create`, data);
      state.session = { ...created, kind, base };
      state.utterances = [];
      renderLatency();
      $("live-session-id").textContent = created.session_id;
      switcher.hidden = kind === "webrtc";
      card.hidden = false;
      $("start-card").hidden = true;
      showPlayer(transport);
      card.scrollIntoView({ behavior: "smooth", block: "start" });
      $("talk-mic-start").focus({ preventScroll: true });
    } catch (error) {
      showStartError(error.message);
    } finally {
      button.disabled = false;
      button.textContent = "Start session";
    }
  });

  for (const button of switcher.querySelectorAll("button")) {
    button.addEventListener("click", () => showPlayer(button.dataset.player));
  }

  function sessionPath(action) {
    const id = encodeURIComponent(state.session.session_id);
    return `${state.session.base}/${id}${action ? "/" + action : ""}`;
  }

  $("live-end").addEventListener("click", async () => {
    if (!state.session) return;
    try {
      await api("DELETE", sessionPath(""));
    } catch (error) {
      if (error.status !== 404) { showTalkError(error.message); return; }
    }
    endLocally();
  });

  function endLocally() {
    state.session = null;
    state.watching = null;
    frame.removeAttribute("src");
    card.hidden = true;
    $("start-card").hidden = false;
    $("live-start-submit").focus();
  }

  // Leaving the page ends the session (it would expire on its own, later).
  window.addEventListener("pagehide", () => {
    if (!state.session) return;
    fetch(sessionPath(""), { method: "DELETE", keepalive: true, credentials: "same-origin", headers: { "X-CSRFToken": csrf } });
  });

  /* ---- talking ---------------------------------------------------------------------- */

  async function say(file) {
    showTalkError("");
    const why = await forms.problem(file, limits);
    if (why) { showTalkError(why); return; }
    state.lastAudio = file;
    $("live-resend").disabled = false;
    const data = new FormData();
    data.append("audio_file", file, file.name);
    data.append("interrupt", "true"); // barge in on what is playing, as a conversation does
    const utterance = { name: file.name, player: state.player, sentAt: performance.now(), requestId: null, shownAt: null, error: "" };
    state.utterances.push(utterance);
    renderLatency();
    try {
      const answer = await api("POST", sessionPath("stream"), data);
      utterance.requestId = answer.request_id;
      $("live-interrupt").disabled = false;
      if (state.session && state.session.kind === "webrtc") watchWebrtc(utterance);
      else if (state.player === "hls" && hlsEngine() === "native") utterance.error = "not measured: native HLS does not say when";
    } catch (error) {
      utterance.error = error.message;
      showTalkError(error.message);
      if (error.status === 404) endLocally(); // ended or expired meanwhile
    }
    renderLatency();
  }

  forms.dropzone($("talk-dropzone"), $("talk-file"), (file) => {
    $("talk-dropzone-text").textContent = file.name;
    say(file);
  });
  $("live-resend").addEventListener("click", () => { if (state.lastAudio) say(state.lastAudio); });

  forms.recordButtons({
    start: $("talk-mic-start"), stop: $("talk-mic-stop"), status: $("talk-mic-status"), busyText: "Listening…",
    constraints: { audio: true }, name: "recording.webm", type: "audio/webm",
    unavailable: "The microphone is not available: allow it in your browser, or upload a file.",
    showError: showTalkError, onFile: say,
  });

  $("live-interrupt").addEventListener("click", async () => {
    try {
      await api("POST", sessionPath("interrupt"));
      $("live-interrupt").disabled = true;
    } catch (error) {
      showTalkError(error.message);
    }
  });

  /* ---- latency ---------------------------------------------------------------------- */

  function waiting() {
    return state.utterances.filter((u) => u.shownAt === null && !u.error);
  }

  function shown(utterance, at) {
    if (utterance.shownAt !== null) return;
    utterance.shownAt = at;
    // An utterance that was barged in on before it showed never will.
    for (const earlier of waiting()) if (earlier.sentAt < utterance.sentAt) earlier.error = "interrupted";
    renderLatency();
  }

  window.addEventListener("message", (event) => {
    if (event.origin !== location.origin || event.source !== frame.contentWindow) return;
    if (!event.data || event.data.type !== "musetalk-live") return;
    const at = performance.now();
    const byId = state.utterances.find((u) => u.requestId && u.requestId === event.data.request_id);
    const pending = waiting();
    const utterance = byId || pending[pending.length - 1];
    if (utterance) shown(utterance, at);
  });

  // WebRTC: poll the status until the server lets the utterance's first frame go, then take
  // the next frame the player presents (the frame needs a network hop and a jitter buffer).
  async function watchWebrtc(utterance) {
    state.watching = utterance;
    const deadline = performance.now() + 120000;
    while (state.watching === utterance && state.session && performance.now() < deadline) {
      let status = null;
      try { status = await api("GET", sessionPath("status")); } catch (error) { return; }
      const video = status.track_stats && status.track_stats.video;
      if (status.active_stream === utterance.requestId && video && video.live_released > 0) {
        presentedAfter().then((at) => shown(utterance, at));
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
  }

  function hlsEngine() {
    const player = frame.contentWindow && frame.contentWindow.musetalkHlsPlayer;
    return player ? player.state.engine : "";
  }

  function presentedAfter() {
    return new Promise((resolve) => {
      const player = frame.contentWindow && frame.contentWindow.musetalkWebrtcPlayer;
      const video = player && player.video;
      if (!video || !video.requestVideoFrameCallback) { resolve(performance.now()); return; }
      video.requestVideoFrameCallback(() => resolve(performance.now()));
    });
  }

  function renderLatency() {
    const table = $("live-latency");
    const rows = state.utterances.map((u, index) => {
      const row = document.createElement("tr");
      const cells = [String(index + 1), u.name, u.player.toUpperCase(),
        u.error ? u.error : u.shownAt === null ? "waiting…" : `${Math.round(u.shownAt - u.sentAt)} ms`];
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      row.dataset.state = u.error ? "error" : u.shownAt === null ? "waiting" : "shown";
      return row;
    });
    table.tBodies[0].replaceChildren(...rows);
    table.hidden = rows.length === 0;
    $("live-latency-empty").hidden = rows.length > 0;
  }

  /* ---- snippets ----------------------------------------------------------------------- */

  function fillSnippets() {
    if (!state.session) return;
    const origin = location.origin;
    const stream = `${origin}${sessionPath("stream")}`;
    const player = `${origin}${playerUrl(state.player)}`;
    const events = `${origin}/sessions/${state.session.session_id}/events`;
    $("snippet-curl").value = [
      "# speak (interrupt=true barges in on what is playing)",
      `curl -H "Authorization: Token $MUSETALK_TOKEN" -F audio_file=@hello.wav -F interrupt=true \\`,
      `  ${stream}`,
      "# stop speaking, then end the session",
      `curl -X POST -H "Authorization: Token $MUSETALK_TOKEN" ${origin}${sessionPath("interrupt")}`,
      `curl -X DELETE -H "Authorization: Token $MUSETALK_TOKEN" ${origin}${sessionPath("")}`,
    ].join("\n");
    $("snippet-js").value = [
      `const token = "$MUSETALK_TOKEN"; // keep API tokens on your server; players need none`,
      "async function speak(audioBlob) {",
      "  const body = new FormData();",
      `  body.append("audio_file", audioBlob, "speech.wav");`,
      `  const answer = await fetch("${stream}", {`,
      `    method: "POST", headers: { Authorization: \`Token \${token}\` }, body,`,
      "  });",
      "  return answer.json(); // {request_id, session_id, status, message}",
      "}",
      `// the session's events: speaking_started, chunk, complete, interrupted, session_ended`,
      `new EventSource("${events}?token=" + token).onmessage = (e) => console.log(JSON.parse(e.data));`,
    ].join("\n");
    $("snippet-webview").value = [
      "<!-- a web page -->",
      `<iframe src="${player}" allow="autoplay; fullscreen" style="width:360px;aspect-ratio:3/4;border:0"></iframe>`,
      "// Android",
      `webView.getSettings().setJavaScriptEnabled(true);`,
      `webView.getSettings().setMediaPlaybackRequiresUserGesture(false);`,
      `webView.loadUrl("${player}");`,
      "// iOS (WKWebView): configuration.allowsInlineMediaPlayback = true, then load the same URL",
    ].join("\n");
  }
})();
