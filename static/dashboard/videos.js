// The videos page: audio (a file, dropped, or recorded from the microphone) sent to
// POST /generate with a progress bar; each video's progress followed live until it plays.
(() => {
  "use strict";
  const forms = window.MuseTalkForms;
  const form = document.getElementById("video-form");

  for (const job of document.querySelectorAll('.job[data-status="queued"], .job[data-status="running"]')) {
    forms.followProgress(`/generate/${encodeURIComponent(job.dataset.requestId)}/events`, job, ["succeeded", "failed", "cancelled"]);
  }
  if (!form) return;  // no prepared avatar yet

  const dropText = document.getElementById("audio-dropzone-text");
  const showError = forms.errorBox(document.getElementById("video-error"));
  const limits = {
    kind: "audio", what: "audio: choose a WAV, MP3, M4A, OGG or WebM file",
    extensions: [".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".webm"],
    maxBytes: Number(form.dataset.maxBytes), maxSeconds: Number(form.dataset.maxSeconds),
  };
  let chosen = null;

  function choose(file) {
    chosen = file;
    dropText.textContent = `${file.name} (${(file.size / 1048576).toFixed(2)} MB)`;
    showError("");
  }
  forms.dropzone(document.getElementById("audio-dropzone"), document.getElementById("audio-file"), choose);

  forms.recordButtons({
    start: document.getElementById("mic-start"), stop: document.getElementById("mic-stop"),
    status: document.getElementById("mic-status"), busyText: "Recording…",
    constraints: { audio: true }, name: "recording.webm", type: "audio/webm",
    unavailable: "The microphone is not available: allow it in your browser, or upload a file.",
    showError, onFile: choose,
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!chosen) { showError("Choose audio, drop a file, or record from the microphone."); return; }
    const why = await forms.problem(chosen, limits);
    if (why) { showError(why); return; }
    const data = new FormData();
    data.append("avatar_id", form.elements.avatar_id.value);
    data.append("audio_file", chosen, chosen.name);
    forms.submit("/generate", data, "video", showError);
  });
})();
