/* MuseTalk session player, shared by /player/session/{id} and /player/mobile.
 *
 * Follows the session's event feed (SSE) and plays each utterance's chunks back to back
 * with Media Source Extensions: one MediaSource per utterance, chunks appended in index
 * order whatever order their downloads finish in, each at the end of the previous one
 * (explicit timestampOffset). The avatar's idle loop plays underneath and shows whenever
 * no utterance does. The page's token is the only credential: it is on the feed's URL, and
 * the feed gives every chunk as a URL that opens it (the fragmented copy, with a token).
 *
 * Each chunk is cut to its own slot on the media timeline with the append window, so its
 * audio tiles with the next one sample by sample (see Utterance.place).
 *
 * window.musetalkPlayer exposes the state for tests and debugging; with ?debug_audio=1 it
 * also records what the live <video> plays (see captureAudio).
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
  // Timestamps become whole microseconds inside the browser; a frame ending a rounding step
  // past the window would be dropped. 5 us is under a quarter of a sample at 48 kHz.
  const WINDOW_END_SLACK_S = 5e-6;

  const FPS = Number(config.fps) || 0;

  /* A chunk's length on the media timeline: its event gives it in milliseconds, which at
   * 30 fps is not a whole number of frames; rounded to whole frames, the window keeps the
   * chunk's last frame and the offsets do not drift. */
  function slotSeconds(duration) {
    const seconds = Number(duration);
    return FPS > 0 ? Math.max(1, Math.round(seconds * FPS)) / FPS : seconds;
  }

  const DEBUG_AUDIO = new URLSearchParams(window.location.search).get("debug_audio") === "1";

  const debug = {
    state: "connecting",
    connected: false,
    connections: 0,
    lastEventId: Number(config.start_after) || 0,
    events: [],
    chunksAppended: 0,
    ended: 0,
    stalls: 0, // "waiting" while an utterance was on screen: the next chunk came too late
    errors: [],
    utterances: [],
    degraded: false, // the server repeats frames to keep up (a busy GPU); audio is whole
  };
  window.musetalkPlayer = debug;

  function recordError(message) {
    debug.errors.push(String(message));
    console.warn("musetalk player:", message);
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
    const url = event.url;
    let lastError = null;
    for (let attempt = 1; attempt <= FETCH_ATTEMPTS; attempt += 1) {
      try {
        const response = await fetch(url, { signal, cache: "no-store" });
        if (!response.ok) throw new Error(`chunk ${event.index}: HTTP ${response.status}`);
        const type = response.headers.get("Content-Type") || "video/mp4";
        return { type, data: await response.arrayBuffer(), duration: slotSeconds(event.duration) };
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
      this.appending = false; // from appendBuffer() until appended() has run
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
      // Not sourceBuffer.updating: it turns false a moment before "updateend" runs
      // appended(), and a pump() in between would append the same chunk twice.
      if (this.appending) return;
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
      try {
        this.place(chunk);
        this.sourceBuffer.appendBuffer(chunk.data);
        this.appending = true;
      } catch (error) {
        player.fail(this, `chunk ${this.nextIndex} was refused: ${error.message || error}`);
      }
    }

    /* Each chunk's own timestamps start at 0: shift it to the end of the previous one and
     * keep only its slot, [offset, offset + duration). Its AAC audio begins with the
     * encoder's priming frame, which the chunk's edit list places just before the slot, and
     * its last frame runs past the slot's end. The browser cuts audio frames at the window
     * edges sample-exactly (a priming frame cut off whole still primes the decoder), so the
     * chunks join with no gap, overlap or click. The window only moves forward within an
     * utterance: set the end first, so that it stays above the start. */
    place(chunk) {
      const buffer = this.sourceBuffer;
      buffer.appendWindowEnd = this.offset + chunk.duration + WINDOW_END_SLACK_S;
      buffer.appendWindowStart = this.offset;
      buffer.timestampOffset = this.offset;
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
      this.appending = false;
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
        case "degraded":
        case "recovered":
          debug.degraded = payload.event === "degraded";
          root.dataset.quality = debug.degraded ? "degraded" : "full";
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

  /* Tells a same-origin page that embeds this player (the dashboard's playground) when an
   * utterance's first frame is on screen: {type: "musetalk-live", player: "mse", request_id}. */
  function announceLive() {
    const current = player.queue[0];
    if (!current || current.announced || window.parent === window) return;
    current.announced = true;
    window.parent.postMessage({ type: "musetalk-live", player: "mse", request_id: current.requestId }, location.origin);
  }

  live.addEventListener("playing", () => {
    live.dataset.waiting = "no";
    root.dataset.live = "on";
    announceLive();
    idle.pause(); // hidden underneath: no need to decode it meanwhile
    render();
  });
  live.addEventListener("waiting", () => {
    if (root.dataset.live === "on") debug.stalls += 1;
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

  /* ---- ?debug_audio=1: record what the live <video> plays ----------------------------- */

  /* Runs on the audio rendering thread: posts every rendered block of its input to the page
   * and passes the sound on. A missing input counts as silence, so the recording keeps
   * the audio clock's timing. */
  const RECORDER_SOURCE = `
    registerProcessor("musetalk-recorder", class extends AudioWorkletProcessor {
      process(inputs, outputs) {
        const input = inputs[0][0];
        const output = outputs[0][0];
        if (input) output.set(input);
        this.port.postMessage(input ? input.slice(0) : new Float32Array(output.length));
        return true;
      }
    });`;

  /* Routes the live <video>'s sound through an AudioContext at the chunks' AAC rate
   * (48 kHz: nothing is resampled on the way) into the recorder, then on to the speakers,
   * so that a test can check the joins between chunks as they were heard. A muted element
   * feeds silence into the graph, so this unmutes the live video. AudioWorklet needs a
   * secure context (https, or a page on localhost). */
  async function captureAudio() {
    const context = new AudioContext({ sampleRate: 48000 });
    const code = new Blob([RECORDER_SOURCE], { type: "text/javascript" });
    await context.audioWorklet.addModule(URL.createObjectURL(code));
    const recorder = new AudioWorkletNode(context, "musetalk-recorder", {
      channelCount: 1, channelCountMode: "explicit", outputChannelCount: [1],
    });
    const blocks = [];
    const capture = { sampleRate: context.sampleRate, frames: 0 };
    recorder.port.onmessage = (message) => {
      blocks.push(message.data);
      capture.frames += message.data.length;
    };
    capture.base64 = () => floatsToBase64(blocks);
    context.createMediaElementSource(live).connect(recorder);
    recorder.connect(context.destination);
    live.muted = false;
    root.dataset.muted = "off";
    debug.audio = capture;
  }

  /* The recorded samples as base64 float32 (little-endian, as in memory): compact and
   * exact through WebDriver, unlike a JSON list of numbers. */
  function floatsToBase64(blocks) {
    const total = blocks.reduce((sum, block) => sum + block.length, 0);
    const samples = new Float32Array(total);
    let at = 0;
    for (const block of blocks) {
      samples.set(block, at);
      at += block.length;
    }
    const bytes = new Uint8Array(samples.buffer);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  /* ---- start ------------------------------------------------------------------------- */

  /* With ?debug_audio=1 the recorder is wired before the feed opens, so it hears the
   * first chunk from its first sample. */
  async function start() {
    if (!window.MediaSource) {
      recordError("Media Source Extensions are not available");
      return;
    }
    if (DEBUG_AUDIO) await captureAudio().catch((error) => recordError(`audio capture: ${error}`));
    feed.open();
  }

  start();
  render();
})();
