// The WebRTC player (GET /webrtc/player/{id}?token=): recvonly video + audio from the
// session's peer connection. The video plays muted in <video>; the audio goes to its own
// <audio> element, muted until a tap (Safari and Chrome autoplay policies). Candidates trickle
// to /ice; a failed or lost connection is negotiated again. Same-origin postMessage API:
//   {type: "webrtc-start", muted}      connect (if needed), then mute/unmute the audio
//   {type: "webrtc-audio", muted}      mute/unmute the audio
//   {type: "webrtc-debug-mode", mode}  "on" / "off": the getStats overlay
// window.musetalkWebrtcPlayer exposes the state for the embedding app (and tests).
(() => {
  "use strict";
  const config = JSON.parse(document.getElementById("webrtc-player-config").textContent);
  const root = document.getElementById("musetalk-player");
  const video = root.querySelector("video");
  const audio = root.querySelector("audio");
  const unmute = root.querySelector(".unmute");
  const status = root.querySelector(".status");
  const debug = root.querySelector(".debug");
  const state = {
    connection: "new", ice: "new", framesDecoded: 0, audioBytes: 0, audioPackets: 0,
    attempts: 0, errors: [], muted: true, debug: false, live: false,
  };
  let pc = null;
  let retryTimer = null;
  let statsTimer = null;

  function show(text, kind) {
    status.textContent = text;
    root.dataset.state = kind;
  }

  function setMuted(muted) {
    state.muted = muted;
    audio.muted = muted;
    root.dataset.muted = muted ? "on" : "off";
    if (!muted) audio.play().catch((error) => state.errors.push("audio: " + error));
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.message || ("HTTP " + response.status));
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function scheduleRetry(reason) {
    if (retryTimer) return;
    state.errors.push(reason);
    const delay = Math.min(10000, 1000 * 2 ** Math.min(state.attempts, 4));
    show("Reconnecting…", "buffering");
    retryTimer = setTimeout(() => { retryTimer = null; connect(); }, delay);
  }

  async function connect() {
    if (pc) pc.close();
    state.attempts += 1;
    show("Connecting…", "connecting");
    const peer = new RTCPeerConnection({
      iceServers: config.ice_servers,
      iceTransportPolicy: config.ice_transport_policy,
    });
    pc = peer;
    window.musetalkWebrtcPlayer.pc = peer;
    peer.addTransceiver("video", {direction: "recvonly"});
    peer.addTransceiver("audio", {direction: "recvonly"});
    const pending = [];
    let answered = false;
    peer.ontrack = (event) => {
      const stream = new MediaStream([event.track]);
      if (event.track.kind === "video") {
        video.srcObject = stream;
        video.play().catch((error) => state.errors.push("video: " + error));
      } else {
        audio.srcObject = stream;
        audio.muted = state.muted;
      }
    };
    peer.onicecandidate = (event) => {
      const body = event.candidate
        ? {candidate: event.candidate.candidate, sdpMid: event.candidate.sdpMid,
           sdpMLineIndex: event.candidate.sdpMLineIndex}
        : {candidate: null};
      if (answered) sendCandidate(body); else pending.push(body);
    };
    peer.oniceconnectionstatechange = () => { state.ice = peer.iceConnectionState; };
    peer.onconnectionstatechange = () => {
      if (peer !== pc) return;
      state.connection = peer.connectionState;
      if (peer.connectionState === "connected") {
        state.attempts = 0;
        show("Connected", "idle");
      } else if (peer.connectionState === "failed") {
        scheduleRetry("connection failed");
      } else if (peer.connectionState === "disconnected") {
        setTimeout(() => {
          if (peer === pc && peer.connectionState === "disconnected") scheduleRetry("connection lost");
        }, 3000);
      }
    };
    try {
      await peer.setLocalDescription(await peer.createOffer());
      const answer = await post(config.offer_url, {sdp: peer.localDescription.sdp, type: "offer"});
      await peer.setRemoteDescription(answer);
      answered = true;
      pending.splice(0).forEach(sendCandidate);
    } catch (error) {
      if (peer !== pc) return;
      if (error.status === 404 || error.status === 401) {
        show(error.message, "error");
        return;
      }
      scheduleRetry("offer: " + error.message);
    }
  }

  function sendCandidate(body) {
    post(config.ice_url, body).catch((error) => state.errors.push("ice: " + error.message));
  }

  async function sampleStats() {
    if (!pc) return;
    const report = await pc.getStats();
    report.forEach((entry) => {
      if (entry.type === "inbound-rtp" && entry.kind === "video") {
        state.framesDecoded = entry.framesDecoded || 0;
      } else if (entry.type === "inbound-rtp" && entry.kind === "audio") {
        state.audioBytes = entry.bytesReceived || 0;
        state.audioPackets = entry.packetsReceived || 0;
      }
    });
    if (state.debug) {
      debug.textContent = [
        "ICE " + state.ice + " / " + state.connection,
        "frames decoded " + state.framesDecoded,
        "audio " + state.audioPackets + " packets, " + state.audioBytes + " bytes",
      ].join("\n");
    }
  }

  function setDebug(mode) {
    state.debug = mode === "on" || mode === true;
    debug.hidden = !state.debug;
  }

  window.addEventListener("message", (event) => {
    if (event.origin !== window.location.origin || !event.data) return;
    const message = event.data;
    if (message.type === "webrtc-start") {
      if (!pc || ["failed", "closed"].includes(pc.connectionState)) connect();
      if ("muted" in message) setMuted(Boolean(message.muted));
    } else if (message.type === "webrtc-audio") {
      setMuted(Boolean(message.muted));
    } else if (message.type === "webrtc-debug-mode") {
      setDebug(message.mode);
    }
  });
  unmute.addEventListener("click", () => setMuted(false));

  window.musetalkWebrtcPlayer = {state, video, audio, pc: null, connect, setMuted, setDebug};
  setDebug(new URLSearchParams(window.location.search).get("debug") === "1" ? "on" : "off");
  statsTimer = setInterval(() => sampleStats().catch(() => {}), 500);
  connect();
})();
