// The kiosk screen: the daemon pushes decisions, liveness prompts and status over Server-Sent Events.
"use strict";
(function () {
  const tz = document.body.dataset.tz || "Asia/Jakarta";
  const ZONES = {"Asia/Jakarta": "WIB", "Asia/Makassar": "WITA", "Asia/Jayapura": "WIT"};
  const IDLE = "Hadapkan wajah ke kamera atau tempelkan jari";
  const SHOW_MS = 6000;
  const NOTICE_MS = 12000;
  const $ = (id) => document.getElementById(id);
  const timeFmt = new Intl.DateTimeFormat("id-ID", {timeZone: tz, hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
  const dateFmt = new Intl.DateTimeFormat("id-ID", {timeZone: tz, weekday: "long", day: "numeric", month: "long", year: "numeric"});
  let offsetMs = 0;  // corrected UTC minus this browser's clock (both run on the terminal)
  let clearTimer = null;
  window.__kiosk = {shown: [], status: null, choice: null, armed: null, answers: []};
  let codes = [];
  let choiceTimer = null;

  function tick() {
    const now = new Date(Date.now() + offsetMs);
    $("time").textContent = timeFmt.format(now).replace(":", ".");
    $("date").textContent = dateFmt.format(now);
    $("zone").textContent = ZONES[tz] || tz;
  }

  function fit(el, maxPx, minPx) {
    // Long names must fit the 800x480 screen: shrink the text until it fits its box.
    let size = maxPx;
    el.style.fontSize = size + "px";
    while (size > minPx && (el.scrollHeight > el.clientHeight + 1 || el.scrollWidth > el.clientWidth + 1)) {
      size -= 2;
      el.style.fontSize = size + "px";
    }
  }

  function showNotices(lines) {
    // The employee's messages (and what the terminal noticed) under the clock while the punch shows.
    const list = $("notices");
    list.replaceChildren(...(lines || []).map((t) => { const li = document.createElement("li"); li.textContent = t; return li; }));
    list.hidden = !list.children.length;
    $("clock").classList.toggle("with-notices", !list.hidden);
    for (const li of list.children) fit(li, 20, 11);
    // each line fits its box; the list as a whole must fit the space under the clock too
    for (let size = 20; size > 11 && list.scrollHeight > list.clientHeight + 1; size--) {
      for (const li of list.children) li.style.fontSize = Math.min(parseFloat(li.style.fontSize), size) + "px";
    }
  }

  function show(text, cls, holdMs, unverified, notices) {
    // unverified: the punch's time rests on no trusted sample; its kind and time are the best estimate
    // and are corrected later, so the screen says so beside the name.
    const box = $("result"), msg = $("message");
    box.className = cls;
    msg.textContent = text;
    $("punch-unverified").hidden = !unverified;
    showNotices(notices);
    fit(msg, cls === "idle" ? 26 : 32, 16);
    if (clearTimer) clearTimeout(clearTimer);
    clearTimer = holdMs ? setTimeout(() => show(IDLE, "idle", 0), holdMs) : null;
    requestAnimationFrame(() => {
      // What was on the screen, laid out, as it was shown: a reader (the tests, a support session) sees
      // the badge's place even after the idle screen has replaced it.
      const b = $("punch-unverified"), r = b.getBoundingClientRect(), q = msg.getBoundingClientRect();
      window.__kiosk.shown.push({text: text, cls: cls, unverified: !!unverified, notices: notices || [],
                                 badge: b.hidden ? null : {text: b.innerText, left: r.left, top: r.top,
                                                           bottom: r.bottom},
                                 message: {right: q.right, top: q.top, bottom: q.bottom},
                                 at: performance.timeOrigin + performance.now()});
      if (window.__kiosk.shown.length > 50) window.__kiosk.shown.shift();
    });
  }

  function chip(id, value, okText, badText, okCls, badCls) {
    const el = $(id);
    if (value === null || value === undefined) { el.hidden = true; return; }
    el.hidden = false;
    el.textContent = value ? okText : badText;
    el.className = "chip " + (value ? okCls : badCls);
  }

  function status(s) {
    window.__kiosk.status = s;
    if (s.utc) {
      const t = Date.parse(s.utc);
      if (!isNaN(t)) offsetMs = t - Date.now();
    }
    $("unverified").hidden = !!s.time_verified;
    $("apel").hidden = !s.apel_cancelled;
    // punches are refused (a full disk): said for as long as it lasts, not only after an attempt
    const refused = s.storage && s.storage.ok === false;
    $("storage").hidden = !refused;
    $("storage").textContent = refused ? (s.storage.message || "Presensi ditolak — hubungi operator") : "";
    chip("ind-network", s.central ? s.online : null, "Terhubung", "Luring", "ok", "bad");
    const pending = $("ind-pending");
    if (s.pending === null || s.pending === undefined) { pending.hidden = true; }
    else { pending.hidden = false; pending.textContent = "Antrean " + s.pending; pending.className = "chip " + (s.pending ? "warn" : "ok"); }
    chip("ind-finger", s.fingerprint, "Sidik jari siap", "Sidik jari mati", "ok", "bad");
    chip("ind-camera", s.camera, "Kamera siap", "Kamera mati", "ok", "bad");
    cameraState(s.camera);
    tick();
  }

  function decision(d) {
    if (!d.accepted) { show(d.message || "Tidak dikenali", "bad", SHOW_MS); return; }
    // a face or finger punch took the armed code (or had none): the next one starts empty
    if (d.recorded && (d.method === "face" || d.method === "finger")) armed(null);
    // a message takes longer to read than a name and a time
    const hold = d.notices && d.notices.length ? NOTICE_MS : SHOW_MS;
    show(d.message, d.recorded ? "ok" : "repeat", hold, d.time_verified === false, d.notices);
  }

  // -- work codes: a touch before the punch arms a code; after a recognised face or finger the daemon may
  // offer the codes of the punch's kind, and the punch waits for the answer (or "Lewati", or the time).
  function button(c, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = c.code + " " + c.label;
    b.dataset.code = c.code;
    b.addEventListener("click", onClick);
    return b;
  }

  function post(body) {
    return fetch("/kiosk/work-code", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)})
      .then((r) => r.json().then((j) => {
        window.__kiosk.answers.push({status: r.status, body: j});
        if (!r.ok) show(j.error || "Kode kerja ditolak", "bad", SHOW_MS);
        return j;
      }))
      .catch(() => show("Kode kerja tidak terkirim — silakan ulangi", "bad", SHOW_MS));
  }

  function renderCodes(list) {
    codes = list || [];
    const grid = $("code-buttons");
    grid.textContent = "";
    for (const c of codes) {
      grid.appendChild(button(c, () => post({code: window.__kiosk.armed === c.code ? null : c.code})));
    }
    $("codes").hidden = !codes.length;
    document.body.classList.toggle("has-codes", codes.length > 0);
  }

  function armed(a) {
    const code = a && a.code !== null && a.code !== undefined ? a.code : null;
    window.__kiosk.armed = code;
    for (const b of $("code-buttons").children) b.classList.toggle("armed", Number(b.dataset.code) === code);
    const line = $("armed");
    line.hidden = code === null;
    line.textContent = code === null ? "" : "Dipilih: " + code + " " + (a.label || "");
  }

  function offer(o) {
    window.__kiosk.choice = o;
    $("choice-title").textContent = (o.name || o.employee) + " — " + (o.kind_label || o.kind) + ": pilih kode kerja";
    const grid = $("choice-buttons");
    grid.textContent = "";
    for (const c of o.codes) grid.appendChild(button(c, () => post({token: o.token, code: c.code})));
    $("choice-skip").onclick = () => post({token: o.token, code: null});
    let left = Math.round(o.seconds);
    $("choice-left").textContent = left + " detik";
    if (choiceTimer) clearInterval(choiceTimer);
    choiceTimer = setInterval(() => { left = Math.max(0, left - 1); $("choice-left").textContent = left + " detik"; }, 1000);
    $("choice").hidden = false;
    fit($("choice-title"), 24, 16);
    show("Pilih kode kerja, atau tekan Lewati", "prompt", 0);
  }

  function offerClosed(c) {
    if (!window.__kiosk.choice || window.__kiosk.choice.token !== c.token) return;
    window.__kiosk.choice = null;
    if (choiceTimer) clearInterval(choiceTimer);
    $("choice").hidden = true;
    if ($("result").className === "prompt") show(IDLE, "idle", 0);  // the punch's decision follows
  }

  function prompt(p) {
    if (p.text) show(p.text, "prompt", 0);
    else if ($("result").className === "prompt") show(IDLE, "idle", 0);
  }

  function connect() {
    const es = new EventSource("/events");
    es.addEventListener("status", (e) => status(JSON.parse(e.data)));
    es.addEventListener("decision", (e) => decision(JSON.parse(e.data)));
    es.addEventListener("prompt", (e) => prompt(JSON.parse(e.data)));
    es.addEventListener("workcode-armed", (e) => armed(JSON.parse(e.data)));
    es.addEventListener("workcodes", (e) => renderCodes(JSON.parse(e.data).codes));
    es.addEventListener("workcode", (e) => offer(JSON.parse(e.data)));
    es.addEventListener("workcode-closed", (e) => offerClosed(JSON.parse(e.data)));
    es.onopen = () => { window.__kiosk.connected = true; };
    es.onerror = () => { window.__kiosk.connected = false; };
  }

  let cameraUp = null;
  function cameraState(up) {
    // A dead camera shows as such (not as a frozen last picture); a camera that returns is reconnected.
    const img = $("preview"), off = $("camera-off");
    if (up === false) { img.hidden = true; off.hidden = false; }
    if (up === true && cameraUp === false) { img.hidden = false; img.src = img.dataset.src + "?t=" + Date.now(); }
    cameraUp = up;
  }

  function preview() {
    const img = $("preview"), off = $("camera-off");
    img.addEventListener("error", () => {
      off.hidden = false;
      setTimeout(() => { img.src = "/camera.mjpg?t=" + Date.now(); }, 5000);
    });
    img.addEventListener("load", () => { off.hidden = true; });
    // The preview never finishes loading (it is a stream): start it after the page's load event.
    window.addEventListener("load", () => { img.src = img.dataset.src; });
  }

  preview();
  show(IDLE, "idle", 0);
  tick();
  setInterval(tick, 1000);
  fetch("/kiosk/state").then((r) => r.json()).then((s) => {
    status(s.indicators);
    renderCodes(s.work_codes);
    armed(s.armed);
    window.__kiosk.codesReady = true;
  }).catch(() => {});
  connect();
})();
