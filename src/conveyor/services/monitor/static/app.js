/* Conveyor monitor: plain JS, no build step. Live counts over server-sent events
   (/api/events), everything else from the JSON API. Untrusted text (job names, payloads,
   errors) is only ever set through textContent. */
(function () {
  "use strict";

  const STATES = ["waiting", "prioritized", "delayed", "active", "paused", "completed", "failed", "waiting-children"];
  // A job that waits, is delayed or runs can be cancelled (QueueClient.cancel).
  const CANCELLABLE = ["waiting", "prioritized", "delayed", "paused", "active", "waiting-children"];

  const LIST_STATES = ["waiting", "active", "delayed", "prioritized", "paused", "completed", "failed"];
  const COLORS = {
    waiting: "#64748b", prioritized: "#8b5cf6", delayed: "#d97706", active: "#0284c7",
    paused: "#a3a3a3", completed: "#16a34a", failed: "#dc2626", "waiting-children": "#0d9488",
  };
  const PAGE_SIZE = 20;

  const ui = {
    queue: null, state: "waiting", page: 0, search: "", jobId: null,
    me: { can_act: false }, overview: [], prev: null, historyTimer: null, detailTimer: null,
  };

  // --- small helpers ----------------------------------------------------------------------
  const $ = (sel) => document.querySelector(sel);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());

  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    const s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    if (s < 86400) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function ago(ms) {
    if (!ms) return "–";
    const diff = Date.now() - ms;
    if (diff < 0) return "in " + duration(-diff);
    return duration(diff) + " ago";
  }

  const stamp = (ms) => (ms ? new Date(ms).toLocaleString() : "");

  async function api(path, options) {
    const opts = Object.assign({ method: "GET" }, options || {});
    const headers = { Accept: "application/json" };
    if (opts.method !== "GET") {
      headers["X-Conveyor-Action"] = "1";
      if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    }
    const res = await fetch(path, { method: opts.method, headers: headers, body: opts.body, credentials: "same-origin" });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) throw new Error((body && (body.detail || body.title)) || res.status + " " + res.statusText);
    return body;
  }

  const q = (name) => encodeURIComponent(name);

  function toast(message, kind) {
    const node = el("div", { class: "toast " + (kind || "ok"), role: "status", text: message });
    $("#toasts").appendChild(node);
    setTimeout(() => node.remove(), kind === "error" ? 7000 : 3500);
  }

  function confirmAction(title, text, okLabel) {
    const dialog = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    $("#confirm-ok").textContent = okLabel || "Confirm";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "cancel";
      dialog.showModal();
    });
  }

  async function act(title, text, okLabel, call, done) {
    if (!(await confirmAction(title, text, okLabel))) return;
    try {
      const result = await call();
      toast(done(result));
      refreshSoon(true);
    } catch (err) {
      toast(err.message, "error");
    }
  }

  // --- routing: #/q/<queue>/<state> and #/q/<queue>/job/<id> ----------------------------
  function route() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] === "q" && parts[1]) {
      const changed = ui.queue !== parts[1];
      ui.queue = parts[1];
      if (parts[2] === "job" && parts[3]) {
        ui.jobId = parts.slice(3).join("/");
      } else {
        ui.jobId = null;
        if (!parts[2]) {  // no tab asked for: the one worth seeing, written into the address
          location.replace("#/q/" + q(ui.queue) + "/" + (changed ? defaultState(summary()) : ui.state));
          return;
        }
        const state = LIST_STATES.includes(parts[2]) ? parts[2] : ui.state;
        if (state !== ui.state || changed) { ui.page = 0; }
        ui.state = state;
      }
    } else {
      ui.jobId = null;
      const first = ui.overview[0];
      if (first) { location.replace("#/q/" + q(first.name) + "/" + defaultState(first)); return; }
    }
    render();
  }

  // The tab to open when none is asked for: waiting jobs, else failures, else any state that
  // has jobs (not an empty "waiting" beside a pile of failures).
  function defaultState(s) {
    const counts = (s && s.counts) || {};
    for (const st of ["waiting", "failed", "active", "delayed", "prioritized", "paused", "completed"]) {
      if (counts[st]) return st;
    }
    return "waiting";
  }

  function go(state) { location.hash = "#/q/" + q(ui.queue) + "/" + state; }

  // --- rendering ----------------------------------------------------------------------------
  function summary() { return ui.overview.find((s) => s.name === ui.queue) || null; }

  function render() {
    renderQueues();
    const queueView = $("#view-queue");
    const jobView = $("#view-job");
    document.body.classList.toggle("can-act", !!ui.me.can_act);
    if (!ui.queue) { queueView.hidden = true; jobView.hidden = true; return; }
    if (ui.jobId) {
      queueView.hidden = true;
      jobView.hidden = false;
      loadJob();
      return;
    }
    jobView.hidden = true;
    queueView.hidden = false;
    renderQueueHead();
    renderTabs();
    loadJobs();
    loadErrors();
    loadWorkers();
    loadSchedules();
    loadCleanup();
    loadHistory();
  }

  function shownStates() {
    // waiting-children only matters to flows: a column only when some queue has such jobs
    return STATES.filter((st) => st !== "waiting-children" || ui.overview.some((s) => s.counts[st]));
  }

  function renderQueues() {
    const head = $("#queues thead");
    const states = shownStates();
    if (head.dataset.states !== states.join()) {
      head.textContent = "";
      head.dataset.states = states.join();
      head.appendChild(el("tr", {}, el("th", { text: "queue" }),
        states.map((s) => el("th", { class: "num", text: s })),
        el("th", { class: "num", text: "workers" }), el("th", { class: "num", text: "oldest wait" }),
        el("th", { text: "limits" }), el("th", { text: "status" })));
    }
    const body = $("#queues tbody");
    body.textContent = "";
    for (const s of ui.overview) {
      const row = el("tr", { class: s.name === ui.queue ? "selected clickable" : "clickable", "data-queue": s.name,
        onclick: () => { location.hash = "#/q/" + q(s.name) + "/" + ui.state; } },
        el("td", { class: "name" }, el("a", { href: "#/q/" + q(s.name) + "/" + ui.state, text: s.name })),
        states.map((st) => el("td", { class: "num" + (s.counts[st] ? " st-" + st : " zero"), "data-state": st, text: num(s.counts[st]) })),
        el("td", { class: "num", text: num(s.workers) }),
        el("td", { class: "num", text: s.oldest_waiting_s ? duration(s.oldest_waiting_s * 1000) : "–" }),
        el("td", { class: "limits", "data-testid": "limits-" + s.name, text: limitsText(s.limits) }),
        el("td", {}, s.paused ? el("span", { class: "badge paused", text: "paused" })
          : heldBack(s.limits) ? el("span", { class: "badge held", text: "held back", title: heldBack(s.limits) })
          : el("span", { class: "badge running", text: "running" })));
      body.appendChild(row);
    }
    $("#queues-hint").textContent = ui.overview.length + (ui.overview.length === 1 ? " queue" : " queues");
  }

  // A queue's limits (docs/flow-control.md) in a few words: "5/s · 2 at once", or "–".
  function limitsText(limits) {
    if (!limits) return "–";
    const parts = [];
    if (limits.rate) {
      const d = limits.rate.duration_ms;
      const per = d === 1000 ? "s" : d === 60000 ? "min" : d === 3600000 ? "h" : duration(d);
      parts.push(num(limits.rate.max) + "/" + per);
    }
    if (limits.concurrency) parts.push(num(limits.concurrency) + " at once");
    return parts.length ? parts.join(" · ") : "–";
  }

  // Why the queue is held back right now, or "" when it is not.
  function heldBack(limits) {
    if (!limits) return "";
    if (limits.limited_ms > 0) {
      return (limits.held ? "held by RateLimited for " : "rate limited for ") + duration(limits.limited_ms);
    }
    return limits.maxed ? "at its concurrency (" + num(limits.concurrency) + " active)" : "";
  }

  function renderQueueHead() {
    const s = summary();
    $("#queue-title").textContent = ui.queue;
    $("#paused-badge").hidden = !(s && s.paused);
    const held = s ? heldBack(s.limits) : "";
    $("#limits-badge").hidden = !(s && (held || limitsText(s.limits) !== "–"));
    $("#limits-badge").textContent = s ? (held ? "held back: " + held : "limits: " + limitsText(s.limits)) : "";
    $("#limits-badge").className = "badge " + (held ? "held" : "limits");
    const pause = $("#btn-pause");
    pause.textContent = s && s.paused ? "Resume" : "Pause";
    pause.dataset.testid = s && s.paused ? "resume" : "pause";
    const cards = $("#counts");
    cards.textContent = "";
    for (const st of STATES) {
      if (st === "waiting-children" && !(s && s.counts[st])) continue;
      const clickable = LIST_STATES.includes(st);
      cards.appendChild(el("button", {
        class: "card" + (st === ui.state ? " current" : ""), "data-state": st, "data-testid": "count-" + st,
        style: "--c:" + COLORS[st], disabled: !clickable, onclick: clickable ? () => go(st) : null,
      }, el("span", { class: "card-label", text: st }), el("span", { class: "card-value", text: s ? num(s.counts[st]) : "–" })));
    }
    const meta = $("#queue-meta");
    meta.textContent = "";
    if (s) {
      meta.append(
        el("span", {}, el("b", { text: num(s.workers) }), s.workers === 1 ? " worker" : " workers"),
        el("span", {}, "oldest waiting ", el("b", { text: s.oldest_waiting_s ? duration(s.oldest_waiting_s * 1000) : "–" })),
        el("span", { "data-testid": "processed-all-time", title: "Jobs Conveyor workers have completed since this queue's history began (written once a second). The completed card counts the jobs BullMQ keeps now: removeOnComplete and cleanup take some away, Node workers add theirs." },
          "processed all-time ", el("b", { text: num(s.totals.completed) })),
        el("span", {}, "failed all-time ", el("b", { text: num(s.totals.failed) })),
        el("span", {}, "retried attempts ", el("b", { text: num(s.totals.retried) })));
      if (s.totals.deferred) {
        meta.append(el("span", { title: "jobs put back by a worker that does not know their task (waiting for one that does)" },
          "deferred (unknown task) ", el("b", { text: num(s.totals.deferred) })));
      }
    }
    $("#btn-retry-all").disabled = !(s && s.counts.failed);
  }

  function renderTabs() {
    const tabs = $("#state-tabs");
    tabs.textContent = "";
    const s = summary();
    for (const st of LIST_STATES) {
      tabs.appendChild(el("button", {
        class: "tab" + (st === ui.state ? " current" : ""), role: "tab", "data-testid": "tab-" + st,
        onclick: () => go(st),
      }, st, el("span", { class: "tab-count", text: s ? num(s.counts[st]) : "" })));
    }
  }

  // --- job list -----------------------------------------------------------------------------
  let jobsSeq = 0;
  async function loadJobs() {
    const seq = ++jobsSeq;
    const params = new URLSearchParams({ state: ui.state, page: ui.page, size: PAGE_SIZE, q: ui.search });
    let data;
    try {
      data = await api("/api/queues/" + q(ui.queue) + "/jobs?" + params);
    } catch (err) {
      if (seq === jobsSeq) $("#jobs-note").textContent = err.message;
      return;
    }
    if (seq !== jobsSeq) return;
    renderJobs(data);
  }

  function jobColumns() {
    const base = [["id", (j) => el("a", { href: "#/q/" + q(ui.queue) + "/job/" + q(j.id), class: "mono", title: j.id, text: shortId(j.id) })],
      ["name", (j) => j.name]];
    const att = ["attempts", (j) => j.attempts_made + (j.attempts ? " / " + j.attempts : "")];
    switch (ui.state) {
      case "active":
        return base.concat([["progress", (j) => progressBar(j.progress)], ["started", (j) => ago(j.processed_on)], att]);
      case "completed":
        return base.concat([["finished", (j) => ago(j.finished_on)], ["wait", (j) => duration(j.wait_ms)], ["run", (j) => duration(j.run_ms)], att]);
      case "failed":
        return base.concat([["reason", (j) => el("span", { class: "reason", title: j.failed_reason || "", text: j.failed_reason || "" })],
          ["failed", (j) => ago(j.finished_on)], att]);
      case "delayed":
        return base.concat([["due", (j) => ago(j.timestamp + j.delay)], ["data", (j) => el("span", { class: "mono dim", text: j.data_preview })], att]);
      default:
        return base.concat([["created", (j) => ago(j.timestamp)], ["data", (j) => el("span", { class: "mono dim", text: j.data_preview })], att]);
    }
  }

  function shortId(id) { return id.length > 14 ? id.slice(0, 8) + "…" : id; }

  function progressBar(p) {
    const value = typeof p === "number" ? Math.max(0, Math.min(100, p)) : null;
    if (value === null) return p && typeof p === "object" ? JSON.stringify(p) : "–";
    return el("span", { class: "progress", title: value + "%" }, el("span", { style: "width:" + value + "%" }), el("em", { text: value + "%" }));
  }

  function rowActions(j) {
    const cell = el("td", { class: "row-actions act-only" });
    if (j.state === "failed" || j.state === "completed") {
      cell.appendChild(el("button", { class: "small", "data-testid": "retry-" + j.id, text: "Retry",
        onclick: (ev) => { ev.stopPropagation(); retryJob(j.id); } }));
    }
    if (CANCELLABLE.includes(j.state)) {
      cell.appendChild(el("button", { class: "small ghost", "data-testid": "cancel-" + j.id, text: "Cancel",
        onclick: (ev) => { ev.stopPropagation(); cancelJob(j.id); } }));
    }
    if (j.state !== "active") {
      cell.appendChild(el("button", { class: "small ghost", "data-testid": "remove-" + j.id, text: "Remove",
        onclick: (ev) => { ev.stopPropagation(); removeJob(j.id); } }));
    }
    return cell;
  }

  function renderJobs(data) {
    const cols = jobColumns();
    const head = $("#jobs thead");
    head.textContent = "";
    head.appendChild(el("tr", {}, cols.map(([label]) => el("th", { text: label })), el("th", { class: "act-only" })));
    const body = $("#jobs tbody");
    body.textContent = "";
    for (const j of data.jobs) {
      body.appendChild(el("tr", { "data-job-id": j.id, class: "clickable",
        onclick: () => { location.hash = "#/q/" + q(ui.queue) + "/job/" + q(j.id); } },
        cols.map(([, fn]) => { const v = fn(j); return el("td", {}, v === null || v === undefined ? "" : v); }),
        rowActions(j)));
    }
    if (!data.jobs.length) {
      body.appendChild(el("tr", {}, el("td", { colspan: cols.length + 1, class: "empty", text: ui.search ? "No job matches." : "No " + ui.state + " jobs." })));
    }
    const first = data.total ? data.page * data.size + 1 : 0;
    const last = Math.min(data.total, (data.page + 1) * data.size);
    $("#page-info").textContent = first + "–" + last + " of " + num(data.total);
    $("#prev").disabled = data.page === 0;
    $("#next").disabled = last >= data.total;
    let note = "";
    if (data.searched !== null && data.searched !== undefined) {
      note = "Searched the " + num(data.searched) + " newest " + ui.state + " jobs by id and name" + (data.truncated ? " (older ones not searched)." : ".");
    }
    $("#jobs-note").textContent = note;
  }

  function retryJob(id) {
    return act("Retry job?", "Job " + id + " goes back to the wait list with its attempts reset.", "Retry",
      () => api("/api/queues/" + q(ui.queue) + "/jobs/" + q(id) + "/retry", { method: "POST" }), () => "Job " + id + " sent back to the queue.");
  }

  function cancelJob(id) {
    return act("Cancel job?", "Job " + id + " ends failed, not retried: at once if it waits, within a second if it runs (its worker stops it).", "Cancel job",
      () => api("/api/queues/" + q(ui.queue) + "/jobs/" + q(id) + "/cancel", { method: "POST" }),
      (r) => r.stopping ? "Job " + id + " is being stopped." : "Job " + id + " cancelled.");
  }

  function removeJob(id) {
    return act("Remove job?", "Job " + id + " and its logs are deleted for good.", "Remove",
      () => api("/api/queues/" + q(ui.queue) + "/jobs/" + q(id), { method: "DELETE" }), () => {
        if (ui.jobId) location.hash = "#/q/" + q(ui.queue) + "/" + ui.state;
        return "Job " + id + " removed.";
      });
  }

  // --- errors, workers, history -----------------------------------------------------------
  async function loadErrors() {
    let data;
    try { data = await api("/api/queues/" + q(ui.queue) + "/errors"); } catch (err) { return; }
    const box = $("#errors");
    box.textContent = "";
    if (!data.groups.length) {
      box.appendChild(el("p", { class: "empty", text: "No failed jobs." }));
    }
    for (const g of data.groups) {
      box.appendChild(el("div", { class: "error-group", "data-testid": "error-group" },
        el("div", { class: "error-line" }, el("span", { class: "error-count", text: num(g.count) }),
          el("span", { class: "error-pattern", title: g.example, text: g.pattern })),
        el("div", { class: "error-meta" },
          el("span", { class: "hint", text: (g.names.join(", ") || "–") + " · latest " + ago(g.latest_ms) }),
          el("span", { class: "spacer" }),
          g.job_ids.slice(0, 3).map((id) => el("a", { class: "mono small-link", href: "#/q/" + q(ui.queue) + "/job/" + q(id), text: id.length > 10 ? id.slice(0, 8) + "…" : id })),
          el("button", { class: "small act-only", text: "Retry " + num(g.count), onclick: () => act("Retry this group?",
            num(g.count) + " failed jobs with “" + g.pattern + "” go back to the wait list.", "Retry",
            () => api("/api/queues/" + q(ui.queue) + "/errors/retry", { method: "POST", body: JSON.stringify({ pattern: g.pattern }) }),
            (r) => r.retried + " jobs sent back to the queue.") }),
          el("button", { class: "small ghost act-only", text: "Remove", onclick: () => act("Remove this group?",
            num(g.count) + " failed jobs with “" + g.pattern + "” are deleted for good.", "Remove",
            () => api("/api/queues/" + q(ui.queue) + "/errors/remove", { method: "POST", body: JSON.stringify({ pattern: g.pattern }) }),
            (r) => r.removed + " jobs removed.") }))));
    }
    $("#errors-hint").textContent = data.is_sample ? "newest " + num(data.sampled) + " of " + num(data.total_failed) : "";
  }

  async function loadWorkers() {
    let data;
    try { data = await api("/api/workers?queue=" + q(ui.queue)); } catch (err) { return; }
    const body = $("#workers tbody");
    body.textContent = "";
    for (const w of data.workers) {
      body.appendChild(el("tr", {}, el("td", { class: "mono", text: w.name || "(unnamed)" }),
        el("td", { class: "mono dim", text: w.addr }), el("td", { class: "num", title: "connected for", text: duration(w.age_s * 1000) })));
    }
    if (!data.workers.length) body.appendChild(el("tr", {}, el("td", { class: "empty", text: "No worker connected." })));
    $("#workers-hint").textContent = data.workers.length ? num(data.workers.length) + " connected" : "";
  }

  async function loadSchedules() {
    let data;
    try { data = await api("/api/queues/" + q(ui.queue) + "/schedules"); } catch (err) { return; }
    const body = $("#schedules tbody");
    body.textContent = "";
    const base = "/api/queues/" + q(ui.queue) + "/schedules/";
    for (const s of data.schedules) {
      const when = s.every_ms ? "every " + duration(s.every_ms) : s.cron + " " + (s.tz || "UTC");
      body.appendChild(el("tr", { "data-testid": "schedule", "data-schedule": s.id },
        el("td", {}, el("div", { class: "mono", text: s.id }), el("div", { class: "hint", text: s.task + " · " + when })),
        el("td", {}, el("div", { "data-testid": "schedule-next", title: stamp(s.next_run_ms), text: "next " + ago(s.next_run_ms) }),
          el("div", { class: "hint", title: s.last_job_id || "", text: s.last_run_ms ? "last " + ago(s.last_run_ms) : num(s.runs) + " runs" })),
        el("td", { class: "num" + (s.lag_ms > 0 ? " late" : ""), "data-testid": "schedule-lag", text: s.lag_ms > 0 ? duration(s.lag_ms) : "–" }),
        el("td", { class: "act-only" },
          el("button", { class: "small", "data-testid": "schedule-run", text: "Run now", onclick: () => act("Run " + s.id + " now?",
            "One " + s.task + " job is added now with the schedule's data; its next run stays as it is.", "Run now",
            () => api(base + q(s.id) + "/run", { method: "POST" }), (r) => { loadSchedules(); return "Job " + r.job_id + " added."; }) }),
          el("button", { class: "small ghost", "data-testid": "schedule-remove", text: "Remove", onclick: () => act("Remove schedule " + s.id + "?",
            "The schedule and its next run (unless it already runs) are deleted; no more " + s.task + " runs from it.", "Remove",
            () => api(base + q(s.id), { method: "DELETE" }), () => { loadSchedules(); return "Schedule " + s.id + " removed."; }) }))));
    }
    if (!data.schedules.length) body.appendChild(el("tr", {}, el("td", { class: "empty", colspan: 4, text: "No schedules." })));
    $("#schedules-hint").textContent = data.schedules.length ? num(data.schedules.length) : "";
  }

  async function loadCleanup() {
    let data;
    try { data = await api("/api/queues/" + q(ui.queue) + "/cleanup?limit=10"); } catch (err) { return; }
    const body = $("#cleanup tbody");
    body.textContent = "";
    for (const r of data.runs) {
      const removed = num(r.failed_jobs_removed) + " / " + num(r.failure_records_removed) + " / " + num(r.completed_jobs_removed);
      body.appendChild(el("tr", { "data-testid": "cleanup-run", title: r.trigger + " run by " + (r.runner || "?") },
        el("td", { title: stamp(r.started_at_ms) }, ago(r.started_at_ms),
          r.trigger === "manual" ? el("span", { class: "badge", text: "manual" }) : null,
          r.dry_run ? el("span", { class: "badge", "data-testid": "cleanup-dry-run", text: "dry run" }) : null),
        el("td", { class: "num", text: removed }),
        el("td", { class: "num", text: duration(r.duration_ms) })));
    }
    if (!data.runs.length) body.appendChild(el("tr", {}, el("td", { class: "empty", colspan: 3, text: "No cleanup run yet." })));
    $("#cleanup-hint").textContent = data.last_scheduled_run_ms ? "last scheduled " + ago(data.last_scheduled_run_ms) : "";
  }

  const THROUGHPUT = [
    { key: "completed", label: "completed", color: COLORS.completed, fill: true },
    { key: "failed", label: "failed", color: COLORS.failed },
    { key: "retried", label: "retried", color: "#d97706", dashed: true },
  ];
  const LATENCY = [
    { key: "wait_ms", label: "wait", color: "#7c3aed" },
    { key: "run_ms", label: "run", color: COLORS.active },
  ];

  async function loadHistory() {
    if (!ui.queue || ui.jobId) return;
    const minutes = $("#window").value;
    let data;
    try { data = await api("/api/queues/" + q(ui.queue) + "/history?minutes=" + minutes); } catch (err) { return; }
    const times = data.points.map((p) => p.t);
    const series = (defs) => defs.map((d) => Object.assign({}, d, { values: data.points.map((p) => p[d.key]) }));
    const tp = series(THROUGHPUT);
    const lat = series(LATENCY);
    window.ConveyorCharts.draw($("#chart-throughput"), { times: times, series: tp, unit: "/s" });
    window.ConveyorCharts.draw($("#chart-latency"), { times: times, series: lat, unit: "ms" });
    window.ConveyorCharts.legend($("#legend-throughput"), tp);
    window.ConveyorCharts.legend($("#legend-latency"), lat);
  }

  // --- job page -------------------------------------------------------------------------------
  async function loadJob() {
    const view = $("#view-job");
    let j;
    try {
      j = await api("/api/queues/" + q(ui.queue) + "/jobs/" + q(ui.jobId));
    } catch (err) {
      view.textContent = "";
      view.append(el("p", {}, el("a", { href: "#/q/" + q(ui.queue) + "/" + ui.state, text: "← " + ui.queue })),
        el("div", { class: "panel empty", text: err.message }));
      return;
    }
    view.textContent = "";
    const listState = LIST_STATES.includes(j.state) ? j.state : ui.state;
    const back = el("a", { href: "#/q/" + q(ui.queue) + "/" + listState, text: "← " + ui.queue + " · " + listState });
    const actions = el("div", { class: "actions act-only" });
    if (j.state === "failed" || j.state === "completed") {
      actions.appendChild(el("button", { "data-testid": "job-retry", text: "Retry", onclick: () => retryJob(j.id) }));
    }
    if (CANCELLABLE.includes(j.state)) {
      actions.appendChild(el("button", { class: "danger", "data-testid": "job-cancel", text: "Cancel", onclick: () => cancelJob(j.id) }));
    }
    if (j.state !== "active") {
      actions.appendChild(el("button", { class: "danger", "data-testid": "job-remove", text: "Remove", onclick: () => removeJob(j.id) }));
    }
    const fact = (label, value) => el("div", { class: "fact" }, el("span", { class: "fact-label", text: label }), el("span", { class: "fact-value" }, value));
    const pre = (value) => el("pre", { text: typeof value === "string" ? value : JSON.stringify(value, null, 2) });
    const failedForGood = j.state === "failed" && !!j.failed_reason;
    const lastStack = j.stacktrace.length ? j.stacktrace[j.stacktrace.length - 1] : null;
    const earlierStacks = j.stacktrace.slice(0, -1);
    const folded = (label, stacks) => el("details", {}, el("summary", { text: label }), stacks.map((s) => pre(s)));
    view.append(...[
      el("p", { class: "crumbs" }, back),
      el("div", { class: "queue-head" }, el("h1", { class: "mono", text: j.id }),
        el("span", { class: "badge st-" + j.state, "data-testid": "job-state", text: j.state }),
        el("span", { class: "job-name", text: j.name }), el("span", { class: "spacer" }), actions),
      el("div", { class: "panel facts" },
        fact("created", el("span", { title: stamp(j.timestamp), text: ago(j.timestamp) })),
        fact("started", el("span", { title: stamp(j.processed_on), text: ago(j.processed_on) })),
        fact("finished", el("span", { title: stamp(j.finished_on), text: ago(j.finished_on) })),
        fact("wait", duration(j.wait_ms)), fact("run", duration(j.run_ms)),
        fact("attempts", j.attempts_made + (j.attempts ? " of " + j.attempts : "") + " (" + j.attempts_started + " started)"),
        fact("stalled", String(j.stalled_count)), fact("delay", duration(j.delay)), fact("priority", String(j.priority || 0)),
        fact("progress", progressBar(j.progress))),
      failedForGood ? el("section", { class: "panel failure" }, el("h2", { text: "Failure" }),
        el("p", { class: "reason-full", "data-testid": "job-reason", text: j.failed_reason }),
        lastStack ? pre(lastStack) : null,
        earlierStacks.length ? folded("Earlier attempts (" + earlierStacks.length + ", oldest first)", earlierStacks) : null) : null,
      el("div", { class: "columns two" },
        el("section", { class: "panel" }, el("h2", { text: "Payload" }), pre(j.data)),
        el("section", { class: "panel" }, el("h2", { text: "Options" }), pre(j.options))),
      j.return_value !== null ? el("section", { class: "panel" }, el("h2", { text: "Return value" }), pre(j.return_value)) : null,
      // A job that is not failed (completed after a retry, or waiting for its next attempt):
      // its own state comes first; the failed attempts are history, folded away.
      j.failed_reason && !failedForGood ? el("section", { class: "panel", "data-testid": "job-attempt-history" }, el("h2", { text: "Attempt history" }),
        folded((j.stacktrace.length || 1) + " failed attempt(s) before this state; the last: " + j.failed_reason, j.stacktrace)) : null,
      el("section", { class: "panel" }, el("h2", { text: "Logs" }),
        j.logs.length ? pre(j.logs.join("\n")) : el("p", { class: "empty", text: "No log lines." })),
      j.failure_record ? el("section", { class: "panel" }, el("h2", {}, "Failure record ", el("code", { text: j.failure_record_key })),
        el("table", { class: "grid compact" }, el("tbody", {}, Object.entries(j.failure_record).filter(([k]) => k !== "stack").map(([k, v]) =>
          el("tr", {}, el("th", { text: k }), el("td", { class: "mono", text: v })))))) : null,
    ].filter((node) => node !== null));
    clearTimeout(ui.detailTimer);
    if (j.state === "active") ui.detailTimer = setTimeout(() => { if (ui.jobId === j.id) loadJob(); }, 2000);
  }

  // --- live updates ---------------------------------------------------------------------------
  let refreshTimer = null;
  function refreshSoon(all) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      if (ui.jobId) { loadJob(); return; }
      loadJobs();
      if (all) { loadErrors(); loadWorkers(); loadSchedules(); loadCleanup(); }
    }, 250);
  }

  function onOverview(data) {
    ui.overview = data.queues;
    if (!ui.queue) { route(); return; }
    const s = summary();
    const prev = ui.prev;
    ui.prev = s ? JSON.stringify(s) : null;
    renderQueues();
    if (ui.jobId || !s) { if (s && prev !== ui.prev && ui.jobId) refreshSoon(false); return; }
    renderQueueHead();
    renderTabs();
    if (prev !== null && prev !== ui.prev) {
      const old = JSON.parse(prev);
      const failedChanged = old.counts.failed !== s.counts.failed;
      refreshSoon(failedChanged || old.workers !== s.workers);
    }
  }

  function connect() {
    const live = $("#live");
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => { live.className = "live on"; live.textContent = "live"; });
    source.addEventListener("overview", (ev) => {
      live.className = "live on";
      live.textContent = "live";
      onOverview(JSON.parse(ev.data));
    });
    source.addEventListener("trouble", (ev) => {
      live.className = "live off";
      live.textContent = "Redis trouble";
      live.title = JSON.parse(ev.data).error;
    });
    source.addEventListener("error", () => { live.className = "live off"; live.textContent = "reconnecting…"; });
  }

  // --- start -----------------------------------------------------------------------------------
  async function start() {
    try {
      ui.me = await api("/api/me");
    } catch (err) {
      toast(err.message, "error");
    }
    const who = $("#who");
    who.textContent = "";
    if (ui.me.user) who.append(el("span", { text: ui.me.user }));
    who.append(el("span", { class: "badge " + (ui.me.can_act ? "rw" : "ro"), "data-testid": "role", text: ui.me.can_act ? "can act" : "read-only" }));

    $("#btn-pause").addEventListener("click", () => {
      const s = summary();
      const resume = s && s.paused;
      act(resume ? "Resume queue?" : "Pause queue?",
        resume ? "Workers take jobs from " + ui.queue + " again." : "Workers stop taking new jobs from " + ui.queue + "; running jobs finish.",
        resume ? "Resume" : "Pause",
        () => api("/api/queues/" + q(ui.queue) + (resume ? "/resume" : "/pause"), { method: "POST" }),
        () => ui.queue + (resume ? " resumed." : " paused."));
    });
    $("#btn-retry-all").addEventListener("click", () => {
      const s = summary();
      act("Retry all failed jobs?", num(s ? s.counts.failed : 0) + " failed jobs of " + ui.queue + " go back to the wait list.", "Retry all",
        () => api("/api/queues/" + q(ui.queue) + "/retry-failed", { method: "POST" }),
        (r) => r.retried + " jobs sent back to the queue." + (r.orphans ? " " + num(r.orphans) + " entries of the failed set have no job and were left as they are." : ""));
    });
    let searchTimer = null;
    $("#search").addEventListener("input", (ev) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { ui.search = ev.target.value; ui.page = 0; loadJobs(); }, 250);
    });
    $("#prev").addEventListener("click", () => { ui.page = Math.max(0, ui.page - 1); loadJobs(); });
    $("#next").addEventListener("click", () => { ui.page += 1; loadJobs(); });
    $("#window").addEventListener("change", loadHistory);
    window.ConveyorCharts.attachHover($("#chart-throughput"));
    window.ConveyorCharts.attachHover($("#chart-latency"));
    window.addEventListener("resize", loadHistory);
    window.addEventListener("hashchange", route);

    try {
      ui.overview = (await api("/api/overview")).queues;
    } catch (err) {
      toast(err.message, "error");
    }
    route();
    const s = summary();
    ui.prev = s ? JSON.stringify(s) : null;
    connect();
    ui.historyTimer = setInterval(() => { if (!document.hidden) loadHistory(); }, 5000);
  }

  start();
})();
