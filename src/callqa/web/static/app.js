// callqa pages: upload progress, seeking from the transcript and the waveform, the playhead, AI assessment.
"use strict";

function csrf() {
  const main = document.querySelector("main");
  return main ? main.dataset.csrf || "" : "";
}

function player(leg) {
  return document.querySelector(`audio[data-leg="${leg}"]`);
}

function seek(leg, seconds) {
  const audio = player(leg);
  if (!audio) return;
  document.querySelectorAll("audio").forEach((a) => { if (a !== audio) a.pause(); });
  audio.currentTime = seconds;
  const played = audio.play();
  if (played) played.catch(() => {}); // autoplay may be refused: the position is set all the same
}

function setupSeeking() {
  document.querySelectorAll("button.seek").forEach((b) => {
    b.addEventListener("click", () => seek(b.dataset.leg, parseFloat(b.dataset.start)));
  });
  document.querySelectorAll(".seekable").forEach((box) => {
    const svg = box.querySelector("svg.wave");
    if (!svg) return;
    const duration = parseFloat(svg.dataset.duration), left = parseFloat(svg.dataset.left), width = parseFloat(svg.dataset.width);
    svg.addEventListener("click", (e) => {
      const r = svg.getBoundingClientRect();
      const x = (e.clientX - r.left) * (1000 / r.width);
      seek(box.dataset.leg, Math.max(0, Math.min(duration, ((x - left) / width) * duration)));
    });
    const audio = player(box.dataset.leg), head = svg.querySelector(".playhead");
    if (audio && head) {
      audio.addEventListener("timeupdate", () => {
        const x = left + Math.min(1, audio.currentTime / duration) * width;
        head.setAttribute("x1", x); head.setAttribute("x2", x);
      });
    }
  });
  // the transcript line being spoken is highlighted
  document.querySelectorAll("audio").forEach((audio) => {
    audio.addEventListener("timeupdate", () => {
      document.querySelectorAll(`.transcript button.seek[data-leg="${audio.dataset.leg}"]`).forEach((b) => {
        const li = b.closest("li"), start = parseFloat(b.dataset.start);
        const next = li.nextElementSibling && li.nextElementSibling.querySelector("button.seek");
        const end = next ? parseFloat(next.dataset.start) : Infinity;
        li.classList.toggle("playing", !audio.paused && audio.currentTime >= start && audio.currentTime < end);
      });
    });
  });
}

function setupUpload() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const box = form.parentElement.querySelector(".progress");
  const bar = box.querySelector("progress"), status = box.querySelector(".status");
  const say = (text) => { status.textContent = text; };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    box.hidden = false; bar.value = 0; say("uploading…");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) { bar.value = (50 * ev.loaded) / ev.total; say(`uploading ${Math.round((100 * ev.loaded) / ev.total)}%`); }
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = { detail: xhr.statusText }; }
      if (xhr.status >= 400) { bar.value = 0; say(`refused: ${body.detail || xhr.status}`); return; }
      follow(body);
    });
    xhr.addEventListener("error", () => say("upload failed: the service did not answer"));
    xhr.send(new FormData(form));
  });

  function follow(body) {
    if (body.status === "done") { bar.value = 100; say("done: opening the call…"); window.location.assign(body.url); return; }
    if (body.status === "failed") { bar.value = 0; say(`analysis failed: ${body.error}`); return; }
    bar.value = body.status === "running" ? 75 : 60;
    say(`${body.status}${body.elapsed_s !== undefined ? ` (${body.elapsed_s} s)` : ""}…`);
    fetch(`/ui/jobs/${body.job_id}?wait=5`, { credentials: "same-origin" })
      .then((r) => r.json().then((j) => (r.ok ? j : { status: "failed", error: j.detail })))
      .then(follow)
      .catch(() => setTimeout(() => follow(body), 2000));
  }
}

function setupAssessment() {
  const form = document.getElementById("assess-form");
  if (!form) return;
  const out = document.getElementById("assessment");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true; out.hidden = false; out.textContent = "asking…";
    fetch(form.action, { method: "POST", body: new FormData(form), headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" })
      .then((r) => r.json().then((j) => ({ ok: r.ok, j })))
      .then(({ ok, j }) => {
        out.textContent = ok ? `${j.text}\n\n— ${j.offline ? "offline summary" : `${j.provider} ${j.model}`}${j.error ? ` (${j.error})` : ""}` : `refused: ${j.detail}`;
      })
      .catch(() => { out.textContent = "the service did not answer"; })
      .finally(() => { button.disabled = false; });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupSeeking();
  setupUpload();
  setupAssessment();
});
