// The live page: poll the JSON summary and redraw the figures. No library, no build step.
"use strict";
(function () {
  const url = document.body.dataset.summary;
  const every = Number(document.body.dataset.every || 2000);
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  const colors = {awarded: "#2e7d32", sold_out: "#3b6ea5", budget_exhausted: "#c0392b",
                  duplicate: "#9a9a9a"};
  function rows(id, list, cells) {
    const body = document.getElementById(id);
    if (!body) return;
    body.replaceChildren(...list.map((item) => {
      const tr = document.createElement("tr");
      for (const [value, numeric] of cells(item)) {
        const td = document.createElement("td");
        td.textContent = value;
        if (numeric) td.className = "n";
        tr.appendChild(td);
      }
      return tr;
    }));
  }
  function draw(s) {
    set("events", fmt(s.events));
    set("rate", fmt(Math.round(s.orders_per_s)));
    set("budget", s.budget.budget ? `${fmt(s.budget.points)} of ${fmt(s.budget.budget)}`
                                  : `${fmt(s.budget.points)} (no budget)`);
    set("sold-out", `${fmt(s.regions_sold_out)} of ${fmt(s.regions)}`);
    set("dead", fmt(s.dead_letters.total));
    set("lag", s.stream_lag === null ? "no stream" : fmt(s.stream_lag));
    set("updated", new Date(s.now_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC");
    rows("outcomes", Object.entries(s.outcomes), ([k, v]) => [[k], [fmt(v), true]]);
    rows("minutes", s.minutes.slice(-10).reverse(), (m) => [[m.at], [fmt(m.placed), true], [fmt(m.awarded), true],
      [fmt(m.sold_out), true], [fmt(m.budget_exhausted), true], [fmt(m.other), true]]);
    rows("regions", s.top_regions, (r) => [[String(r.code)], [fmt(r.orders), true],
      [`${fmt(r.left)} of ${fmt(r.slots)}`, true], [r.sold_out ? "sold out" : ""]]);
    rows("dead-recent", s.dead_letters.recent, (d) => [[d.where], [d.reason]]);
    const bar = document.getElementById("mix");
    if (bar) {
      const total = Object.values(s.recent_outcomes).reduce((a, b) => a + b, 0) || 1;
      bar.replaceChildren(...Object.entries(s.recent_outcomes).map(([k, v]) => {
        const span = document.createElement("span");
        span.style.width = `${(100 * v) / total}%`;
        span.style.background = colors[k] || "#e08a2c";
        span.title = `${k}: ${fmt(v)}`;
        return span;
      }));
    }
  }
  async function poll() {
    try {
      const r = await fetch(url, {credentials: "same-origin", cache: "no-store"});
      if (r.ok) draw(await r.json());
      else set("updated", `summary answered ${r.status}`);
    } catch (e) {
      set("updated", `the daemon did not answer (${e})`);
    }
    setTimeout(poll, every);
  }
  poll();
})();
