"use strict";
// The gearshift dashboard: one script for every page. Figures come from /ui/api/* (computed on the
// server from the store); this file only lays them out. Text from traces is set with textContent,
// never parsed as HTML.

const gs = { csrf: null, who: null, charts: {} };
window.gs = gs; // tests and curious operators read the charts' data here

// --- helpers -----------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) { location.href = "/ui/login"; throw new Error("signed out"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function postJSON(url, payload) {
  const r = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": gs.csrf || "" },
    body: JSON.stringify(payload),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

const usd = (v) => (v === null || v === undefined ? "–" : "$" + (Math.abs(v) >= 100 ? v.toFixed(2) : v.toFixed(4)));
const pct = (v, d = 1) => (v === null || v === undefined ? "–" : (v * 100).toFixed(d) + "%");
const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(0) + " ms");
const when = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "–");
const num = (v) => (v === null || v === undefined ? "–" : String(v));

function kpi(id, label, value, raw, sub) {
  return h("div", { class: "card kpi", id, "data-value": raw === null || raw === undefined ? "" : raw },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value), sub ? h("div", { class: "sub" }, sub) : null);
}

function table(columns, rows, opts = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.label)));
  const body = rows.map((r) => {
    const tr = h("tr", { class: opts.onclick ? "clickable" : null, "data-id": r.id || null },
      columns.map((c) => h("td", { class: (c.num ? "num " : "") + (c.cls ? c.cls(r) : "") }, c.get(r))));
    if (opts.onclick) tr.addEventListener("click", () => opts.onclick(r));
    return tr;
  });
  return h("div", { class: "table-wrap" }, h("table", { id: opts.id || null }, h("thead", {}, head), h("tbody", {}, body)));
}

function empty(...children) { return h("div", { class: "empty" }, ...children); }

function width(el) { return Math.max(280, (el.clientWidth || 800) - 16); }

function chart(name, container, title, xs, series, opts = {}) {
  const el = h("div", { class: "chart", id: "chart-" + name });
  container.append(el);
  const palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"];
  const u = new uPlot({
    title, width: width(container), height: opts.height || 240,
    scales: { x: { time: true } },
    axes: [{}, { values: (self, ticks) => ticks.map(opts.fmt || ((v) => v)), size: 70 }],
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: palette[i % palette.length], width: 2,
                                             dash: s.dash, points: { show: xs.length < 3 } }))],
  }, [xs, ...series.map((s) => s.values)], el);
  gs.charts[name] = u;
  return u;
}

window.addEventListener("resize", () => {
  for (const u of Object.values(gs.charts)) u.setSize({ width: width(u.root.parentElement.parentElement), height: u.height });
});

function rangeSelect(hours, onchange) {
  const choices = [[1, "last hour"], [24, "last 24 h"], [168, "last 7 days"], [720, "last 30 days"]];
  const sel = h("select", { id: "range", onchange: () => onchange(Number(sel.value)) },
    choices.map(([v, l]) => h("option", { value: v, selected: v === hours }, l)));
  return h("label", { class: "muted" }, "Range ", sel);
}

function currentHours() { return Number(new URLSearchParams(location.search).get("hours")) || 24; }

function setHours(v) {
  const q = new URLSearchParams(location.search); q.set("hours", v);
  history.replaceState(null, "", location.pathname + "?" + q); route();
}

const NO_TRAFFIC = () => empty(
  h("h2", {}, "No traffic yet"),
  h("p", {}, "Nothing is stored for this range. Send a request through the gateway (for example with the OpenAI SDK, ",
    h("code", {}, "base_url=http://<gateway>/v1"), "), or try it on recorded answers: ", h("code", {}, "gearshift demo"), "."),
);

// --- pages -------------------------------------------------------------------------------------

async function overview(main) {
  const hours = currentHours();
  const d = await getJSON("/ui/api/overview?hours=" + hours);
  const s = d.summary;
  main.append(h("h1", {}, "Overview"), rangeSelect(hours, setHours));
  if (!s.requests) { main.append(NO_TRAFFIC()); return; }
  const c = s.cascade;
  const q = d.quality;
  main.append(h("div", { class: "grid", id: "kpis" },
    kpi("kpi-requests", "Requests", s.requests, s.requests, s.errors + " errors"),
    kpi("kpi-spend", "Spend", usd(s.spend_usd), s.spend_usd, "always-" + s.reference_model + ": " + usd(s.counterfactual_usd_estimate)),
    kpi("kpi-savings", "Savings (estimate)", usd(s.savings_usd_estimate), s.savings_usd_estimate,
      s.savings_pct_estimate === null ? "" : s.savings_pct_estimate.toFixed(1) + "% of always-strongest"),
    kpi("kpi-quality", "Quality retained", q.retained === null ? "–" : pct(q.retained), q.retained,
      q.retained === null ? "no shadow pairs in range" : "95% [" + pct(q.low) + ", " + pct(q.high) + "] · " + q.pairs + " pairs"),
    kpi("kpi-feedback", "Feedback", d.feedback.mean === null ? "–" : d.feedback.mean.toFixed(2), d.feedback.mean,
      d.feedback.count + " scores"),
    kpi("kpi-escalation", "Escalation rate", c ? pct(c.escalation_rate) : "–", c ? c.escalation_rate : null,
      c ? c.gated_requests + " gated requests" : "no gated requests"),
    kpi("kpi-latency-tier1", "Latency tier 1 p50/p95", c ? ms(c.accepted_at_tier1.latency_p50_ms) + " / " + ms(c.accepted_at_tier1.latency_p95_ms) : "–",
      c ? c.accepted_at_tier1.latency_p95_ms : null, c ? c.accepted_at_tier1.count + " accepted at tier 1" : ""),
    kpi("kpi-latency-escalated", "Latency escalated p50/p95", c ? ms(c.escalated.latency_p50_ms) + " / " + ms(c.escalated.latency_p95_ms) : "–",
      c ? c.escalated.latency_p95_ms : null, c ? c.escalated.count + " escalated" : ""),
  ));
  if (q.how) main.append(h("p", { class: "muted", id: "quality-how" }, "Quality: " + q.how));
  const xs = d.series.map((p) => p.t);
  let spend = 0, cf = 0;
  const cum = d.series.map((p) => (spend += p.spend_usd));
  const cumCf = d.series.map((p) => (cf += p.counterfactual_usd));
  chart("spend", main, "Cumulative spend vs always-" + s.reference_model + " (USD)", xs,
    [{ label: "spend", values: cum }, { label: "always-" + s.reference_model + " (estimate)", values: cumCf, dash: [6, 4] }],
    { fmt: (v) => "$" + v.toFixed(3) });
  chart("requests", main, "Requests per " + Math.round(d.bucket_seconds / 60) + " min", xs,
    [{ label: "requests", values: d.series.map((p) => p.requests) }]);
  const models = Object.entries(s.spend_by_model).sort((a, b) => b[1].total - a[1].total);
  main.append(h("h2", {}, "Spend by model"), table(
    [{ label: "model", get: (r) => r[0] }, { label: "calls", num: true, get: (r) => s.calls_by_model[r[0]] || 0 },
     { label: "USD", num: true, get: (r) => usd(r[1].total) }], models, { id: "spend-by-model" }));
}

async function routers(main) {
  const hours = currentHours();
  const d = await getJSON("/ui/api/routers?hours=" + hours);
  main.append(h("h1", {}, "Routers"), rangeSelect(hours, setHours), h("div", { id: "flash" }));
  if (d.mix.length) {
    const xs = [...new Set(d.mix.map((m) => m.t))].sort((a, b) => a - b);
    const keys = [...new Set(d.mix.map((m) => m.router + " → " + (m.model || "(no answer)")))].sort();
    const series = keys.map((k) => ({ label: k, values: xs.map((t) => d.mix.filter((m) => m.t === t && m.router + " → " + (m.model || "(no answer)") === k)
      .reduce((a, m) => a + m.requests, 0)) }));
    chart("mix", main, "Decision mix: requests per router → model", xs, series);
  } else {
    main.append(NO_TRAFFIC());
  }
  for (const r of d.routers) {
    const box = h("div", { class: "card", id: "router-" + r.name.replace(/[^a-zA-Z0-9_-]/g, "_") });
    box.append(h("h2", {}, r.name, " ", h("span", { class: "badge" }, r.kind || "not in config")));
    if (r.state) {
      const st = r.state;
      const share = st.min_pairs ? Math.min(1, st.pairs / st.min_pairs) : null;
      const bar = h("span", {}); if (share !== null) bar.style.width = (share * 100).toFixed(0) + "%";
      box.append(h("p", { class: "state" }, "mode ", h("b", {}, st.mode), ", ", st.state, ": ", st.reason || "",
        share !== null ? h("span", {}, " ", h("span", { class: "progress", title: st.pairs + "/" + st.min_pairs + " pairs" }, bar)) : null));
    }
    if (!r.versions.length) {
      box.append(h("p", { class: "muted" }, "No stored versions: it serves its configured settings. Versions appear when the lab recalibrates or a proof promotes one (",
        h("code", {}, "gearshift lab recalibrate"), ")."));
    } else {
      box.append(table([
        { label: "version", get: (v) => v.version },
        { label: "created", get: (v) => when(v.created) },
        { label: "by", get: (v) => v.created_by },
        { label: "settings", get: (v) => JSON.stringify(v.settings).slice(0, 60) },
        { label: "proof", get: (v) => v.proof || "" },
        { label: "active", get: (v) => (v.active ? h("span", { class: "badge active" }, "active") : "") },
        { label: "promoted", get: (v) => (v.promoted_by ? v.promoted_by + " · " + when(v.promoted_at) : "") },
        { label: "", get: (v) => (v.active ? "" : h("button", { class: "secondary promote", "data-version": v.version,
            onclick: () => act("/ui/api/routers/promote", { router: r.name, version: v.version }, versionDone("promoted version " + v.version)) }, "promote")) },
      ], r.versions));
      if (r.rollback_to !== null) {
        box.append(h("p", {}, h("button", { class: "rollback", onclick: () => act("/ui/api/routers/rollback", { router: r.name }, versionDone("rolled back")) },
          "roll back to version " + r.rollback_to)));
      }
    }
    main.append(box);
  }
}

const versionDone = (done) => (res) => res.router + ": " + done + " (version " + res.version + ", by " + res.promoted_by + ")";

// An admin action: post it, then reload the page with `said(answer)` as its flash, or show the error.
async function act(url, payload, said) {
  const flash = document.getElementById("flash");
  try {
    const res = await postJSON(url, payload);
    sessionStorage.setItem("flash", said(res));
    route();
  } catch (e) {
    flash.replaceChildren(h("p", { class: "error" }, e.message));
  }
}

async function watchPage(main) {
  const hours = currentHours();
  const d = await getJSON("/ui/api/watch?hours=" + hours);
  main.append(h("h1", {}, "Watch"), rangeSelect(hours, setHours));
  main.append(h("h2", {}, "Alert episodes"), episodes(d));
  if (!d.report) {
    main.append(empty(h("h2", {}, "No baseline yet"), h("p", {}, "The watch compares recent traffic with a baseline: the oldest " +
      d.window_requests + " traces, once at least " + d.needed + " are stored, or a file saved with ", h("code", {}, "gearshift watch --save-baseline FILE"), ".")));
    return;
  }
  const r = d.report;
  main.append(h("p", { class: "muted" }, "Window: " + r.window.n + " requests (" + when(r.window.start) + " – " + when(r.window.end) +
    "); baseline: " + r.baseline.source + " (" + r.baseline.n + "). " + (d.enabled ? "The in-server check runs." : "The in-server check is off (watch.enabled).")));
  main.append(h("h2", {}, "Statistics against the baseline"), table([
    { label: "metric", get: (m) => m.name },
    { label: "window", num: true, get: (m) => (m.value === null ? "–" : m.value.toFixed(4)) },
    { label: "baseline", num: true, get: (m) => (m.baseline === null ? "–" : m.baseline.toFixed(4)) },
    { label: "bound", num: true, get: (m) => (m.bound === null ? "–" : m.bound.toFixed(4)) },
    { label: "rule", get: (m) => m.rule },
    { label: "n", num: true, get: (m) => m.n },
    { label: "status", get: (m) => m.status, cls: (m) => (m.drifted ? "drift" : "") },
  ], r.metrics, { id: "watch-metrics" }));
}

// The alert episodes over the range: one row per metric, a bar from its start to its end (open: to now).
function episodes(d) {
  const eps = d.episodes;
  const open = eps.filter((e) => e.ended === null).length;
  if (!eps.length) return h("p", { id: "alerts", class: "pass" }, "No alerts in this range." + (d.alerts.length ? " Active: " + d.alerts.map((a) => a.metric).join(", ") + "." : ""));
  const t0 = d.since, t1 = d.until, span = Math.max(1, t1 - t0);
  const at = (t) => Math.min(100, Math.max(0, (100 * (t - t0)) / span));
  const box = h("div", { class: "episodes", id: "alerts" });
  for (const metric of [...new Set(eps.map((e) => e.metric))].sort()) {
    const track = h("div", { class: "track" });
    for (const e of eps.filter((x) => x.metric === metric)) {
      const left = at(e.started), right = at(e.ended === null ? t1 : e.ended);
      const bar = h("span", { class: "episode" + (e.ended === null ? " open" : ""), "data-metric": metric, "data-started": e.started,
        "data-ended": e.ended === null ? "" : e.ended, title: metric + ": " + when(e.started) + " – " + (e.ended === null ? "now (open)" : when(e.ended)) });
      bar.style.left = left.toFixed(2) + "%";
      bar.style.width = Math.max(0.5, right - left).toFixed(2) + "%";
      track.append(bar);
    }
    box.append(h("div", { class: "lane" }, h("span", { class: "name" }, metric), track));
  }
  box.append(h("div", { class: "lane axis muted" }, h("span", { class: "name" }, ""), h("div", { class: "ends" }, h("span", {}, when(t0)), h("span", {}, when(t1)))));
  const fmt = (v) => (v === null || v === undefined ? "–" : v.toFixed(4));
  return h("div", {}, h("p", { class: open ? "drift" : "muted" }, eps.length + " episodes in range, " + open + " open"), box, table([
    { label: "metric", get: (e) => e.metric },
    { label: "started (UTC)", get: (e) => when(e.started) },
    { label: "ended (UTC)", get: (e) => (e.ended === null ? "open" : when(e.ended)), cls: (e) => (e.ended === null ? "drift" : "") },
    { label: "value", num: true, get: (e) => fmt(e.value) },
    { label: "baseline", num: true, get: (e) => fmt(e.baseline) },
    { label: "bound", num: true, get: (e) => fmt(e.bound) + " " + (e.rule || "") },
    { label: "at end", num: true, get: (e) => fmt(e.end_value) },
    { label: "raised by", get: (e) => e.raised_by || "–" },
    { label: "cleared by", get: (e) => e.cleared_by || "" },
  ], eps, { id: "episodes" }));
}

async function traces(main) {
  const q = new URLSearchParams(location.search);
  main.append(h("h1", {}, "Traces"));
  const field = (name, label, input) => h("label", {}, label, input);
  const text = (name, ph) => h("input", { name, value: q.get(name) || "", placeholder: ph, size: 14 });
  const choice = (name, opts) => h("select", { name }, opts.map(([v, l]) => h("option", { value: v, selected: (q.get(name) || "") === v }, l)));
  const form = h("form", { class: "filters", id: "filters" },
    field("router", "router", text("router", "any")),
    field("model", "model", text("model", "any")),
    field("status", "status", choice("status", [["", "any"], ["ok", "ok (200)"], ["error", "error"]])),
    field("client", "key", text("client", "any")),
    field("escalated", "escalated", choice("escalated", [["", "any"], ["yes", "yes"], ["no", "no"]])),
    field("verdict", "gate verdict", choice("verdict", [["", "any"], ["pass", "pass"], ["fail", "fail"], ["none", "no gate"]])),
    field("since", "since (UTC)", h("input", { name: "since", type: "datetime-local", value: q.get("since") ? new Date(q.get("since") * 1000).toISOString().slice(0, 16) : "" })),
    h("button", { type: "submit", id: "apply" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (!v) continue;
      p.set(k, k === "since" ? String(Date.parse(v + "Z") / 1000) : v);
    }
    history.pushState(null, "", "/ui/traces?" + p); route();
  });
  main.append(form);
  const api = new URLSearchParams([...q].filter(([k]) => k !== "trace"));
  const d = await getJSON("/ui/api/traces?" + api);
  const detail = h("div", { id: "trace-detail" });
  if (!d.traces.length) {
    main.append([...api].length ? empty(h("p", {}, "No trace matches these filters.")) : NO_TRAFFIC());
  } else {
    main.append(h("p", { class: "muted", id: "trace-count" }, d.traces.length + " newest matching traces"), table([
      { label: "time (UTC)", get: (t) => when(t.created) },
      { label: "router", get: (t) => t.router },
      { label: "model", get: (t) => t.model || "–" },
      { label: "status", num: true, get: (t) => t.status },
      { label: "key", get: (t) => t.client || "–" },
      { label: "escalated", get: (t) => (t.escalated ? "yes" : "") },
      { label: "gates", get: (t) => t.verdict, cls: (t) => t.verdict },
      { label: "cost", num: true, get: (t) => usd(t.cost_usd) },
      { label: "latency", num: true, get: (t) => ms(t.latency_ms) },
    ], d.traces, { id: "traces", onclick: (t) => openTrace(t.id, detail) }));
  }
  main.append(detail);
  if (q.get("trace")) await openTrace(q.get("trace"), detail);
}

async function openTrace(id, detail) {
  const t = await getJSON("/ui/api/traces/" + encodeURIComponent(id));
  const q = new URLSearchParams(location.search); q.set("trace", id);
  history.replaceState(null, "", "/ui/traces?" + q);
  detail.replaceChildren(h("h2", {}, "Trace ", h("code", {}, t.id)),
    h("div", { class: "grid" },
      kpi("trace-cost", "Cost", usd(t.cost_usd), t.cost_usd, "gates " + usd(t.gate_cost_usd) + " · shadow " + usd(t.shadow_cost_usd)),
      kpi("trace-latency", "Latency", ms(t.latency_ms), t.latency_ms, t.streamed ? "streamed" : ""),
      kpi("trace-model", "Answered by", t.model || "–", t.model, "asked for " + t.requested_model),
      kpi("trace-status", "Status", t.status, t.status, t.error || "")),
    h("p", {}, h("b", {}, "Route: "), (t.route || []).join(" → "), " · ", h("b", {}, "reason: "), t.reason || "–",
      t.arm ? " · arm " + t.arm : "", " · key ", t.client || "–", " · ", when(t.created)),
    h("h2", {}, "Calls"), table([
      { label: "#", get: (c) => c.i },
      { label: "model", get: (c) => c.model }, { label: "role", get: (c) => c.role + (c.shadow ? " (shadow)" : "") },
      { label: "tokens in/out", num: true, get: (c) => c.input_tokens + " / " + c.output_tokens },
      { label: "cost", num: true, get: (c) => usd(c.cost_usd) }, { label: "latency", num: true, get: (c) => ms(c.latency_ms) },
      { label: "status", num: true, get: (c) => c.status + (c.error ? " " + c.error : "") },
    ], t.calls.map((c, i) => ({ ...c, i })), { id: "trace-calls" }),
    h("h2", {}, "Gates and verdicts"), t.verdicts.length ? table([
      { label: "gate", get: (v) => v.gate }, { label: "model", get: (v) => v.model || "–" },
      { label: "verdict", get: (v) => (v.passed === null ? "–" : v.passed ? "pass" : "fail"), cls: (v) => (v.passed ? "pass" : v.passed === false ? "fail" : "") },
      { label: "score", num: true, get: (v) => (v.score === null ? "–" : v.score.toFixed(3)) },
      { label: "reasons", get: (v) => (Array.isArray(v.reasons) ? v.reasons.join("; ") : v.reasons || "") },
    ], t.verdicts, { id: "trace-verdicts" }) : h("p", { class: "muted" }, "No gate judged this answer."),
    h("h2", {}, "Shadow pair"), t.pairs.length ? table([
      { label: "answer of", get: (p) => p.model || "–" }, { label: "reference", get: (p) => p.reference || "–" },
      { label: "method", get: (p) => p.method || "–" }, { label: "agreed", get: (p) => (p.passed ? "yes" : "no"), cls: (p) => (p.passed ? "pass" : "fail") },
      { label: "score", num: true, get: (p) => (p.score === null ? "–" : p.score.toFixed(3)) },
    ], t.pairs, { id: "trace-pairs" }) : h("p", { class: "muted" }, "Not shadowed."),
    h("h2", {}, "Prompt"), h("pre", {}, t.prompt || "(not stored)"),
    h("h2", {}, "Answer"), h("pre", {}, t.response || "(not stored)"));
  detail.scrollIntoView({ block: "start" });
}

async function abPage(main) {
  const hours = currentHours();
  const d = await getJSON("/ui/api/ab?hours=" + hours);
  main.append(h("h1", {}, "A/B" + (d.router ? ": " + d.router : " (routers side by side)")), rangeSelect(hours, setHours));
  if (!d.arms.length) {
    main.append(empty(h("h2", {}, "No arms to compare"), h("p", {}, d.empty + ". Give a router of kind ", h("code", {}, "split"),
      " arms, or send traffic to two routers, and their traces are compared here.")));
    return;
  }
  const est = (e) => (e ? e.value.toFixed(4) + " [" + e.low.toFixed(4) + ", " + e.high.toFixed(4) + "]" : "–");
  const signals = ["cost_usd", "latency_ms", "gate_pass", "shadow_agreement", "feedback"];
  main.append(h("h2", {}, "Arms (control: " + d.control + ")"), table([
    { label: "arm", get: (a) => a.name }, { label: "requests", num: true, get: (a) => a.requests },
    ...signals.map((s) => ({ label: s + " (95% CI)", get: (a) => est(a.signals[s]) })),
  ], d.arms, { id: "ab-arms" }));
  for (const [arm, rows] of Object.entries(d.differences)) {
    main.append(h("h2", {}, arm + " − " + d.control), table([
      { label: "signal", get: (r) => r.signal }, { label: "difference (95% CI)", get: (r) => est(r) },
      { label: "p-value (Welch)", num: true, get: (r) => (r.p_value === null ? "–" : r.p_value.toPrecision(3)) },
      { label: "n arm / control", num: true, get: (r) => r.n_arm + " / " + r.n_control },
    ], rows));
  }
}

async function keysPage(main) {
  const hours = currentHours();
  const d = await getJSON("/ui/api/keys?hours=" + hours);
  main.append(h("h1", {}, "Keys and budgets"), rangeSelect(hours, setHours));
  if (!d.clients.length) main.append(NO_TRAFFIC());
  else main.append(h("h2", {}, "Spend per client key"), table([
    { label: "key", get: (c) => c.client || "(open server: no key)" }, { label: "requests", num: true, get: (c) => c.requests },
    { label: "errors", num: true, get: (c) => c.errors }, { label: "spend", num: true, get: (c) => usd(c.spend_usd) },
  ], d.clients, { id: "client-spend" }));
  const teams = d.teams.filter((t) => t.team);
  if (teams.length || Object.keys(d.budgets).length) {
    const budget = (name) => d.budgets[name] || {};
    const limit = (v, money) => (v === null || v === undefined ? "–" : money ? usd(v) : String(v));
    main.append(h("h2", {}, "Spend per team"), table([
      { label: "team", get: (t) => t.team }, { label: "requests", num: true, get: (t) => t.requests },
      { label: "spend", num: true, get: (t) => usd(t.spend_usd) },
      { label: "budget / day", num: true, get: (t) => limit(budget(t.team).usd_day, true) },
      { label: "budget / month", num: true, get: (t) => limit(budget(t.team).usd_month, true) },
      { label: "rpm / tpm", num: true, get: (t) => limit(budget(t.team).rpm) + " / " + limit(budget(t.team).tpm) },
    ], teams, { id: "team-spend" }));
  }
  main.append(h("h2", {}, "Configured keys"), d.keys.length ? table([
    { label: "name", get: (k) => k.name }, { label: "admin", get: (k) => (k.admin ? "yes" : "") }, { label: "team", get: (k) => k.team || "–" },
  ], d.keys) : h("p", { class: "muted" }, "No client keys in the config."));
  main.append(h("h2", {}, "Virtual keys"), d.virtual.length ? table([
    { label: "name", get: (k) => k.name }, { label: "team", get: (k) => k.team || "–" }, { label: "key", get: (k) => k.prefix },
    { label: "state", get: (k) => k.state }, { label: "spend today", num: true, get: (k) => usd(k.spend_today_usd || 0) },
    { label: "this month", num: true, get: (k) => usd(k.spend_month_usd || 0) },
    { label: "", get: (k) => (k.state === "revoked" ? (k.revoked_by || "") : h("button", { class: "secondary revoke", "data-key": k.name,
        onclick: () => revokeKey(k.name) }, "revoke")) },
  ], d.virtual, { id: "virtual-keys" }) : h("p", { class: "muted" }, "No virtual keys: make one with ",
    h("code", {}, "gearshift keys create --config F --name NAME"), " (needs server.key_secret_env)."));
}

function revokeKey(name) {
  return act("/ui/api/keys/revoke", { name }, (res) => res.name + ": revoked by " + res.revoked_by);
}

async function reportsPage(main) {
  const d = await getJSON("/ui/api/reports");
  main.append(h("h1", {}, "Lab reports"));
  if (!d.reports.length) {
    main.append(empty(h("h2", {}, "No reports"), h("p", {}, d.folder ? "No HTML reports in " + d.folder + ". " : "No reports folder is set: start with ",
      h("code", {}, "--reports DIR"), ". ", "Write one with ", h("code", {}, "gearshift lab report --config F --out DIR/report.html"), ".")));
    return;
  }
  main.append(table([
    { label: "report", get: (r) => h("a", { href: "/ui/reports/" + encodeURIComponent(r.name), target: "_blank", rel: "noopener" }, r.name) },
    { label: "written", get: (r) => when(r.modified) }, { label: "size", num: true, get: (r) => (r.bytes / 1024).toFixed(0) + " KB" },
  ], d.reports, { id: "reports" }));
}

const PAGES = { overview, routers, watch: watchPage, traces, ab: abPage, keys: keysPage, reports: reportsPage };

async function route() {
  const name = location.pathname.replace(/^\/ui\/?/, "").split("/")[0] || "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  for (const u of Object.values(gs.charts)) u.destroy();
  gs.charts = {};
  const main = document.getElementById("main");
  delete main.dataset.ready; // set again once this page has rendered (tests wait on it)
  main.replaceChildren();
  const flash = sessionStorage.getItem("flash");
  if (flash) { sessionStorage.removeItem("flash"); main.append(h("p", { class: "pass", id: "done" }, flash)); }
  try {
    await (PAGES[name] || overview)(main);
    main.dataset.ready = name;
  } catch (e) {
    main.append(h("p", { class: "error" }, "Could not load this page: " + e.message));
    main.dataset.ready = "error";
  }
}

function login(main) {
  // The sign-in form (no session yet): posts the key to /ui/login, which sets the session cookie.
  document.body.classList.add("login");
  const error = new URLSearchParams(location.search).get("error");
  main.replaceChildren(h("h1", {}, "gearshift"),
    h("form", { method: "post", action: "/ui/login" },
      h("label", { for: "key" }, "Admin key"),
      h("input", { id: "key", name: "key", type: "password", autocomplete: "current-password", required: true }),
      h("button", { type: "submit", id: "signin" }, "Sign in")),
    error === "wrong-key" ? h("p", { class: "error", id: "wrong-key" }, "That is not an admin key.") : null,
    error === "no-admin-keys" ? h("p", { class: "error", id: "no-admin-keys" }, "No client key has ", h("code", {}, "admin: true"),
      " in the config and virtual keys are off, so nobody can sign in. Add one under ", h("code", {}, "client_keys"), " (with ", h("code", {}, "key_env"), ") and restart.") : null,
    h("p", { class: "muted" }, "Sign in with an admin key: a client key with ", h("code", {}, "admin: true"), " in the config, or a virtual key made with ",
      h("code", {}, "gearshift keys create --admin"), "."));
  main.dataset.ready = "login";
}

(async function start() {
  if (location.pathname === "/ui/login") { login(document.getElementById("main")); return; }
  const s = await getJSON("/ui/api/session");
  gs.csrf = s.csrf; gs.who = s.who;
  document.getElementById("who").textContent = s.who;
  window.addEventListener("popstate", route);
  await route();
})();
