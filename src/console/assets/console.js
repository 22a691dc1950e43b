// The desk console's one script: live inbox over Server-Sent Events, ticking ages, times in the
// officer's own zone, confirmations. The pages work without it (plain links and forms); it only
// adds what a desk at 3 a.m. needs. No inline script anywhere: the CSP forbids it.
"use strict";

(function () {
  const body = document.body;
  const baseTitle = document.title;

  function humanAge(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d > 0) return d + "d" + h + "h";
    if (h > 0) return h + "h" + m + "m";
    if (m > 0) return m + "m" + s + "s";
    return s + "s";
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll("time[data-age]").forEach(function (el) {
      const at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) el.textContent = humanAge(now - at);
    });
  }

  function localTimes(root) {
    const fmt = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
    });
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      const at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at)) el.title = fmt.format(at);
    });
    root.querySelectorAll("time[data-local-only]").forEach(function (el) {
      const at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at)) el.textContent = fmt.format(at);
    });
  }

  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  // The title badge counts requests waiting for this desk (RECEIVED).
  function badge() {
    const waiting = document.querySelectorAll("#inbox-rows tr[data-state='RECEIVED']").length;
    document.title = waiting > 0 ? "(" + waiting + ") " + baseTitle : baseTitle;
  }

  function showFlash() {
    const banner = document.getElementById("flash-banner");
    if (banner) banner.hidden = false;
  }

  // Calling for attention on a new FLASH or IMMEDIATE request: a browser notification (once the
  // officer allowed them with the button), a short tone made with the Web Audio API (no sound
  // file), and the title count. Each request calls once, however many events it has.
  const called = new Set();
  let audio = null;

  // Browsers start audio only after a gesture on the page: the first click prepares it.
  function unlockAudio() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context || audio) return;
    try { audio = new Context(); } catch (e) { audio = null; }
  }

  function tone() {
    if (!audio) return;
    if (audio.state === "suspended") audio.resume();
    const start = audio.currentTime;
    [880, 660, 880].forEach(function (frequency, i) {
      const oscillator = audio.createOscillator();
      const gain = audio.createGain();
      oscillator.type = "sine";
      oscillator.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, start + i * 0.18);
      gain.gain.exponentialRampToValueAtTime(0.3, start + i * 0.18 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + i * 0.18 + 0.16);
      oscillator.connect(gain).connect(audio.destination);
      oscillator.start(start + i * 0.18);
      oscillator.stop(start + i * 0.18 + 0.17);
    });
  }

  function permissionButton() {
    const button = document.getElementById("allow-notifications");
    if (!button || !("Notification" in window)) return;
    button.hidden = Notification.permission !== "default";
    button.addEventListener("click", function () {
      unlockAudio();
      Promise.resolve(Notification.requestPermission()).then(function () {
        button.hidden = Notification.permission !== "default";
        body.dataset.notifications = Notification.permission;
      });
    });
    body.dataset.notifications = Notification.permission;
  }

  function callAttention(event) {
    const urgent = event.precedence === "FLASH" || event.precedence === "IMMEDIATE";
    if (!urgent || event.state !== "RECEIVED" || called.has(event.message_id)) return;
    called.add(event.message_id);
    tone();
    body.dataset.attentionCalls = String(called.size);
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        const shown = new Notification(body.dataset.attentionTitle, {
          body: (event.exercise ? "EXERCISE " : "") + event.precedence + " " + body.dataset.attentionFrom + " " + event.peer,
          tag: event.message_id,
          requireInteraction: event.precedence === "FLASH"
        });
        shown.onclick = function () { window.focus(); window.location.href = "/message/" + encodeURIComponent(event.message_id); };
        body.dataset.notificationsShown = String(Number(body.dataset.notificationsShown || 0) + 1);
      } catch (e) { /* some browsers allow notifications only from a service worker */ }
    }
  }

  // One refresh at a time; a change that arrives during one is not lost: another follows it.
  let refreshing = null;
  let again = false;
  function refreshInbox() {
    const rows = document.getElementById("inbox-rows");
    if (!rows) return;
    if (refreshing) { again = true; return; }
    again = false;
    refreshing = fetch("/inbox/rows" + window.location.search, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) {
        const before = new Set(Array.from(rows.querySelectorAll("tr[data-id]")).map(function (r) { return r.dataset.id; }));
        rows.innerHTML = html;
        rows.querySelectorAll("tr[data-id]").forEach(function (row) {
          if (!before.has(row.dataset.id)) {
            row.classList.add("new");
            if (row.dataset.precedence === "FLASH") showFlash();
          }
        });
        const empty = document.querySelector("main .empty");
        if (empty && rows.children.length > 0) empty.hidden = true;
        localTimes(rows);
        tick();
        badge();
      })
      .catch(function () { /* the next event or reconnect tries again */ })
      .finally(function () {
        refreshing = null;
        if (again) refreshInbox();
      });
  }

  function live() {
    const status = document.getElementById("live");
    if (!window.EventSource) return;
    const source = new EventSource("/events");
    source.addEventListener("open", function () {
      if (status) { status.textContent = body.dataset.liveOn; status.className = "live on"; }
      refreshInbox();
    });
    source.addEventListener("error", function () {
      if (status) { status.textContent = body.dataset.liveOff; status.className = "live off"; }
    });
    source.addEventListener("change", function (message) {
      let event = {};
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (event.precedence === "FLASH" && event.state === "RECEIVED") showFlash();
      callAttention(event);
      refreshInbox();
    });
  }

  localTimes(document);
  tick();
  badge();
  confirmations();
  permissionButton();
  document.addEventListener("click", unlockAudio, { once: true });
  setInterval(tick, 1000);
  if (body.dataset.page !== "error") live();
})();
