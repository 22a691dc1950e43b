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
      refreshInbox();
    });
  }

  localTimes(document);
  tick();
  badge();
  confirmations();
  setInterval(tick, 1000);
  if (body.dataset.page !== "error") live();
})();
