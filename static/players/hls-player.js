// The iOS player: Safari and WKWebView play the session's live HLS playlist natively in a
// <video>; other browsers use the vendored hls.js over Media Source Extensions. It starts
// muted (autoplay without a tap is only allowed muted) and offers "tap to unmute".
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("hls-player-config").textContent);
  const root = document.getElementById("musetalk-player");
  const video = root.querySelector("video");
  const unmuteButton = root.querySelector(".unmute");
  const statusLine = root.querySelector(".status");
  // played: names of the last segments hls.js played (idle_12.ts, live_13.ts...).
  const state = { engine: "", errors: [], ended: false, hls: null, played: [] };
  window.musetalkHlsPlayer = { video, state }; // for tests and for the embedding app

  function show(name, text) {
    root.dataset.state = name;
    statusLine.textContent = text;
  }

  function isAppleWebKit() {
    return /Apple/.test(navigator.vendor || "");
  }

  function useNative() {
    const canPlay = video.canPlayType("application/vnd.apple.mpegurl") !== "";
    const hlsJs = window.Hls && window.Hls.isSupported();
    return canPlay && (isAppleWebKit() || !hlsJs);
  }

  function play() {
    const attempt = video.play();
    if (attempt && attempt.catch) {
      attempt.catch(() => show("buffering", "Tap to start"));
    }
  }

  async function checkEnded() {
    // A 404/410 playlist means the session is over: stop instead of retrying forever.
    try {
      const response = await fetch(config.playlist_url, { cache: "no-store" });
      if (response.status === 404 || response.status === 410) {
        ended();
        return true;
      }
    } catch (error) {
      // offline for a moment: keep trying
    }
    return false;
  }

  function ended() {
    state.ended = true;
    if (state.hls) {
      state.hls.destroy();
      state.hls = null;
    }
    video.removeAttribute("src");
    video.load();
    show("ended", "Session ended");
  }

  function startNative() {
    state.engine = "native";
    video.src = config.playlist_url;
    video.addEventListener("error", async () => {
      state.errors.push(String(video.error && video.error.message));
      if (!(await checkEnded())) {
        setTimeout(() => { video.src = config.playlist_url; play(); }, 2000);
      }
    });
    play();
  }

  function startHlsJs() {
    state.engine = "hls.js";
    const hls = new window.Hls({
      liveSyncDurationCount: 3,
      manifestLoadingMaxRetry: 6,
      levelLoadingMaxRetry: 6,
      fragLoadingMaxRetry: 6,
    });
    state.hls = hls;
    hls.on(window.Hls.Events.ERROR, (_event, data) => onHlsError(hls, data));
    hls.on(window.Hls.Events.MANIFEST_PARSED, play);
    hls.on(window.Hls.Events.FRAG_CHANGED, (_event, data) => {
      const name = data.frag.relurl.split("?")[0];
      const isLive = (segment) => segment.split("/").pop().startsWith("live_");
      const previous = state.played[state.played.length - 1] || "";
      state.played = state.played.concat(name).slice(-50);
      if (isLive(name) && !isLive(previous)) announceLive();
    });
    hls.loadSource(config.playlist_url);
    hls.attachMedia(video);
  }

  async function onHlsError(hls, data) {
    if (!data.fatal) {
      return;
    }
    state.errors.push(`${data.type}: ${data.details}`);
    if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) {
      hls.recoverMediaError();
    } else if (!(await checkEnded())) {
      show("buffering", "Reconnecting…");
      setTimeout(() => hls.startLoad(), 2000);
    }
  }

  // A same-origin page that embeds this player (the dashboard's playground) hears when the
  // first segment of an utterance is on screen (hls.js only: native HLS does not say).
  function announceLive() {
    if (window.parent === window) return;
    window.parent.postMessage({ type: "musetalk-live", player: "hls" }, location.origin);
  }

  function unmute() {
    video.muted = false;
    root.dataset.muted = "off";
    play();
  }

  unmuteButton.addEventListener("click", unmute);
  video.addEventListener("playing", () => show("idle", "Live"));
  video.addEventListener("waiting", () => {
    if (!state.ended) show("buffering", "Buffering…");
  });
  video.addEventListener("volumechange", () => {
    root.dataset.muted = video.muted ? "on" : "off";
  });

  if (useNative()) {
    startNative();
  } else if (window.Hls && window.Hls.isSupported()) {
    startHlsJs();
  } else {
    show("error", "This browser cannot play HLS");
  }
})();
