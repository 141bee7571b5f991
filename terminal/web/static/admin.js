// Admin pages: the camera enrolment controls (fetch with the session's CSRF token, then poll progress).
"use strict";
(function () {
  const csrf = document.body.dataset.csrf;
  const form = document.getElementById("enrol-form");
  if (!form) return;
  const preview = document.getElementById("enrol-preview");
  window.addEventListener("load", () => { preview.src = preview.dataset.src; });  // a stream: after load
  const msg = document.getElementById("enrol-message");
  const bar = document.getElementById("enrol-progress");
  let timer = null;

  function post(url, body) {
    return fetch(url, {method: "POST", credentials: "same-origin",
                       headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                       body: JSON.stringify(body || {})})
      .then((r) => r.json().then((j) => { if (!r.ok) throw new Error(j.error || r.status); return j; }));
  }

  function render(s) {
    msg.textContent = s.message + (s.needed ? " (" + s.accepted + "/" + s.needed + ")" : "");
    msg.dataset.state = s.state;
    if (s.needed) { bar.max = s.needed; bar.value = s.accepted; }
    if (s.state !== "running" && timer) { clearInterval(timer); timer = null; }
  }

  function poll() {
    fetch("/admin/api/enrol", {credentials: "same-origin"}).then((r) => r.json()).then(render).catch(() => {});
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const employee = document.getElementById("enrol-employee").value;
    const needed = parseInt(document.getElementById("enrol-needed").value, 10);
    post("/admin/api/enrol", {employee: employee, needed: needed}).then((s) => {
      render(s);
      if (!timer) timer = setInterval(poll, 500);
    }).catch((err) => { msg.textContent = "Gagal: " + err.message; msg.dataset.state = "failed"; });
  });
  document.getElementById("enrol-cancel").addEventListener("click", () => post("/admin/api/enrol/cancel").then(render));
  poll();
})();
