/* tasklane console: the JSON API of the page's own origin, rendered without a framework.
 *
 * Everything shown comes from GET /stats, GET /tasks and GET /tasks/{id}; the buttons call
 * POST /tasks/{id}/retry, POST /tasks/{id}/cancel and POST /tasks/retry. Text from tasks (names,
 * results, errors) is only ever set as textContent, never parsed as HTML.
 */
"use strict";

(() => {
  // The API's root: the page is {root}console and this script {root}console/console.js, so a
  // stage or base path in front of them carries over.
  const ROOT = new URL("..", document.currentScript.src);
  const REFRESH_MS = 5000;
  const CANCELLABLE = new Set(["pending", "scheduled", "waiting", "queued", "running"]);
  const FILTERS = ["status", "task", "lane", "created_after", "created_before"];
  // The status rows in a task's order of life, whatever order the API's figures come in.
  const STATUS_ORDER = ["pending", "scheduled", "waiting", "queued", "running", "succeeded", "failed", "cancelled"];
  const $ = (id) => document.getElementById(id);

  const state = { view: null, filters: {}, cursor: null, paged: false, taskId: null, timer: null };

  // ------------------------------------------------------------------ the API
  class ApiError extends Error {
    constructor(status, body) {
      const error = (body && body.error) || {};
      super(error.message || body && body.message || `HTTP ${status}`);
      this.status = status;
      this.code = error.code;
    }
  }

  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    const token = sessionStorage.getItem("tasklane.token");
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(new URL(path, ROOT), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch (_) {
      answer = null;
    }
    if (response.status === 401 || response.status === 403) {
      $("auth").hidden = false;
      throw new ApiError(response.status, answer || { message: "this API needs a token" });
    }
    if (!response.ok) throw new ApiError(response.status, answer);
    return answer;
  }

  // ------------------------------------------------------------------ helpers
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === undefined || value === null) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attributes = {}) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  function say(text, isError = false) {
    const box = $("message");
    box.textContent = text;
    box.className = isError ? "error" : "";
    box.hidden = !text;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function when(moment) {
    if (!moment) return el("span", { class: "muted", text: "–" });
    const seconds = (Date.now() - Date.parse(moment)) / 1000;
    const text = seconds >= 0 ? `${age(seconds)} ago` : `in ${age(-seconds)}`;
    return el("time", { datetime: moment, title: moment, text });
  }

  function bytes(n) {
    if (n === null || n === undefined) return "– (pruned)";
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  function badge(status) {
    return el("span", { class: `status ${status}`, text: status });
  }

  function pretty(value) {
    return value === null || value === undefined ? "–" : JSON.stringify(value, null, 2);
  }

  // ------------------------------------------------------------------ overview
  async function loadStats() {
    const stats = await api("GET", "stats");
    const lanes = ["lambda", "celery"];
    const head = $("counts").tHead;
    const body = $("counts").tBodies[0];
    head.replaceChildren(
      el("tr", {}, el("th", { text: "status" }),
        ...lanes.map((lane) => el("th", { class: "num", text: lane })),
        el("th", { class: "num", text: "total" })));
    const rank = (status) => (STATUS_ORDER.includes(status) ? STATUS_ORDER.indexOf(status) : 99);
    const counted = Object.entries(stats.counts).sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
    const rows = counted.map(([status, byLane]) => {
      const cells = lanes.map((lane) => el("td", { class: "num", text: byLane[lane] || 0 }));
      const total = Object.values(byLane).reduce((a, b) => a + b, 0);
      const link = el("a", { href: `#/?status=${encodeURIComponent(status)}` }, badge(status));
      return el("tr", { "data-status": status }, el("td", {}, link), ...cells,
        el("td", { class: "num", text: total }));
    });
    body.replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 4, class: "muted", text: "no tasks yet" }))]));

    const depths = stats.queue_depths || {};
    const shown = (n) => (n === null || n === undefined ? "?" : String(n));
    $("queues").tBodies[0].replaceChildren(...lanes.map((lane) => el("tr", { "data-lane": lane },
      el("td", { text: lane }),
      el("td", { class: "num", text: shown(depths[lane]) }),
      el("td", { class: "num", text: shown(depths[`${lane}_high`]) }),
      el("td", { class: `num${depths[`${lane}_dlq`] ? " dead" : ""}`, text: shown(depths[`${lane}_dlq`]) }),
      el("td", { class: "num", text: age(stats.oldest_queued_seconds[lane]) }))));
    drawChart(stats.finished_per_minute || []);
    await loadByTask();
    await loadWorkers();
  }

  // Celery workers by their heartbeats, and each lane's running tasks (operators).
  async function loadWorkers() {
    const view = await api("GET", "workers");
    const rows = view.workers.map((w) => el("tr", { "data-worker": w.name, class: w.alive ? "" : "gone" },
      el("td", { text: w.name }),
      el("td", { class: "num", text: w.pid }),
      el("td", { text: w.queues.join(", ") }),
      el("td", { class: "num", text: w.concurrency ?? "–" }),
      el("td", {}, ...(w.active.length ? w.active.map((id) =>
        el("a", { href: `#/tasks/${id}`, title: id, text: `${shortId(id)} ` })) : ["–"])),
      el("td", { text: w.alive ? `${Math.round(w.seen_seconds_ago)} s ago` : `gone? ${age(w.seen_seconds_ago)} ago` })));
    $("workers").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no celery worker heard of" }))]));
    $("running").textContent = Object.entries(view.running).map(([lane, n]) => `${lane}: ${n} running`).join(" · ");
  }

  // Per task name over the last hour: how many, how long, how often failed.
  async function loadByTask() {
    const figures = await api("GET", "stats/tasks?window=3600");
    const ms = (v) => (v === null || v === undefined ? "–" : v >= 10 ? `${Math.round(v)} ms` : `${v.toFixed(1)} ms`);
    const rows = figures.tasks.map((t) => el("tr", { "data-task": t.task },
      el("td", {}, el("a", { href: `#/?${query({ task: t.task })}`, text: t.task })),
      el("td", { class: "num", text: Object.values(t.counts).reduce((a, b) => a + b, 0) }),
      el("td", { class: "num", text: t.finished }),
      el("td", { class: `num${t.failure_rate ? " dead" : ""}`, text: t.failure_rate === null ? "–" : `${Math.round(t.failure_rate * 100)}%` }),
      el("td", { class: "num", text: ms(t.runtime_p50_ms) }),
      el("td", { class: "num", text: ms(t.runtime_p95_ms) })));
    $("by-task").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no tasks in the last hour" }))]));
  }

  function drawChart(minutes) {
    const chart = $("chart");
    const width = 300, height = 100, left = 22, bottom = 12;
    const kinds = ["succeeded", "failed", "cancelled"];
    const peak = Math.max(1, ...minutes.map((m) => kinds.reduce((a, k) => a + m[k], 0)));
    const slot = (width - left) / 15;
    const nodes = [
      svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom }),
      Object.assign(svg("text", { x: 0, y: 8 }), { textContent: String(peak) }),
      Object.assign(svg("text", { x: 0, y: height - bottom }), { textContent: "0" }),
    ];
    minutes.slice(-15).forEach((minute, i) => {
      let top = height - bottom;
      for (const kind of kinds) {
        const h = (minute[kind] / peak) * (height - bottom - 4);
        if (!h) continue;
        top -= h;
        const bar = svg("rect", { class: kind, x: left + i * slot + 1, y: top, width: slot - 2, height: h });
        const label = svg("title");
        label.textContent = `${minute.minute.slice(11, 16)} UTC: ${minute[kind]} ${kind}`;
        bar.append(label);
        nodes.push(bar);
      }
      if (i % 5 === 0) {
        const tick = svg("text", { x: left + i * slot, y: height });
        tick.textContent = minute.minute.slice(11, 16);
        nodes.push(tick);
      }
    });
    chart.replaceChildren(...nodes);
  }

  // ------------------------------------------------------------------ the list
  function query(filters, extra = {}) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...filters, ...extra })) if (v) params.set(k, v);
    return params.toString();
  }

  // A UUIDv7 starts with its timestamp (a burst of tasks shares its first digits): the list
  // shows its random end, and a button copies the whole id.
  function shortId(id) {
    return `…${id.slice(-12)}`;
  }

  function copyButton(text) {
    return el("button", { type: "button", class: "copy", "data-copy": text, title: `copy ${text}`, "aria-label": "copy the id", text: "copy" });
  }

  function runtime(task) {
    if (!task.started_at || !task.finished_at) return "–";
    const seconds = (Date.parse(task.finished_at) - Date.parse(task.started_at)) / 1000;
    return seconds < 10 ? `${seconds.toFixed(2)} s` : age(seconds);
  }

  // A queued task waiting out a retry's delay says so, with when it comes back.
  function statusCell(task) {
    if (task.waiting_on) { // over a limit: why it waits, as the claim found it
      return el("span", { class: "held", title: task.waiting_on }, badge(task.status), " ",
        el("span", { class: "muted", text: task.waiting_on }));
    }
    const waiting = task.status === "queued" && task.retry_at && Date.parse(task.retry_at) > Date.now();
    if (!waiting) return badge(task.status);
    return el("span", { class: "retrying", title: `retried ${task.retry_at}` }, badge("retrying"), " ",
      when(task.retry_at));
  }

  function row(task) {
    return el("tr", { "data-id": task.id, "data-status": task.status },
      el("td", { class: "id" },
        el("a", { href: `#/tasks/${task.id}`, title: task.id, text: shortId(task.id) }), " ",
        copyButton(task.id)),
      el("td", { text: task.task }),
      el("td", { text: task.lane }),
      el("td", {}, statusCell(task)),
      el("td", { class: "num", text: task.attempts }),
      el("td", {}, when(task.created_at)),
      el("td", { class: "num runtime", text: runtime(task) }),
      el("td", {}, when(task.finished_at)));
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const text = button.dataset.copy;
    const copied = () => say(`copied ${text}`);
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(copied, () => say("could not copy", true));
    } else {
      const area = el("textarea", { readonly: "" });
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
      copied();
    }
  });

  // A filter the API refuses shows its error and no list: never an unfiltered list under it.
  function showListError(message) {
    $("tasks").tBodies[0].replaceChildren();
    $("older").hidden = true;
    $("empty").hidden = true;
    say(message, true);
  }

  async function loadTasks(append = false) {
    const cursor = append ? state.cursor : null;
    let page;
    try {
      page = await api("GET", `tasks?${query(state.filters, { limit: 50, cursor })}`);
    } catch (error) {
      if (error.status === 400) showListError(error.message);
      throw error;
    }
    const body = $("tasks").tBodies[0];
    const rows = page.tasks.map(row);
    if (append) body.append(...rows);
    else body.replaceChildren(...rows);
    state.cursor = page.next_cursor;
    if (append) state.paged = true; // live refresh leaves a longer list alone
    $("older").hidden = !page.next_cursor;
    $("empty").hidden = body.rows.length > 0;
  }

  function showFilters() {
    const form = $("filters");
    for (const name of FILTERS) {
      const value = state.filters[name] || "";
      form.elements[name].value = name.startsWith("created_") && value
        ? localInput(value) : value;
    }
    $("retry-all").hidden = state.filters.status !== "failed";
  }

  // <input type=datetime-local> speaks local time without an offset; the API speaks RFC 3339.
  function localInput(moment) {
    const d = new Date(moment);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    const filters = {};
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (!value) continue;
      if (name.startsWith("created_")) {
        const moment = new Date(value);
        if (Number.isNaN(moment.getTime())) {
          showListError(`${name.replace("_", " ")}: not a date and time (${value})`);
          return;
        }
        filters[name] = moment.toISOString();
      } else filters[name] = value;
    }
    location.hash = `#/?${query(filters)}`;
  });

  $("older").addEventListener("click", () => guarded(() => loadTasks(true)));

  $("retry-all").addEventListener("click", () => guarded(async () => {
    const filters = { ...state.filters, status: "failed" };
    const what = Object.entries(filters).map(([k, v]) => `${k} ${v}`).join(", ");
    if (!confirm(`Retry every failed task that matches (${what})?`)) return;
    let total = 0;
    let more = true;
    while (more) {
      const answer = await api("POST", "tasks/retry", filters);
      total += answer.retried.length;
      more = answer.more && answer.retried.length > 0;
    }
    say(`${total} failed task${total === 1 ? "" : "s"} queued again`);
    await refresh();
  }));

  // ------------------------------------------------------------------ one task
  async function loadTask(id) {
    const task = await api("GET", `tasks/${encodeURIComponent(id)}?include=payload`);
    $("detail-title").replaceChildren(`${task.task} `, statusCell(task));
    const fields = [
      ["id", el("span", {}, el("code", { text: task.id }), " ", copyButton(task.id))],
      ["lane", task.lane], ["attempts", String(task.attempts)],
      ["payload", bytes(task.payload_bytes)], ["created", when(task.created_at)],
      ["run at", when(task.run_at)], ["started", when(task.started_at)],
      ["finished", when(task.finished_at)], ["runtime", runtime(task)],
      ["updated", when(task.updated_at)],
    ];
    if (task.unique_key) fields.push(["unique key", el("code", { text: task.unique_key })]);
    if (task.priority) fields.push(["priority", String(task.priority)]);
    if (task.workflow_id) {
      fields.push(["workflow", el("a", { href: `#/workflows/${task.workflow_id}`, text: task.workflow_id })]);
    }
    $("detail-fields").replaceChildren(...fields.flatMap(([name, value]) =>
      [el("dt", { text: name }), el("dd", { "data-field": name }, value)]));
    $("detail-result").textContent = pretty(task.result);
    const attempts = (task.history || []).map((a) => el("tr", { "data-outcome": a.outcome },
      el("td", { class: "num", text: a.attempt }),
      el("td", {}, badge(a.outcome)),
      el("td", {}, when(a.started_at)),
      el("td", { class: "num", text: a.started_at && a.finished_at
        ? `${((Date.parse(a.finished_at) - Date.parse(a.started_at)) / 1000).toFixed(2)} s` : "–" }),
      el("td", { text: a.error ? `${a.error.type}: ${a.error.message}` : "" }),
      el("td", { class: "muted", text: a.ran_on || "" })));
    $("detail-history").tBodies[0].replaceChildren(...(attempts.length ? attempts
      : [el("tr", {}, el("td", { colspan: 6, class: "muted", text: "not run yet" }))]));
    if (task.payload_pruned) $("detail-payload-note").textContent = "(pruned)";
    else if (task.payload_truncated) {
      $("detail-payload-note").textContent =
        `(the first ${task.payload.length.toLocaleString()} of ${task.payload_chars.toLocaleString()} characters)`;
    } else $("detail-payload-note").textContent = "";
    $("detail-payload").textContent = task.payload_pruned ? "" :
      task.payload_truncated ? task.payload : pretty(task.payload);
    $("detail-error").hidden = !task.error;
    if (task.error) {
      $("detail-error-line").textContent = `${task.error.type}: ${task.error.message}`;
      $("detail-traceback").textContent = task.error.traceback || "(no traceback stored)";
    }
    $("retry").hidden = task.status !== "failed";
    $("cancel").hidden = !CANCELLABLE.has(task.status);
    $("detail-view").dataset.status = task.status;
  }

  $("retry").addEventListener("click", () => guarded(async () => {
    await api("POST", `tasks/${encodeURIComponent(state.taskId)}/retry`);
    say("queued again");
    await loadTask(state.taskId);
  }));

  $("cancel").addEventListener("click", () => guarded(async () => {
    if (!confirm(`Cancel ${state.taskId}?`)) return;
    const task = await api("POST", `tasks/${encodeURIComponent(state.taskId)}/cancel`);
    say(task.status === "cancelled" ? "cancelled" : "asked to stop: it sees the request at its next check");
    await loadTask(state.taskId);
  }));

  // ------------------------------------------------------------------ routing and refresh
  // ------------------------------------------------------------------ one workflow
  const GRAPH = { width: 170, height: 26, columnGap: 48, rowGap: 10, most: 300 };

  // A workflow's steps drawn left to right: each step in the column after the last of the
  // steps it waits for, an arrow from each of those to it, coloured by status; a step links
  // to its task. (Past GRAPH.most steps the table below is the view.)
  function drawGraph(tasks, numberOf) {
    const box = $("workflow-graph");
    box.replaceChildren();
    box.hidden = tasks.length === 0 || tasks.length > GRAPH.most;
    if (box.hidden) return;
    const byId = new Map(tasks.map((task) => [task.id, task]));
    const column = new Map();
    const columnOf = (id) => { // one past the last of the steps it waits for
      if (!column.has(id)) {
        column.set(id, 0); // (a step not on this page, or a loop, stays where it is)
        const before = (byId.get(id)?.after || []).filter((i) => byId.has(i)).map(columnOf);
        column.set(id, before.length ? Math.max(...before) + 1 : 0);
      }
      return column.get(id);
    };
    tasks.forEach((task) => columnOf(task.id));
    const rows = [];
    const at = new Map();
    for (const task of tasks) {
      const c = column.get(task.id);
      rows[c] = (rows[c] || 0) + 1;
      at.set(task.id, {
        x: c * (GRAPH.width + GRAPH.columnGap),
        y: (rows[c] - 1) * (GRAPH.height + GRAPH.rowGap),
      });
    }
    const width = rows.length * (GRAPH.width + GRAPH.columnGap) - GRAPH.columnGap;
    const height = Math.max(...rows) * (GRAPH.height + GRAPH.rowGap) - GRAPH.rowGap;
    const drawing = svg("svg", { width: width + 2, height: height + 2, viewBox: `-1 -1 ${width + 2} ${height + 2}` });
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 6, markerHeight: 6, orient: "auto" });
    marker.append(svg("path", { d: "M0,0 L8,4 L0,8 z", class: "arrowhead" }));
    const defs = svg("defs");
    defs.append(marker);
    drawing.append(defs);
    for (const task of tasks) {
      const to = at.get(task.id);
      for (const id of task.after || []) {
        const from = at.get(id);
        if (!from) continue;
        const [x1, y1, x2, y2] = [from.x + GRAPH.width, from.y + GRAPH.height / 2, to.x, to.y + GRAPH.height / 2];
        const bend = GRAPH.columnGap / 2;
        drawing.append(svg("path", {
          class: "edge", "data-from": id, "data-to": task.id, "marker-end": "url(#arrow)",
          d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
        }));
      }
    }
    for (const task of tasks) {
      const { x, y } = at.get(task.id);
      const link = svg("a", { href: `#/tasks/${task.id}`, class: "step", "data-id": task.id, "data-status": task.status });
      const title = svg("title");
      title.textContent = `#${numberOf.get(task.id)} ${task.task}: ${task.status}\n${task.id}`;
      const label = svg("text", { x: x + 8, y: y + GRAPH.height / 2 + 4 });
      label.textContent = `#${numberOf.get(task.id)} ${task.task}`.slice(0, 24);
      link.append(title, svg("rect", { x, y, width: GRAPH.width, height: GRAPH.height, rx: 6, class: task.status }), label);
      drawing.append(link);
    }
    box.append(drawing);
  }

  async function loadWorkflow(id) {
    let body = await api("GET", `workflows/${encodeURIComponent(id)}`);
    const tasks = [...body.tasks];
    while (body.next_cursor) {
      body = await api("GET", `workflows/${encodeURIComponent(id)}?cursor=${encodeURIComponent(body.next_cursor)}`);
      tasks.push(...body.tasks);
    }
    $("workflow-title").replaceChildren(`workflow ${shortId(body.id)} `, badge(body.status), " ",
      copyButton(body.id));
    const numberOf = new Map(tasks.map((task, i) => [task.id, i + 1]));
    $("workflow-tasks").tBodies[0].replaceChildren(...tasks.map((task, i) =>
      el("tr", { "data-id": task.id, "data-status": task.status },
        el("td", { class: "num", text: i + 1 }),
        el("td", { class: "id" }, el("a", { href: `#/tasks/${task.id}`, title: task.id, text: shortId(task.id) })),
        el("td", { text: task.task }),
        el("td", {}, badge(task.status)),
        el("td", { class: "after", text: (task.after || []).map((id) => `#${numberOf.get(id) ?? "?"}`).join(", ") || "–" }))));
    drawGraph(tasks, numberOf);
    $("workflow-error").hidden = !body.error;
    if (body.error) {
      $("workflow-error").textContent =
        `failed by ${body.error.task} (${body.error.task_id}): ${body.error.type}: ${body.error.message}`;
    }
    $("workflow-result").textContent = body.result_omitted || pretty(body.result);
    $("workflow-view").dataset.status = body.status;
  }

  function route() {
    const hash = location.hash || "#/";
    const match = hash.match(/^#\/tasks\/([^/?]+)/);
    const workflow = hash.match(/^#\/workflows\/([^/?]+)/);
    if (match) {
      state.view = "task";
      state.taskId = decodeURIComponent(match[1]);
    } else if (workflow) {
      state.view = "workflow";
      state.workflowId = decodeURIComponent(workflow[1]);
    } else {
      state.view = "list";
      const params = new URLSearchParams(hash.split("?")[1] || "");
      state.filters = Object.fromEntries(FILTERS.filter((k) => params.get(k)).map((k) => [k, params.get(k)]));
      state.paged = false;
      showFilters();
    }
    $("list-view").hidden = state.view !== "list";
    $("detail-view").hidden = state.view !== "task";
    $("workflow-view").hidden = state.view !== "workflow";
    say("");
    return refresh();
  }

  async function refresh() {
    const work = [loadStats()];
    if (state.view === "task") work.push(loadTask(state.taskId));
    else if (state.view === "workflow") work.push(loadWorkflow(state.workflowId));
    else if (!state.paged) work.push(loadTasks(false));
    await guarded(() => Promise.all(work));
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  async function guarded(action) {
    try {
      await action();
    } catch (error) {
      say(error.message, true);
    }
  }

  function schedule() {
    clearInterval(state.timer);
    if ($("live").checked) state.timer = setInterval(refresh, REFRESH_MS);
  }

  $("live").addEventListener("change", schedule);
  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("tasklane.token", $("token").value.trim());
    $("token").value = "";
    $("auth").hidden = true;
    route();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem("tasklane.token");
    say("token forgotten");
  });

  window.addEventListener("hashchange", route);
  route();
  schedule();
})();
