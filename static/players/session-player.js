/* MuseTalk session player, shared by /player/session/{id} and /player/mobile.
 *
 * Follows the session's event feed (SSE) and plays each utterance's chunks back to back
 * with Media Source Extensions: one MediaSource per utterance, chunks appended in index
 * order whatever order their downloads finish in, each at the end of the previous one
 * (explicit timestampOffset). The avatar's idle loop plays underneath and shows whenever
 * no utterance does. The page's token is the only credential: it goes on every URL.
 *
 * window.musetalkPlayer exposes the state for tests and debugging.
 */
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("musetalk-player-config").textContent);
  const root = document.getElementById("musetalk-player");
  const live = root.querySelector("video.live");
  const idle = root.querySelector("video.idle");
  const statusLine = root.querySelector(".status");
  const unmuteButton = root.querySelector(".unmute");

  const STATUS_TEXT = {
    connecting: "Connecting…",
    idle: "Idle",
    speaking: "Speaking",
    buffering: "Buffering…",
    ended: "Session ended",
    unsupported: "This browser cannot play the live stream",
  };
  const FETCH_ATTEMPTS = 3;
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 15000;

  const debug = {
    state: "connecting",
    connected: false,
    connections: 0,
    lastEventId: Number(config.start_after) || 0,
    events: [],
    chunksAppended: 0,
    ended: 0,
    errors: [],
    utterances: [],
  };
  window.musetalkPlayer = debug;

  function recordError(message) {
    debug.errors.push(String(message));
    console.warn("musetalk player:", message);
  }

  function withToken(path) {
    return `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(config.token)}`;
  }

  /* ---- status line -------------------------------------------------------------- */

  function render() {
    let state = "idle";
    if (debug.sessionEnded) state = "ended";
    else if (!window.MediaSource) state = "unsupported";
    else if (root.dataset.live === "on") state = live.dataset.waiting === "yes" ? "buffering" : "speaking";
    else if (!debug.connected) state = "connecting";
    debug.state = state;
    root.dataset.state = state;
    statusLine.textContent = STATUS_TEXT[state];
  }

  /* ---- one utterance: its chunks, in order, into one MediaSource --------------------- */

  async function fetchChunk(event, signal) {
    const url = withToken(config.chunk_prefix + event.url);
    let lastError = null;
    for (let attempt = 1; attempt <= FETCH_ATTEMPTS; attempt += 1) {
      try {
        const response = await fetch(url, { signal, cache: "no-store" });
        if (!response.ok) throw new Error(`chunk ${event.index}: HTTP ${response.status}`);
        const type = response.headers.get("Content-Type") || "video/mp4";
        return { type, data: await response.arrayBuffer(), duration: Number(event.duration) };
      } catch (error) {
        if (signal.aborted) throw error;
        lastError = error;
      }
    }
    throw lastError;
  }

  function timeRanges(ranges) {
    const list = [];
    for (let i = 0; i < ranges.length; i += 1) list.push([ranges.start(i), ranges.end(i)]);
    return list;
  }

  class Utterance {
    constructor(requestId) {
      this.requestId = requestId;
      this.seen = new Set(); // chunk indexes announced (a replayed event is ignored)
      this.ready = new Map(); // index -> downloaded chunk, until appended
      this.nextIndex = 0; // the chunk to append next
      this.offset = 0; // where it starts on the media timeline, in seconds
      this.total = null;
      this.stopped = false;
      this.aborter = new AbortController();
      this.mediaSource = null;
      this.sourceBuffer = null;
      this.objectUrl = null;
      this.info = {
        requestId, chunksAppended: 0, totalChunks: null, playedTo: 0, ended: false, buffered: [],
      };
      debug.utterances.push(this.info);
    }

    add(event) {
      if (this.stopped || this.seen.has(event.index)) return;
      this.seen.add(event.index);
      if (event.total_chunks != null) this.setTotal(event.total_chunks);
      fetchChunk(event, this.aborter.signal).then(
        (chunk) => {
          this.ready.set(event.index, chunk);
          this.pump();
        },
        (error) => {
          if (!this.stopped) player.fail(this, `chunk ${event.index}: ${error.message || error}`);
        },
      );
    }

    setTotal(total) {
      this.total = Number(total);
      this.info.totalChunks = this.total;
      this.pump();
    }

    /* Puts this utterance on the live <video>. */
    attach() {
      this.mediaSource = new MediaSource();
      this.mediaSource.addEventListener("sourceopen", () => this.pump(), { once: true });
      this.objectUrl = URL.createObjectURL(this.mediaSource);
      live.src = this.objectUrl;
    }

    /* Appends the next chunk if it is here and the buffer is free; ends the stream after
     * the last one. Called whenever any of those may have changed. */
    pump() {
      const source = this.mediaSource;
      if (this.stopped || !source || source.readyState !== "open") return;
      if (this.sourceBuffer && this.sourceBuffer.updating) return;
      if (this.total === 0) {
        player.finished(this);
        return;
      }
      const chunk = this.ready.get(this.nextIndex);
      if (!chunk) {
        if (this.total !== null && this.nextIndex >= this.total) source.endOfStream();
        return;
      }
      if (!this.sourceBuffer && !this.createBuffer(chunk.type)) return;
      // Each chunk's own timestamps start at 0: shift it to the end of the previous one.
      try {
        this.sourceBuffer.timestampOffset = this.offset;
        this.sourceBuffer.appendBuffer(chunk.data);
      } catch (error) {
        player.fail(this, `chunk ${this.nextIndex} was refused: ${error.message || error}`);
      }
    }

    createBuffer(type) {
      if (!MediaSource.isTypeSupported(type)) {
        player.fail(this, `this browser cannot play ${type}`);
        return false;
      }
      this.info.type = type;
      this.sourceBuffer = this.mediaSource.addSourceBuffer(type);
      this.sourceBuffer.mode = "segments";
      this.sourceBuffer.addEventListener("updateend", () => this.appended());
      this.sourceBuffer.addEventListener("error", () => {
        player.fail(this, `chunk ${this.nextIndex} could not be appended`);
      });
      return true;
    }

    appended() {
      if (this.stopped) return;
      const chunk = this.ready.get(this.nextIndex);
      this.ready.delete(this.nextIndex);
      this.offset += chunk.duration;
      this.nextIndex += 1;
      this.info.chunksAppended += 1;
      this.info.buffered = timeRanges(this.sourceBuffer.buffered);
      debug.chunksAppended += 1;
      if (live.paused) playLive();
      this.pump();
    }

    stop() {
      this.stopped = true;
      this.aborter.abort();
      this.ready.clear();
      if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    }
  }

  /* ---- the player: utterances one after another, the idle loop in between ------------ */

  const player = {
    queue: [], // utterances in arrival order; queue[0] is the one on the live <video>
    byId: new Map(),

    utterance(requestId) {
      let utterance = this.byId.get(requestId);
      if (!utterance) {
        utterance = new Utterance(requestId);
        this.byId.set(requestId, utterance);
        this.queue.push(utterance);
        if (this.queue.length === 1) utterance.attach();
      }
      return utterance;
    },

    handle(payload) {
      const requestId = payload.request_id;
      switch (payload.event) {
        case "speaking_started":
          this.utterance(requestId);
          break;
        case "chunk":
          this.utterance(requestId).add(payload);
          break;
        case "complete":
          // Only for an utterance this page has seen start: nothing to play otherwise.
          if (this.byId.has(requestId)) this.byId.get(requestId).setTotal(payload.total_chunks);
          break;
        case "error":
          recordError(payload.message || "the utterance failed");
          this.stop(requestId);
          break;
        case "interrupted":
          this.stop(requestId);
          break;
        case "speaking_ended":
          if (payload.reason !== "complete") this.stop(requestId);
          break;
        case "session_ended":
          debug.sessionEnded = true;
          feed.close();
          for (const utterance of [...this.queue]) this.remove(utterance);
          break;
        default:
          break;
      }
      render();
    },

    stop(requestId) {
      const utterance = this.byId.get(requestId);
      if (utterance) this.remove(utterance);
    },

    fail(utterance, message) {
      recordError(message);
      this.remove(utterance);
    },

    /* The live <video> played an utterance to its end. */
    finished(utterance) {
      utterance.info.ended = true;
      debug.ended += 1;
      this.remove(utterance);
    },

    remove(utterance) {
      const wasOnScreen = this.queue[0] === utterance;
      utterance.stop();
      this.queue = this.queue.filter((item) => item !== utterance);
      if (!wasOnScreen) return;
      showIdle();
      if (this.queue.length) this.queue[0].attach();
    },
  };

  /* ---- the two <video> elements ----------------------------------------------------- */

  function playLive() {
    live.play().catch((error) => {
      if (error.name !== "NotAllowedError" || live.muted) return;
      // Sound needs a tap in this WebView: play muted and offer the button again.
      live.muted = true;
      root.dataset.muted = "on";
      live.play().catch(() => {});
    });
  }

  function showIdle() {
    root.dataset.live = "off";
    live.pause();
    live.removeAttribute("src");
    live.load();
    idle.play().catch(() => {});
    render();
  }

  live.addEventListener("playing", () => {
    live.dataset.waiting = "no";
    root.dataset.live = "on";
    idle.pause(); // hidden underneath: no need to decode it meanwhile
    render();
  });
  live.addEventListener("waiting", () => {
    live.dataset.waiting = "yes";
    render();
  });
  live.addEventListener("timeupdate", () => {
    const current = player.queue[0];
    if (current) current.info.playedTo = Math.max(current.info.playedTo, live.currentTime);
  });
  live.addEventListener("ended", () => {
    const current = player.queue[0];
    if (current) {
      current.info.playedTo = Math.max(current.info.playedTo, live.currentTime);
      player.finished(current);
    }
  });
  live.addEventListener("error", () => {
    if (!live.getAttribute("src")) return; // emptied on purpose by showIdle()
    const error = live.error;
    recordError(`video error ${error ? `${error.code} ${error.message}` : ""}`.trim());
    const current = player.queue[0];
    if (current) player.remove(current);
  });

  idle.addEventListener("error", () => {
    debug.idleError = idle.error ? idle.error.code : "unknown";
  });
  idle.src = config.idle_url;
  idle.play().catch(() => {});

  unmuteButton.addEventListener("click", () => {
    live.muted = false;
    root.dataset.muted = "off";
    if (live.paused && player.queue.length) playLive();
  });
  root.dataset.muted = "on";
  root.dataset.live = "off";

  /* ---- the event feed ---------------------------------------------------------------- */

  /* EventSource reconnects by itself after a dropped connection and sends Last-Event-ID
   * (the server writes `id:` lines). Only when it gives up (an HTTP error) do we open a
   * new one, with ?last_event_id= so the server resumes after the last event we had. */
  const feed = {
    source: null,
    closed: false,
    retryMs: RETRY_MIN_MS,

    open() {
      const url = `${config.events_url}&last_event_id=${debug.lastEventId}`;
      const source = new EventSource(url);
      this.source = source;
      debug.connections += 1;
      source.onopen = () => {
        this.retryMs = RETRY_MIN_MS;
        debug.connected = true;
        render();
      };
      source.onmessage = (message) => this.receive(message);
      source.onerror = () => {
        debug.connected = false;
        render();
        if (this.closed || source.readyState !== EventSource.CLOSED) return;
        setTimeout(() => this.open(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      };
    },

    receive(message) {
      const id = Number(message.lastEventId);
      if (id > debug.lastEventId) debug.lastEventId = id;
      let payload;
      try {
        payload = JSON.parse(message.data);
      } catch (error) {
        recordError(`unreadable event: ${message.data.slice(0, 80)}`);
        return;
      }
      debug.events.push(payload.event);
      player.handle(payload);
    },

    /* Drops the connection and resumes after the last event seen (tests use it). */
    reconnect() {
      if (this.closed) return;
      this.source.close();
      debug.connected = false;
      this.open();
    },

    close() {
      this.closed = true;
      debug.connected = false;
      if (this.source) this.source.close();
    },
  };
  debug.reconnect = () => feed.reconnect();

  if (window.MediaSource) feed.open();
  else recordError("Media Source Extensions are not available");
  render();
})();
