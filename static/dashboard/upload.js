// What the dashboard's forms share: a drop zone, an upload with a progress bar and the API's
// error message, and a recording from the camera or the microphone.
window.MuseTalkForms = (() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function errorBox(box) {
    return (message) => { box.textContent = message; box.hidden = !message; };
  }

  // Files dropped on `zone` (a label around `input`) or picked with `input` go to onFile.
  function dropzone(zone, input, onFile) {
    input.addEventListener("change", () => { if (input.files[0]) onFile(input.files[0]); });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("over"); });
    }
    for (const type of ["dragleave", "drop"]) zone.addEventListener(type, () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer.files.length) onFile(event.dataTransfer.files[0]);
    });
  }

  // The media's duration in seconds, or null when the browser cannot tell (the server will).
  function duration(file, tag) {
    return new Promise((resolve) => {
      const probe = document.createElement(tag);
      probe.preload = "metadata";
      const done = (value) => { URL.revokeObjectURL(probe.src); resolve(value); };
      probe.onloadedmetadata = () => done(Number.isFinite(probe.duration) ? probe.duration : null);
      probe.onerror = () => done(null);
      probe.src = URL.createObjectURL(file);
    });
  }

  // Why `file` cannot be sent (type, size, length), or "".
  async function problem(file, { kind, extensions, maxBytes, maxSeconds, what }) {
    const name = (file.name || "").toLowerCase();
    const typed = (file.type || "").startsWith(kind + "/") || extensions.some((ext) => name.endsWith(ext));
    if (!typed) return `“${file.name}” is not ${what}.`;
    if (file.size === 0) return "The file is empty.";
    const mb = (bytes) => (bytes / 1048576).toFixed(0);
    if (file.size > maxBytes) return `The file is ${mb(file.size)} MB; the limit is ${mb(maxBytes)} MB.`;
    const seconds = await duration(file, kind);
    if (seconds && seconds > maxSeconds) return `It lasts ${seconds.toFixed(0)} s; the limit is ${maxSeconds.toFixed(0)} s.`;
    return "";
  }

  // POST `data` to the API with the session's CSRF token; `bar` shows the upload.
  function send(url, data, { bar, onDone, onError }) {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.setRequestHeader("X-CSRFToken", csrf);
    request.setRequestHeader("Accept", "application/json");
    request.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total); };
    request.onload = () => {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch (error) { /* not JSON */ }
      if (request.status < 300) onDone(body);
      else onError((body && body.message) || `The request failed (${request.status}).`);
    };
    request.onerror = () => onError("The upload failed: check your connection and try again.");
    bar.value = 0;
    request.send(data);
  }

  // Record from getUserMedia(constraints) until stop() is called; onFile gets the recording.
  async function record(constraints, { preview, name, type, onFile }) {
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    const parts = [];
    const recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
    recorder.onstop = () => {
      stream.getTracks().forEach((track) => track.stop());
      onFile(new File([new Blob(parts, { type })], name, { type }));
    };
    if (preview) { preview.srcObject = stream; preview.play().catch(() => {}); }
    recorder.start(250);
    return () => { if (recorder.state !== "inactive") recorder.stop(); };
  }

  // A start and a stop button around record(): `start` (hidden where the browser cannot
  // record) begins, `stop` ends and hands the file to onFile; `preview` shows the camera and
  // `status` says what is going on while it records.
  function recordButtons({ start, stop, status, preview, constraints, name, type, busyText, unavailable, showError, onFile }) {
    start.hidden = !canRecord;
    let finish = null;
    const recording = (on) => {
      start.hidden = on; stop.hidden = !on;
      if (preview) preview.hidden = !on;
      if (status) status.textContent = on ? busyText : "";
    };
    start.addEventListener("click", async () => {
      try {
        finish = await record(constraints, { preview, name, type, onFile: (file) => { recording(false); onFile(file); } });
      } catch (error) {
        showError(unavailable);
        return;
      }
      recording(true);
      stop.focus();
    });
    stop.addEventListener("click", () => { if (finish) finish(); });
  }

  // Follow an SSE feed; onData(payload) returns true to stop following.
  function follow(url, onData) {
    const feed = new EventSource(url);
    feed.onmessage = (message) => { if (onData(JSON.parse(message.data))) feed.close(); };
    return feed;
  }

  // Send a form's data with its progress bar ("<prefix>-progress", "-bar", "-submit"); the page
  // reloads once the API took it, else shows the API's message.
  function submit(url, data, prefix, showError) {
    const box = document.getElementById(`${prefix}-progress`);
    const button = document.getElementById(`${prefix}-submit`);
    showError("");
    box.hidden = false;
    button.disabled = true;
    send(url, data, {
      bar: document.getElementById(`${prefix}-bar`),
      onDone: () => window.location.reload(),
      onError: (message) => { showError(message); box.hidden = true; button.disabled = false; },
    });
  }

  // Follow the progress of the work shown in `element` (its [data-role=progress] and
  // [data-role=stage]); the page reloads once the status is one of `endStatuses`.
  function followProgress(url, element, endStatuses) {
    follow(url, (data) => {
      const progress = element.querySelector('[data-role="progress"]');
      const stage = element.querySelector('[data-role="stage"]');
      if (progress && typeof data.progress === "number") { progress.value = data.progress; progress.textContent = `${data.progress}%`; }
      if (stage && data.stage) stage.textContent = data.stage;
      const over = endStatuses.includes(data.status);
      if (over) window.location.reload();
      return over;
    });
  }

  const canRecord = Boolean(navigator.mediaDevices && window.MediaRecorder);
  return { errorBox, dropzone, problem, submit, recordButtons, followProgress };
})();
