/* Charts of the console's analytics page (templates/console/analytics/overview.html).
   Reads the numbers from the JSON endpoint named by #analytics-charts[data-src] (a file and a fetch: the
   Content-Security-Policy allows no inline script) and draws them with Chart.js from static/vendor. */
(function () {
  "use strict";

  var PALETTE = ["#0969da", "#1a7f37", "#9a6700", "#cf222e", "#8250df", "#bf3989", "#57606a"];

  function line(canvas, labels, sets) {
    return new Chart(canvas, {
      type: "line",
      data: {
        labels: labels,
        datasets: sets.map(function (set, i) {
          return { label: set.label, data: set.data, borderColor: PALETTE[i % PALETTE.length],
                   backgroundColor: PALETTE[i % PALETTE.length], tension: 0.2, pointRadius: 2, spanGaps: true };
        })
      },
      options: { responsive: true, maintainAspectRatio: false, animation: false,
                 interaction: { mode: "index", intersect: false }, scales: { y: { beginAtZero: true } } }
    });
  }

  function bars(canvas, labels, sets, stacked) {
    return new Chart(canvas, {
      type: "bar",
      data: {
        labels: labels,
        datasets: sets.map(function (set, i) {
          return { label: set.label, data: set.data, backgroundColor: PALETTE[i % PALETTE.length] };
        })
      },
      options: { responsive: true, maintainAspectRatio: false, animation: false,
                 scales: { x: { stacked: !!stacked }, y: { stacked: !!stacked, beginAtZero: true } } }
    });
  }

  function draw(data, holder) {
    var s = data.series;
    // Labels come translated from the page (data-label-* attributes); the English name is the fallback.
    var t = function (key, fallback) { return holder.getAttribute("data-label-" + key) || fallback; };
    var el = function (id) { return document.getElementById(id); };
    line(el("chart-activity"), s.days, [
      { label: t("messages", "messages"), data: s.messages },
      { label: t("user-messages", "user messages"), data: s.user_messages },
      { label: t("sessions", "sessions"), data: s.sessions }
    ]);
    line(el("chart-users"), s.days, [{ label: t("active-users", "active users"), data: s.active_users }]);
    line(el("chart-cache"), s.days, [
      { label: t("llm-answers", "LLM answers"), data: s.llm_answers },
      { label: t("cache-hits", "cache hits"), data: s.cached_answers },
      { label: t("unanswered", "unanswered"), data: s.unanswered }
    ]);
    line(el("chart-latency"), s.days, [
      { label: "p50", data: s.latency_p50 },
      { label: "p95", data: s.latency_p95 }
    ]);
    bars(el("chart-tokens"), data.bots.map(function (b) { return b.bot; }), [
      { label: t("prompt-tokens", "prompt tokens"), data: data.bots.map(function (b) { return b.prompt_tokens; }) },
      { label: t("completion-tokens", "completion tokens"), data: data.bots.map(function (b) { return b.completion_tokens; }) }
    ], true);
    bars(el("chart-tools"), data.tools.map(function (t) { return t.tool; }), [
      { label: t("calls", "calls"), data: data.tools.map(function (t) { return t.calls; }) },
      { label: t("errors", "errors"), data: data.tools.map(function (t) { return t.errors; }) }
    ], false);
  }

  function start() {
    var holder = document.getElementById("analytics-charts");
    var status = document.getElementById("charts-status");
    if (!holder || typeof Chart === "undefined") { return; }
    fetch(holder.getAttribute("data-src"), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("the chart data could not be loaded (HTTP " + response.status + ")"); }
        return response.json();
      })
      .then(function (data) { draw(data, holder); holder.setAttribute("data-drawn", "true"); })
      .catch(function (error) { if (status) { status.textContent = String(error.message || error); } });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
