/// The dashboard's page and assets, served by the coordinator itself so it works offline and
/// under a strict Content-Security-Policy (`default-src 'self'`): no inline script or style, no
/// CDN, no web font. The script polls the JSON API and puts every string it gets there into the
/// page as text, never as HTML.
///
/// Key figures carry `data-metric` names (`workers-alive`, `queue-waiting-default`,
/// `succeeded-total`, …) and their raw number in `data-value`, for tests and scrapers; the body's
/// `data-state` says `loading`, `live`, `auth` (asking for a token), `stale` or `error`.
enum DashboardPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="referrer" content="no-referrer">
        <title>Switchyard</title>
        <link rel="icon" type="image/svg+xml" href="/assets/favicon.svg">
        <link rel="stylesheet" href="/assets/dashboard.css">
        <script src="/assets/dashboard.js" defer></script>
        </head>
        <body data-state="loading">
        <header class="bar">
          <div class="brand"><img src="/assets/favicon.svg" alt="" width="22" height="22"><span>Switchyard</span>
            <span class="queue">queue <b id="queue-name" data-metric="queue-name">…</b></span></div>
          <div class="status">
            <span class="dot"></span><span id="status-text" data-metric="status">Connecting…</span>
            <span class="updated" id="updated" hidden>· updated <time data-metric="updated-at">–</time></span>
            <button id="forget-token" type="button" class="link" hidden>Forget token</button>
          </div>
        </header>
        <noscript><p class="notice">The dashboard needs JavaScript: it reads the coordinator's JSON API.</p></noscript>
        <form id="token-form" class="notice token" hidden>
          <label for="token-input" id="token-message">This coordinator needs a token to show its data.</label>
          <input id="token-input" type="password" autocomplete="off" spellcheck="false" placeholder="Bearer token">
          <button type="submit">Use token</button>
          <span class="muted">Kept in this tab only (sessionStorage).</span>
        </form>
        <main>
          <section class="tiles">
            <div class="tile"><h3>Workers</h3><div class="big" data-metric="workers-alive">–</div>
              <div class="sub"><span data-metric="workers-in-flight">–</span> of
                <span data-metric="workers-capacity">–</span> slots busy</div></div>
            <div class="tile"><h3>Waiting</h3><div class="big" data-metric="waiting-total">–</div>
              <div class="sub" data-metric="oldest-waiting">–</div></div>
            <div class="tile"><h3>Running</h3><div class="big" data-metric="running-total">–</div>
              <div class="sub"><span data-metric="delayed">–</span> delayed for retry</div></div>
            <div class="tile"><h3>Succeeded</h3><div class="big ok" data-metric="succeeded-total">–</div>
              <div class="sub">of <span data-metric="pushed-total">–</span> pushed</div></div>
            <div class="tile"><h3>Failed</h3><div class="big" data-metric="failed-total">–</div>
              <div class="sub"><span data-metric="retried-total">–</span> retried
                · <span data-metric="cancelled-total">–</span> cancelled</div></div>
            <div class="tile"><h3>Dead letters</h3><div class="big" data-metric="dead-letters">–</div>
              <div class="sub"><span data-metric="dead-total">–</span> died in all</div></div>
            <div class="tile"><h3>Throughput · 1 min</h3><div class="big" data-metric="throughput-1m">–</div>
              <div class="sub">run p95 <span data-metric="run-p95-5m">–</span> (5 min)</div></div>
          </section>
          <section class="charts">
            <figure class="panel chart">
              <figcaption><h2>Throughput <span class="note">succeeded jobs/s, last hour</span></h2></figcaption>
              <svg id="chart-throughput" role="img" aria-label="Throughput per minute, last hour"></svg>
            </figure>
            <figure class="panel chart">
              <figcaption><h2>Run time <span class="note">per minute</span><span class="legend">
                <span><i class="swatch p50"></i>p50</span><span><i class="swatch p95"></i>p95</span><span><i class="swatch p99"></i>p99</span>
              </span></h2></figcaption>
              <svg id="chart-run" role="img" aria-label="Run time quantiles per minute, last hour"></svg>
            </figure>
            <figure class="panel chart">
              <figcaption><h2>Queue wait <span class="note">per minute</span><span class="legend">
                <span><i class="swatch p50"></i>p50</span><span><i class="swatch p95"></i>p95</span><span><i class="swatch p99"></i>p99</span>
              </span></h2></figcaption>
              <svg id="chart-wait" role="img" aria-label="Queue wait quantiles per minute, last hour"></svg>
            </figure>
          </section>
          <section class="row">
            <div class="panel">
              <h2>Recent windows <span class="note" id="windows-note">attempts and latency over the last 1, 5, 15 and 60 minutes</span></h2>
              <table id="windows">
                <thead>
                  <tr><th rowspan="2">Window</th><th rowspan="2">Succeeded</th><th rowspan="2">Failed</th><th rowspan="2">Dead</th>
                    <th rowspan="2">Retried</th>
                    <th rowspan="2">Jobs/s</th><th colspan="3" class="group">Run time</th><th colspan="3" class="group">Queue wait</th>
                    <th rowspan="2">Tokens in/out</th></tr>
                  <tr><th>p50</th><th>p95</th><th>p99</th><th>p50</th><th>p95</th><th>p99</th></tr>
                </thead>
                <tbody></tbody>
              </table>
            </div>
            <div class="panel">
              <h2>Lanes <span class="note">queue depth</span></h2>
              <table id="lanes">
                <thead><tr><th>Lane</th><th>Waiting</th><th>Running</th><th>Parked</th><th>Oldest waiting</th></tr></thead>
                <tbody></tbody>
              </table>
            </div>
          </section>
          <section class="panel">
            <h2>Workers <span class="note" id="workers-note"></span></h2>
            <table id="workers">
              <thead><tr><th>Worker</th><th class="text">Host</th><th class="text">Profile</th><th class="text">Executor</th><th>In flight</th>
                <th>Processed</th><th>RSS</th><th class="text">Warm models</th><th>Last seen</th><th>Up</th></tr></thead>
              <tbody></tbody>
            </table>
          </section>
          <section class="panel">
            <h2>Dead letters <span class="note" id="dead-note">latest</span></h2>
            <table id="dead-letters">
              <thead><tr><th class="when">Failed</th><th class="text job">Job</th><th class="text lane">Lane</th><th class="attempt">Attempt</th>
                <th class="text">Reason</th></tr></thead>
              <tbody></tbody>
            </table>
          </section>
          <section class="row bottom">
            <div class="panel" id="breakers-panel" hidden>
              <h2>Breakers <span class="note">per target</span></h2>
              <table id="breakers">
                <thead><tr><th>Target</th><th class="text">State</th><th>Failure rate</th><th>Calls</th><th>Headroom</th></tr></thead>
                <tbody></tbody>
              </table>
            </div>
            <div class="panel" id="cache-panel" hidden>
              <h2>Response cache <span class="note">answers of succeeded jobs</span></h2>
              <table id="cache">
                <thead><tr><th>Answer</th><th>5 min</th><th>60 min</th><th>Total</th></tr></thead>
                <tbody></tbody>
              </table>
            </div>
          </section>
        </main>
        </body>
        </html>

        """#

    static let css = #"""
        :root {
          --bg: #f4f5f7; --panel: #fff; --border: #e1e4e9; --text: #1b2130; --muted: #667085; --faint: #eef0f3;
          --accent: #2f5fd0; --p50: #2f5fd0; --p95: #d4870a; --p99: #cf3a3a; --ok: #1c8c4d; --warn: #c27a06; --bad: #cf3a3a;
          --mono: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace;
          color-scheme: light dark;
        }
        @media (prefers-color-scheme: dark) {
          :root {
            --bg: #111419; --panel: #191d25; --border: #2a303b; --text: #e3e6ec; --muted: #939cab; --faint: #232833;
            --accent: #6b97ff; --p50: #6b97ff; --p95: #efb13f; --p99: #ff6f6f; --ok: #4cc27f; --warn: #efb13f; --bad: #ff6f6f;
          }
        }
        * { box-sizing: border-box; }
        html { font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Liberation Sans", Arial, sans-serif; }
        body { margin: 0; background: var(--bg); color: var(--text); }
        .bar {
          position: sticky; top: 0; z-index: 2; display: flex; align-items: center; justify-content: space-between;
          padding: 9px 20px; background: var(--panel); border-bottom: 1px solid var(--border);
        }
        .brand { display: flex; align-items: center; gap: 10px; font-size: 15px; font-weight: 650; }
        .queue { margin-left: 6px; font-size: 13px; font-weight: 400; color: var(--muted); }
        .queue b { color: var(--text); font-weight: 600; }
        .status { display: flex; align-items: center; gap: 8px; color: var(--muted); }
        .dot { width: 9px; height: 9px; border-radius: 50%; background: var(--muted); }
        body[data-state="live"] .dot { background: var(--ok); box-shadow: 0 0 0 3px color-mix(in srgb, var(--ok) 20%, transparent); }
        body[data-state="stale"] .dot, body[data-state="auth"] .dot { background: var(--warn); }
        body[data-state="error"] .dot { background: var(--bad); }
        body[data-state="error"] #status-text { color: var(--bad); }
        button { font: inherit; }
        .link { border: 0; background: none; color: var(--accent); cursor: pointer; padding: 0; }
        .notice {
          display: flex; flex-wrap: wrap; align-items: center; gap: 10px; margin: 12px max(20px, calc((100% - 1560px) / 2)) 0; padding: 10px 14px;
          background: var(--panel); border: 1px solid var(--warn); border-radius: 8px;
        }
        .notice[hidden] { display: none; }
        .token label { font-weight: 600; }
        .token input {
          width: 320px; padding: 5px 8px; border: 1px solid var(--border); border-radius: 6px; background: var(--bg); color: var(--text);
          font-family: var(--mono);
        }
        .token button[type="submit"] {
          padding: 5px 12px; border: 0; border-radius: 6px; background: var(--accent); color: #fff; cursor: pointer; font-weight: 600;
        }
        main { display: grid; gap: 12px; max-width: 1600px; margin: 0 auto; padding: 12px 20px 28px; }
        .panel, .tile { min-width: 0; background: var(--panel); border: 1px solid var(--border); border-radius: 8px; }
        .panel { margin: 0; padding: 10px 14px 8px; }
        .panel[hidden] { display: none; }
        .tiles { display: grid; grid-template-columns: repeat(7, minmax(0, 1fr)); gap: 12px; }
        .tile { padding: 9px 12px 10px; }
        .tile h3 {
          margin: 0; color: var(--muted); font-size: 11px; font-weight: 600; letter-spacing: .04em; text-transform: uppercase;
          white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
        }
        .big { margin-top: 1px; font-size: 25px; font-weight: 620; font-variant-numeric: tabular-nums; line-height: 1.25; }
        .big.ok { color: var(--ok); }
        .sub { color: var(--muted); font-size: 12px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
        h2 { display: flex; align-items: baseline; gap: 8px; margin: 0 0 6px; font-size: 13px; font-weight: 650; }
        .note { color: var(--muted); font-size: 12px; font-weight: 400; }
        .legend { display: flex; gap: 10px; margin-left: auto; color: var(--muted); font-size: 12px; font-weight: 400; }
        .swatch { display: inline-block; width: 12px; height: 3px; margin-right: 4px; border-radius: 2px; vertical-align: middle; }
        .swatch.p50 { background: var(--p50); }
        .swatch.p95 { background: var(--p95); }
        .swatch.p99 { background: var(--p99); }
        .charts { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 12px; }
        .chart svg { display: block; width: 100%; height: 150px; overflow: visible; }
        svg .grid { stroke: var(--faint); stroke-width: 1; }
        svg .base { stroke: var(--border); stroke-width: 1; }
        svg text { fill: var(--muted); font-size: 10px; font-variant-numeric: tabular-nums; }
        svg .bar { fill: var(--accent); opacity: .85; }
        svg .bar:hover { opacity: 1; }
        svg .line { fill: none; stroke-width: 1.7; stroke-linejoin: round; stroke-linecap: round; }
        svg .point { stroke: none; }
        svg .p50 { stroke: var(--p50); fill: var(--p50); }
        svg .p95 { stroke: var(--p95); fill: var(--p95); }
        svg .p99 { stroke: var(--p99); fill: var(--p99); }
        svg .line.p50, svg .line.p95, svg .line.p99 { fill: none; }
        svg .empty { font-size: 12px; }
        .row { display: grid; grid-template-columns: minmax(0, 1fr) auto; gap: 12px; }
        .row.bottom { grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); }
        .row.bottom:not(:has(> .panel:not([hidden]))) { display: none; }
        table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
        th, td { padding: 4px 8px; border-bottom: 1px solid var(--faint); text-align: right; white-space: nowrap; }
        th {
          color: var(--muted); font-size: 11px; font-weight: 600; letter-spacing: .03em; text-transform: uppercase; vertical-align: bottom;
        }
        th.group { text-align: center; border-bottom: 1px solid var(--border); }
        th.text, td.text, tbody td:first-child, thead tr:first-child th:first-child { text-align: left; }
        tbody td:first-child, thead tr:first-child th:first-child { padding-left: 0; }
        tbody td:last-child, thead tr:first-child th:last-child { padding-right: 0; }
        tbody tr:last-child td { border-bottom: 0; }
        tbody tr:hover td { background: color-mix(in srgb, var(--faint) 60%, transparent); }
        td.empty { padding: 14px 0; color: var(--muted); text-align: center; }
        .mono { font-family: var(--mono); font-size: 12px; }
        .muted { color: var(--muted); }
        #dead-letters { table-layout: fixed; }
        #dead-letters td { overflow: hidden; text-overflow: ellipsis; }
        #dead-letters .when { width: 100px; }
        #dead-letters .job { width: 260px; }
        #dead-letters .lane { width: 64px; }
        #dead-letters .attempt { width: 68px; }
        .models { display: inline-block; max-width: 280px; overflow: hidden; text-overflow: ellipsis; vertical-align: bottom; }
        .meter {
          display: inline-block; width: 64px; height: 6px; margin-right: 8px; overflow: hidden; border-radius: 3px; background: var(--faint);
          vertical-align: middle;
        }
        .meter > span { display: block; height: 100%; background: var(--accent); }
        .pill, .badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 11px; font-weight: 600; line-height: 17px; }
        .badge { margin-left: 6px; background: var(--faint); color: var(--muted); }
        .pill { background: var(--faint); color: var(--muted); }
        .pill.closed, .pill.forced_closed { background: color-mix(in srgb, var(--ok) 15%, transparent); color: var(--ok); }
        .pill.open, .pill.forced_open { background: color-mix(in srgb, var(--bad) 15%, transparent); color: var(--bad); }
        .pill.half_open { background: color-mix(in srgb, var(--warn) 18%, transparent); color: var(--warn); }
        .late { color: var(--warn); }
        .panel-error { margin: 4px 0; color: var(--bad); font-size: 12px; }
        @media (max-width: 1100px) {
          .tiles { grid-template-columns: repeat(4, minmax(0, 1fr)); }
          .charts, .row { grid-template-columns: minmax(0, 1fr); }
          .panel { overflow-x: auto; }
        }

        """#

    static let script = #"""
        // Switchyard dashboard: polls the coordinator's JSON API every 2 s and redraws. Every string the
        // API gives goes into the page as text (textContent, attributes), never as HTML.
        "use strict";
        (() => {
          const POLL_MS = 2000;
          const REQUEST_TIMEOUT_MS = 10000;
          const STALE_MS = 10000;
          const TOKEN_KEY = "switchyard.coordinator.token";
          const SVG_NS = "http://www.w3.org/2000/svg";
          const WINDOWS = ["1m", "5m", "15m", "60m"];
          const QUANTILES = ["p50", "p95", "p99"];
          const COUNTERS = ["pushed", "succeeded", "failed", "retried", "cancelled", "dead"];
          const CACHE_ANSWERS = ["hit", "miss", "coalesced", "bypass"];
          // The page's own ?queue= picks the queue; the token is never put in a URL.
          const queue = new URLSearchParams(location.search).get("queue");

          let token = sessionStorage.getItem(TOKEN_KEY) || "";
          let timer = 0;
          let busy = false;
          let again = false;
          let lastSuccess = 0;
          let lastTimeline = null;

          class AuthError extends Error {}

          const $ = (id) => document.getElementById(id);

          // Builds an element; children are nodes or text (strings become text nodes).
          function el(tag, attributes, ...children) {
            const node = document.createElement(tag);
            for (const [name, value] of Object.entries(attributes || {})) {
              if (value === undefined || value === null || value === false) continue;
              if (name === "class") node.className = value;
              else node.setAttribute(name, String(value));
            }
            for (const child of children) {
              if (child === undefined || child === null) continue;
              node.append(child instanceof Node ? child : String(child));
            }
            return node;
          }

          function svg(tag, attributes, text) {
            const node = document.createElementNS(SVG_NS, tag);
            for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
            if (text !== undefined) node.textContent = text;
            return node;
          }

          // Formatting.
          const numberFormat = new Intl.NumberFormat("en-US");
          const count = (n) => (n === undefined || n === null ? "–" : numberFormat.format(Math.round(n)));
          const compactFormat = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
          const compact = (n) => (n === undefined || n === null ? "–" : compactFormat.format(n));
          function latency(s) {
            if (s === undefined || s === null || !isFinite(s)) return "–";
            if (s < 0.01) return (s * 1000).toFixed(2) + " ms";
            if (s < 0.1) return (s * 1000).toFixed(1) + " ms";
            if (s < 1) return Math.round(s * 1000) + " ms";
            if (s < 10) return s.toFixed(2) + " s";
            if (s < 60) return s.toFixed(1) + " s";
            return duration(s);
          }
          function duration(s) {
            if (s === undefined || s === null || !isFinite(s)) return "–";
            s = Math.max(0, Math.floor(s));
            const pad = (n) => String(n).padStart(2, "0");
            if (s < 60) return s + "s";
            if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
            if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor(s / 60) % 60) + "m";
            return Math.floor(s / 86400) + "d " + (Math.floor(s / 3600) % 24) + "h";
          }
          function rate(r) {
            if (r === undefined || r === null || !isFinite(r)) return "–";
            if (r === 0) return "0";
            if (r >= 100) return r.toFixed(0);
            if (r >= 10) return r.toFixed(1);
            return r.toFixed(r >= 0.1 ? 2 : 3);
          }
          function bytes(n) {
            if (!n) return "–";
            const units = ["B", "KiB", "MiB", "GiB", "TiB"];
            let i = 0;
            while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
            return (i === 0 || n >= 100 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
          }
          const clock = (t) => new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });
          const percent = (x) => (x === undefined || x === null || !isFinite(x) ? "–" : (x * 100).toFixed(x < 0.1 ? 1 : 0) + "%");

          // Sets every element that shows a figure: its text, and its raw number in data-value.
          function metric(name, value, text) {
            for (const node of document.querySelectorAll(`[data-metric="${CSS.escape(name)}"]`)) {
              node.textContent = text === undefined ? count(value) : text;
              node.dataset.value = value === undefined || value === null ? "" : String(value);
            }
          }
          // A table cell that shows a figure under a data-metric name.
          function cell(name, value, text, extra) {
            const node = el("td", extra || {}, text === undefined ? count(value) : text);
            if (name) node.dataset.metric = name;
            node.dataset.value = value === undefined || value === null ? "" : String(value);
            return node;
          }
          function fill(tbody, rows, columns, emptyText) {
            tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText))]));
          }

          // The API.
          function apiPath(path, params) {
            const search = new URLSearchParams(params || {});
            if (queue) search.set("queue", queue);
            const query = search.toString();
            return "/api/v1/" + path + (query ? "?" + query : "");
          }
          async function api(path, params) {
            const headers = { Accept: "application/json" };
            if (token) headers.Authorization = "Bearer " + token;
            const abort = new AbortController();
            const timeout = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
            try {
              const response = await fetch(apiPath(path, params), { headers, cache: "no-store", credentials: "omit", signal: abort.signal });
              if (response.status === 401) throw new AuthError(path);
              if (!response.ok) {
                let message = response.statusText;
                try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
                throw new Error(`${path}: ${response.status} ${message}`);
              }
              return await response.json();
            } catch (error) {
              if (error instanceof AuthError || !(error instanceof TypeError || error.name === "AbortError")) throw error;
              throw new Error(`cannot reach the coordinator (${path})`);
            } finally {
              clearTimeout(timeout);
            }
          }

          // Rendering.
          function renderCluster(c) {
            $("queue-name").textContent = c.queue;
            $("queue-name").dataset.value = c.queue;
            document.title = "Switchyard · " + c.queue;
            const workers = c.workers || {};
            metric("workers-alive", workers.alive);
            metric("workers-in-flight", workers.in_flight);
            metric("workers-capacity", workers.capacity);
            const lanes = c.lanes || [];
            metric("waiting-total", lanes.reduce((sum, lane) => sum + lane.waiting, 0));
            metric("running-total", lanes.reduce((sum, lane) => sum + lane.pending, 0));
            const ages = lanes.map((lane) => lane.oldest_waiting_seconds).filter((a) => a !== undefined && a !== null);
            const oldest = ages.length ? Math.max(...ages) : null;
            metric("oldest-waiting", oldest, oldest === null ? "none waiting" : "oldest " + duration(oldest));
            metric("delayed", c.delayed);
            metric("dead-letters", c.dead);
            const counters = c.counters || {};
            for (const name of COUNTERS) metric(name + "-total", counters[name] || 0);
            const windows = c.windows || {};
            metric("throughput-1m", windows["1m"] ? windows["1m"].throughput : null, windows["1m"] ? rate(windows["1m"].throughput) + "/s" : "–");
            const run5 = windows["5m"] && windows["5m"].run ? windows["5m"].run.p95 : null;
            metric("run-p95-5m", run5, latency(run5));
            metric("updated-at", c.now, clock(c.now));
            renderLanes(lanes);
            renderWindows(windows);
            renderCache(c);
          }

          function renderLanes(lanes) {
            fill($("lanes").tBodies[0], lanes.map((lane) => el("tr", { "data-lane": lane.name },
              el("td", {}, lane.name),
              cell("queue-waiting-" + lane.name, lane.waiting),
              cell("queue-running-" + lane.name, lane.pending),
              cell("queue-parked-" + lane.name, lane.parked || 0),
              cell("queue-oldest-" + lane.name, lane.oldest_waiting_seconds,
                lane.oldest_waiting_seconds === undefined || lane.oldest_waiting_seconds === null ? "–" : duration(lane.oldest_waiting_seconds),
                { class: lane.oldest_waiting_seconds > 60 ? "late" : "" }),
            )), 5, "No lanes.");
          }

          function renderWindows(windows) {
            // A window reaches back only as far as the coordinators' history does: say so when it is short.
            const hour = windows["60m"];
            $("windows-note").textContent = hour && hour.to - hour.from < 3595
              ? "attempts and latency over the last 1, 5, 15 and 60 minutes; history since " + clock(hour.from)
              : "attempts and latency over the last 1, 5, 15 and 60 minutes";
            const rows = WINDOWS.map((name) => {
              const w = windows[name];
              if (!w) return el("tr", {}, el("td", {}, name), el("td", { colspan: 12, class: "muted" }, "–"));
              const attempts = w.attempts || {};
              const tokensIn = w.tokens_in || 0, tokensOut = w.tokens_out || 0;
              const label = el("td", { title: `${clock(w.from)}–${clock(w.to)}` }, name);
              const quantiles = (prefix, q) =>
                QUANTILES.map((p) => cell(`window-${name}-${prefix}-${p}`, q ? q[p] : null, latency(q ? q[p] : null)));
              return el("tr", { "data-window": name },
                label,
                cell(`window-${name}-succeeded`, attempts.succeeded || 0),
                cell(`window-${name}-failed`, attempts.failed || 0),
                cell(`window-${name}-dead`, attempts.dead || 0),
                cell(`window-${name}-retried`, attempts.retried || 0),
                cell(`window-${name}-throughput`, w.throughput, rate(w.throughput)),
                ...quantiles("run", w.run),
                ...quantiles("wait", w.queue_wait),
                cell(`window-${name}-tokens`, tokensIn + tokensOut, compact(tokensIn) + " / " + compact(tokensOut),
                  { title: `${count(tokensIn)} in, ${count(tokensOut)} out` }),
              );
            });
            fill($("windows").tBodies[0], rows, 13, "");
          }

          function renderCache(c) {
            const total = (c.total && c.total.cache) || {};
            const windows = c.windows || {};
            const answers = [...CACHE_ANSWERS, ...Object.keys(total).filter((k) => !CACHE_ANSWERS.includes(k)).sort()];
            const any = answers.some((k) => total[k] > 0);
            $("cache-panel").hidden = !any;
            if (!any) return;
            const of = (w, k) => (windows[w] && windows[w].cache ? windows[w].cache[k] || 0 : 0);
            const rows = answers.map((k) => el("tr", {}, el("td", {}, k),
              cell(`cache-${k}-5m`, of("5m", k)), cell(`cache-${k}-60m`, of("60m", k)), cell(`cache-${k}-total`, total[k] || 0)));
            const all = answers.reduce((sum, k) => sum + (total[k] || 0), 0);
            rows.push(el("tr", {}, el("td", { class: "muted" }, "hit ratio"), el("td"), el("td"),
              cell("cache-hit-ratio", all ? ((total.hit || 0) + (total.coalesced || 0)) / all : null,
                all ? percent(((total.hit || 0) + (total.coalesced || 0)) / all) : "–")));
            fill($("cache").tBodies[0], rows, 4, "");
          }

          function renderWorkers(workers, now) {
            const sorted = [...workers].sort((a, b) => String(a.id).localeCompare(String(b.id)));
            const rows = sorted.map((w) => {
              const load = w.concurrency > 0 ? Math.min(1, w.in_flight / w.concurrency) : 0;
              const meter = el("span", { class: "meter" }, el("span"));
              meter.firstChild.style.width = Math.round(load * 100) + "%";
              const seen = now - w.heartbeat_at;
              const models = (w.models || []).join(", ");
              return el("tr", { "data-worker": w.id },
                el("td", { class: "mono" }, w.id, w.test_executor ? el("span", { class: "badge", title: "calls no model" }, "test") : null),
                el("td", { class: "text" }, w.host, el("span", { class: "muted" }, " · pid " + w.pid)),
                el("td", { class: "text" }, w.profile),
                el("td", { class: "text" }, w.executor),
                el("td", { "data-field": "in-flight", "data-value": w.in_flight }, meter, `${count(w.in_flight)} / ${count(w.concurrency)}`),
                el("td", { "data-field": "processed", "data-value": w.processed }, count(w.processed)),
                el("td", { "data-field": "rss", "data-value": w.rss_bytes }, bytes(w.rss_bytes)),
                el("td", { class: "text" }, el("span", { class: "models", title: models }, models || "–")),
                el("td", { "data-field": "last-seen", "data-value": seen, class: seen > 10 ? "late" : "" }, duration(seen) + " ago"),
                el("td", {}, duration(now - w.started_at)),
              );
            });
            fill($("workers").tBodies[0], rows, 10, "No worker is alive.");
            const hosts = new Set(workers.map((w) => w.host)).size;
            const rss = workers.reduce((sum, w) => sum + (w.rss_bytes || 0), 0);
            $("workers-note").textContent = workers.length
              ? `${workers.length} alive on ${hosts} host${hosts === 1 ? "" : "s"} · ${bytes(rss)} resident in all`
              : "";
          }

          function renderDeadLetters(letters, now, total) {
            const rows = letters.map((d) => el("tr", { "data-entry": d.entry_id },
              el("td", { title: d.failed_at ? new Date(d.failed_at * 1000).toISOString() : "" },
                d.failed_at ? duration(now - d.failed_at) + " ago" : "–"),
              el("td", { class: "text mono", title: d.job_id }, d.job_id),
              el("td", { class: "text" }, d.lane),
              el("td", {}, count(d.attempt)),
              el("td", { class: "text", title: d.reason }, d.reason),
            ));
            fill($("dead-letters").tBodies[0], rows, 5, "No dead letters.");
            $("dead-note").textContent = total > letters.length ? `latest ${letters.length} of ${count(total)}` : "";
          }

          function renderBreakers(reports) {
            $("breakers-panel").hidden = reports.length === 0;
            const rows = reports.map((b) => {
              const headroom = [];
              if (b.request_headroom !== undefined) headroom.push(count(b.request_headroom) + " req");
              if (b.token_headroom !== undefined) headroom.push(count(b.token_headroom) + " tok");
              return el("tr", { "data-target": b.target },
                el("td", { class: "mono" }, b.target),
                el("td", { class: "text", title: b.reason || "" },
                  el("span", { class: "pill " + String(b.state).replace(/[^a-z_]/g, ""), "data-field": "state", "data-value": b.state },
                    String(b.state).replace("_", " "))),
                el("td", {}, percent(b.failure_rate)),
                el("td", {}, count(b.calls)),
                el("td", {}, headroom.join(" · ") || "–"),
              );
            });
            fill($("breakers").tBodies[0], rows, 5, "");
          }

          // Charts: inline SVG, one point or bar per minute of the timeline, the last hour wide.
          // Three to five gridlines at round steps (1, 2, 2.5 or 5 times a power of ten).
          function scale(max) {
            if (!(max > 0)) return { top: 1, step: 0.25 };
            const rough = max / 4;
            const power = Math.pow(10, Math.floor(Math.log10(rough)));
            const step = [1, 2, 2.5, 5, 10].map((f) => f * power).find((s) => s >= rough * (1 - 1e-9));
            return { top: step * Math.ceil(max / step - 1e-9), step };
          }
          const trim = (n, digits) => String(Number(n.toFixed(digits)));
          const rateTick = (v) => trim(v, 3);
          const latencyTick = (s) => (s === 0 ? "0" : s < 1 ? trim(s * 1000, 2) + " ms" : trim(s, 2) + " s");

          function chart(target, minutes, now, kind, values, format) {
            const width = Math.max(240, Math.round(target.getBoundingClientRect().width));
            const height = 150;
            const left = 48, right = 8, top = 8, bottom = 20;
            const plotWidth = width - left - right, plotHeight = height - top - bottom;
            const end = now, start = now - 3600;
            const x = (t) => left + ((Math.min(Math.max(t, start), end) - start) / (end - start)) * plotWidth;
            const points = minutes.filter((m) => m.to > start);
            const all = points.flatMap((m) => values(m)).filter((v) => v !== null && v !== undefined && isFinite(v));
            const axis = scale(all.length ? Math.max(...all) : 0);
            const y = (v) => top + plotHeight - (v / axis.top) * plotHeight;
            const nodes = [];
            const ticks = Math.round(axis.top / axis.step);
            for (let i = 0; i <= ticks; i++) {
              const v = axis.step * i;
              nodes.push(svg("line", { class: i === 0 ? "base" : "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
              nodes.push(svg("text", { x: left - 6, y: y(v) + 3, "text-anchor": "end" }, format(v)));
            }
            for (const back of [60, 45, 30, 15, 0]) {
              nodes.push(svg("text", { x: x(end - back * 60), y: height - 5, "text-anchor": back === 60 ? "start" : back === 0 ? "end" : "middle" },
                back === 0 ? "now" : `−${back}m`));
            }
            if (!all.length) {
              const middle = { class: "empty", x: left + plotWidth / 2, y: top + plotHeight / 2, "text-anchor": "middle" };
              nodes.push(svg("text", middle, "No activity recorded yet"));
            } else if (kind === "bars") {
              for (const m of points) {
                const v = values(m)[0] || 0;
                const x0 = x(m.from), x1 = x(m.to);
                // At least 3 px wide: the minute in progress may be only seconds old.
                const w = Math.max(3, x1 - x0 - 1);
                const barHeight = Math.max(0, y(0) - y(v));
                const bar = svg("rect", { class: "bar", x: Math.min(x0 + 0.5, left + plotWidth - w), y: y(v), width: w, height: barHeight });
                const succeeded = count((m.attempts || {}).succeeded || 0);
                bar.append(svg("title", {}, `${clock(m.from)}–${clock(m.to)}: ${rate(v)} jobs/s, ${succeeded} succeeded`));
                nodes.push(bar);
              }
            } else {
              QUANTILES.forEach((name, index) => {
                let path = "";
                let previous = null;
                for (const m of points) {
                  const v = values(m)[index];
                  if (v === null || v === undefined) { previous = null; continue; }
                  const mid = (m.from + m.to) / 2;
                  // A minute without a record breaks the line.
                  const join = previous !== null && mid - previous < 100;
                  path += (join ? "L" : "M") + x(mid).toFixed(1) + " " + y(v).toFixed(1);
                  previous = mid;
                  const dot = svg("circle", { class: "point " + name, cx: x(mid), cy: y(v), r: 2.2 });
                  dot.append(svg("title", {}, `${clock(m.from)}–${clock(m.to)}: ${name} ${latency(v)}`));
                  nodes.push(dot);
                }
                if (path) nodes.push(svg("path", { class: "line " + name, d: path }));
              });
            }
            target.setAttribute("viewBox", `0 0 ${width} ${height}`);
            target.replaceChildren(...nodes);
            target.dataset.points = String(points.length);
          }

          function renderTimeline(timeline) {
            lastTimeline = timeline;
            const minutes = timeline.minutes;
            const quantiles = (q) => (q ? [q.p50, q.p95, q.p99] : [null, null, null]);
            chart($("chart-throughput"), minutes, timeline.now, "bars", (m) => [m.throughput], rateTick);
            chart($("chart-run"), minutes, timeline.now, "lines", (m) => quantiles(m.run), latencyTick);
            chart($("chart-wait"), minutes, timeline.now, "lines", (m) => quantiles(m.queue_wait), latencyTick);
          }

          // State and polling.
          function setState(state, text) {
            document.body.dataset.state = state;
            $("status-text").textContent = text;
            $("forget-token").hidden = !token;
          }

          function askForToken(message) {
            setState("auth", "Token needed");
            $("token-message").textContent = message;
            $("token-form").hidden = false;
            $("token-input").focus();
          }

          async function poll() {
            clearTimeout(timer);
            if (busy) { again = true; return; }
            busy = true;
            try {
              const [cluster, workers, timeline, dead, breakers] = await Promise.allSettled([
                api("cluster"), api("workers"), api("timeline", { minutes: 60 }), api("dead-letters", { limit: 6 }), api("breakers"),
              ]);
              const results = [cluster, workers, timeline, dead, breakers];
              if (results.some((r) => r.status === "rejected" && r.reason instanceof AuthError)) {
                const refused = !!token;
                token = "";
                sessionStorage.removeItem(TOKEN_KEY);
                askForToken(
                  refused ? "The coordinator refused that token; enter another one."
                    : "This coordinator needs a token to show its data.");
                return;
              }
              if (cluster.status === "rejected") throw cluster.reason;
              const c = cluster.value;
              renderCluster(c);
              const panelError = (id, result) => {
                const panel = $(id).closest(".panel");
                let note = panel.querySelector(".panel-error");
                if (result.status === "fulfilled") { if (note) note.remove(); return true; }
                if (!note) { note = el("p", { class: "panel-error" }); panel.append(note); }
                note.textContent = String(result.reason && result.reason.message ? result.reason.message : result.reason);
                return false;
              };
              if (panelError("workers", workers)) renderWorkers(workers.value, c.now);
              if (panelError("chart-throughput", timeline)) renderTimeline({ minutes: timeline.value, now: c.now });
              if (panelError("dead-letters", dead)) renderDeadLetters(dead.value, c.now, c.dead);
              if (breakers.status === "fulfilled") renderBreakers(breakers.value);
              lastSuccess = Date.now();
              $("token-form").hidden = true;
              $("updated").hidden = false;
              setState("live", "Live");
            } catch (error) {
              setState("error", error && error.message ? error.message : String(error));
            } finally {
              busy = false;
              if (document.body.dataset.state !== "auth") timer = setTimeout(poll, again ? 0 : POLL_MS);
              again = false;
            }
          }

          // A page left open with the coordinator gone says so, even between failed polls.
          setInterval(() => {
            if (document.body.dataset.state === "live" && Date.now() - lastSuccess > STALE_MS) {
              setState("stale", "Stale: no answer for " + duration((Date.now() - lastSuccess) / 1000));
            }
          }, 1000);

          $("token-form").addEventListener("submit", (event) => {
            event.preventDefault();
            const value = $("token-input").value.trim();
            if (!value) return;
            token = value;
            sessionStorage.setItem(TOKEN_KEY, value);
            $("token-input").value = "";
            $("token-form").hidden = true;
            setState("loading", "Connecting…");
            poll();
          });

          $("forget-token").addEventListener("click", () => {
            token = "";
            sessionStorage.removeItem(TOKEN_KEY);
            poll();
          });

          let resizeTimer = 0;
          window.addEventListener("resize", () => {
            clearTimeout(resizeTimer);
            resizeTimer = setTimeout(() => { if (lastTimeline) renderTimeline(lastTimeline); }, 150);
          });

          poll();
        })();

        """#

    static let favicon = #"""
        <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">
        <rect width="32" height="32" rx="7" fill="#2f5fd0"/>
        <path d="M6 23h20M6 9h7c5 0 6 14 13 14M19 9h7" fill="none" stroke="#fff" stroke-width="3" stroke-linecap="round"/>
        </svg>

        """#
}
