// The avatars page: upload (drag and drop, checks before sending, a progress bar), a webcam
// recording instead of a file, live preparation progress, idle-loop previews on hover/focus.
(() => {
  "use strict";
  const forms = window.MuseTalkForms;
  const form = document.getElementById("avatar-upload");
  const dropText = document.getElementById("dropzone-text");
  const showError = forms.errorBox(document.getElementById("upload-error"));
  const limits = {
    kind: "video", what: "a video: choose an MP4, MOV or WebM file",
    extensions: [".mp4", ".mov", ".webm", ".mkv", ".m4v"],
    maxBytes: Number(form.dataset.maxBytes), maxSeconds: Number(form.dataset.maxSeconds),
  };
  let chosen = null;  // the File to upload (picked, dropped or recorded)

  function choose(file) {
    chosen = file;
    dropText.textContent = `${file.name} (${(file.size / 1048576).toFixed(1)} MB)`;
    showError("");
  }
  forms.dropzone(document.getElementById("dropzone"), document.getElementById("video-file"), choose);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const avatarId = form.elements.avatar_id;
    if (!avatarId.value || !avatarId.checkValidity()) {
      showError("Give the avatar a name: letters, digits, “_” or “-”, starting with a letter or digit.");
      avatarId.focus();
      return;
    }
    if (!chosen) { showError("Choose a video, drop one, or record one with the webcam."); return; }
    const why = await forms.problem(chosen, limits);
    if (why) { showError(why); return; }
    const data = new FormData();
    data.append("avatar_id", avatarId.value);
    data.append("bbox_shift", form.elements.bbox_shift.value || "0");
    data.append("wait", "false");
    data.append("video_file", chosen, chosen.name);
    forms.submit("/avatars/prepare", data, "upload", showError);
  });

  // Webcam: record a clip and use it as the upload.
  forms.recordButtons({
    start: document.getElementById("webcam-start"), stop: document.getElementById("webcam-stop"),
    preview: document.getElementById("webcam-preview"),
    constraints: { video: true, audio: true }, name: "webcam.webm", type: "video/webm",
    unavailable: "The webcam is not available: allow the camera in your browser, or upload a file.",
    showError, onFile: choose,
  });

  // Preparation progress, live from the avatar's event feed.
  for (const card of document.querySelectorAll('.avatar-card[data-status="queued"], .avatar-card[data-status="preparing"]')) {
    forms.followProgress(`/avatars/${encodeURIComponent(card.dataset.avatarId)}/events`, card, ["ready", "failed"]);
  }

  // Idle-loop previews: loaded and played only while the card is hovered or focused.
  for (const card of document.querySelectorAll(".avatar-card")) {
    const video = card.querySelector("video.preview");
    if (!video) continue;
    const play = () => { if (!video.src) video.src = video.dataset.src; card.classList.add("previewing"); video.play().catch(() => {}); };
    const pause = () => { card.classList.remove("previewing"); video.pause(); };
    card.addEventListener("mouseenter", play);
    card.addEventListener("mouseleave", pause);
    card.addEventListener("focusin", play);
    card.addEventListener("focusout", pause);
  }
})();
