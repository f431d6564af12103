// The avatars page: upload (drag and drop, checks before sending, a progress bar), a webcam
// recording instead of a file, live preparation progress, idle-loop previews on hover/focus.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const form = document.getElementById("avatar-upload");
  const fileInput = document.getElementById("video-file");
  const dropzone = document.getElementById("dropzone");
  const dropText = document.getElementById("dropzone-text");
  const errorBox = document.getElementById("upload-error");
  const progressBox = document.getElementById("upload-progress");
  const bar = document.getElementById("upload-bar");
  const submit = document.getElementById("upload-submit");
  const VIDEO_EXTENSIONS = [".mp4", ".mov", ".webm", ".mkv", ".m4v"];
  let chosen = null;  // the File to upload (picked, dropped or recorded)

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function choose(file) {
    chosen = file;
    if (file) dropText.textContent = `${file.name} (${(file.size / 1048576).toFixed(1)} MB)`;
    showError("");
  }

  function duration(file) {
    return new Promise((resolve) => {
      const probe = document.createElement("video");
      probe.preload = "metadata";
      probe.onloadedmetadata = () => { URL.revokeObjectURL(probe.src); resolve(probe.duration); };
      probe.onerror = () => { URL.revokeObjectURL(probe.src); resolve(null); };  // the server decides
      probe.src = URL.createObjectURL(file);
    });
  }

  async function problem(file) {
    const name = (file.name || "").toLowerCase();
    const looksLikeVideo = (file.type || "").startsWith("video/") || VIDEO_EXTENSIONS.some((ext) => name.endsWith(ext));
    if (!looksLikeVideo) return `“${file.name}” is not a video: choose an MP4, MOV or WebM file.`;
    const maxBytes = Number(form.dataset.maxBytes);
    if (file.size > maxBytes) return `The video is ${(file.size / 1048576).toFixed(0)} MB; the limit is ${(maxBytes / 1048576).toFixed(0)} MB.`;
    if (file.size === 0) return "The file is empty.";
    const seconds = await duration(file);
    const maxSeconds = Number(form.dataset.maxSeconds);
    if (seconds && Number.isFinite(seconds) && seconds > maxSeconds) return `The video lasts ${seconds.toFixed(0)} s; the limit is ${maxSeconds.toFixed(0)} s.`;
    return "";
  }

  fileInput.addEventListener("change", () => choose(fileInput.files[0] || null));
  for (const type of ["dragenter", "dragover"]) {
    dropzone.addEventListener(type, (event) => { event.preventDefault(); dropzone.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    dropzone.addEventListener(type, () => dropzone.classList.remove("over"));
  }
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files.length) choose(event.dataTransfer.files[0]);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const avatarId = form.elements.avatar_id;
    if (!avatarId.value || !avatarId.checkValidity()) {
      showError("Give the avatar a name: letters, digits, “_” or “-”, starting with a letter or digit.");
      avatarId.focus();
      return;
    }
    if (!chosen) { showError("Choose a video, drop one, or record one with the webcam."); return; }
    const why = await problem(chosen);
    if (why) { showError(why); return; }
    const data = new FormData();
    data.append("avatar_id", avatarId.value);
    data.append("bbox_shift", form.elements.bbox_shift.value || "0");
    data.append("wait", "false");
    data.append("video_file", chosen, chosen.name);
    const request = new XMLHttpRequest();
    request.open("POST", "/avatars/prepare");
    request.setRequestHeader("X-CSRFToken", csrf);
    request.setRequestHeader("Accept", "application/json");
    request.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total); };
    request.onload = () => {
      if (request.status < 300) { window.location.reload(); return; }
      let message = `The upload failed (${request.status}).`;
      try { message = JSON.parse(request.responseText).message || message; } catch (error) { /* not JSON */ }
      showError(message);
      progressBox.hidden = true;
      submit.disabled = false;
    };
    request.onerror = () => { showError("The upload failed: check your connection and try again."); progressBox.hidden = true; submit.disabled = false; };
    showError("");
    bar.value = 0;
    progressBox.hidden = false;
    submit.disabled = true;
    request.send(data);
  });

  // Webcam: record a clip with MediaRecorder and use it as the upload.
  const camStart = document.getElementById("webcam-start");
  const camStop = document.getElementById("webcam-stop");
  const camPreview = document.getElementById("webcam-preview");
  let recorder = null;
  if (!navigator.mediaDevices || !window.MediaRecorder) camStart.hidden = true;
  camStart.addEventListener("click", async () => {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch (error) {
      showError("The webcam is not available: allow the camera in your browser, or upload a file.");
      return;
    }
    const parts = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
    recorder.onstop = () => {
      stream.getTracks().forEach((track) => track.stop());
      camPreview.hidden = true; camStop.hidden = true; camStart.hidden = false;
      const blob = new Blob(parts, { type: "video/webm" });
      choose(new File([blob], "webcam.webm", { type: "video/webm" }));
    };
    camPreview.srcObject = stream;
    camPreview.hidden = false; camStop.hidden = false; camStart.hidden = true;
    camPreview.play().catch(() => {});
    recorder.start(250);
    camStop.focus();
  });
  camStop.addEventListener("click", () => { if (recorder && recorder.state !== "inactive") recorder.stop(); });

  // Preparation progress, live from the avatar's event feed.
  for (const card of document.querySelectorAll('.avatar-card[data-status="queued"], .avatar-card[data-status="preparing"]')) {
    const id = card.dataset.avatarId;
    const feed = new EventSource(`/avatars/${encodeURIComponent(id)}/events`);
    feed.onmessage = (message) => {
      const data = JSON.parse(message.data);
      const progress = card.querySelector('[data-role="progress"]');
      const stage = card.querySelector('[data-role="stage"]');
      if (progress && typeof data.progress === "number") { progress.value = data.progress; progress.textContent = `${data.progress}%`; }
      if (stage && data.stage) stage.textContent = data.stage;
      if (data.status === "ready" || data.status === "failed") { feed.close(); window.location.reload(); }
    };
  }

  // Idle-loop previews: loaded and played only while the card is hovered or focused.
  for (const card of document.querySelectorAll(".avatar-card")) {
    const video = card.querySelector("video.preview");
    if (!video) continue;
    const play = () => { if (!video.src) video.src = video.dataset.src; card.classList.add("previewing"); video.play().catch(() => {}); };
    const stop = () => { card.classList.remove("previewing"); video.pause(); };
    card.addEventListener("mouseenter", play);
    card.addEventListener("mouseleave", stop);
    card.addEventListener("focusin", play);
    card.addEventListener("focusout", stop);
  }
})();
