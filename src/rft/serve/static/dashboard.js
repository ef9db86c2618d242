/* rft dashboard: the job page's live curves (uPlot, polled from curves.json) and events, and the sample
   browser's client-side filters. No inline scripts: the pages' Content-Security-Policy forbids them. */
"use strict";

(function () {
  var COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#0b7285", "#5c940d", "#e67700"];

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return "-";
    s = Math.round(s);
    if (s >= 3600) return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    if (s >= 60) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return s + "s";
  }

  // ------------------------------------------------------------------------------------ curves
  function setupCharts(root) {
    var url = root.getAttribute("data-url");
    var pollMs = parseInt(root.getAttribute("data-poll-ms"), 10) || 3000;
    var charts = {};      // title -> {plot, keys}
    var lastSeq = 0;
    var eventsList = document.getElementById("events");
    if (eventsList) lastSeq = parseInt(eventsList.getAttribute("data-last-seq"), 10) || 0;

    function width() {
      var w = root.clientWidth;
      var cols = Math.max(1, Math.floor(w / 440));
      return Math.max(300, Math.floor(w / cols) - 30);
    }

    function makeChart(title, xs, series, opts) {
      var box = el("div", {"class": "chart", "data-title": title});
      box.appendChild(el("h3", {}, title));
      root.appendChild(box);
      var o = {
        width: width(), height: 200,
        scales: {x: {time: false}},
        // steps are whole numbers: no 1.2, 1.4 ... ticks
        axes: [{label: "step", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]}, {size: 56}],
        series: [{label: "step"}].concat(series.map(function (s, i) {
          return Object.assign({label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5,
                                points: {show: xs.length < 40}, spanGaps: false}, s.opts || {});
        })),
        legend: {live: true}
      };
      if (opts && opts.bands) o.bands = opts.bands;
      var data = [xs].concat(series.map(function (s) { return s.values; }));
      return new uPlot(o, data, box);
    }

    function draw(d) {
      var wanted = [];
      d.charts.forEach(function (c) {
        var keys = c.series.map(function (s) { return s.key; });
        wanted.push({title: c.title, keys: keys, xs: d.steps, series: c.series.map(function (s) {
          return {label: s.label, values: d.series[s.key] || d.steps.map(function () { return null; })};
        })});
      });
      var v = d.validation || [];
      wanted.unshift({title: "validation accuracy (95% CI band)", keys: ["acc", "hi", "lo"],
                      xs: v.map(function (p) { return p.step; }), bands: [{series: [2, 3], fill: "rgba(47,111,222,0.15)"}],
                      series: [
                        {label: "accuracy", values: v.map(function (p) { return p.accuracy; }), opts: {points: {show: true}}},
                        {label: "95% CI high", values: v.map(function (p) { return p.high; }), opts: {stroke: "rgba(47,111,222,0.4)", dash: [4, 4]}},
                        {label: "95% CI low", values: v.map(function (p) { return p.low; }), opts: {stroke: "rgba(47,111,222,0.4)", dash: [4, 4]}}
                      ]});
      wanted.forEach(function (w) {
        var have = charts[w.title];
        var sig = w.keys.join("|");
        var data = [w.xs].concat(w.series.map(function (s) { return s.values; }));
        if (have && have.sig === sig) {
          have.plot.setData(data);
          return;
        }
        if (have) { have.plot.destroy(); have.plot.root.parentNode.remove(); }
        charts[w.title] = {sig: sig, plot: makeChart(w.title, w.xs, w.series, {bands: w.bands})};
      });
      var note = document.getElementById("charts-note");
      if (note) note.textContent = d.steps.length ? "" : "No training steps logged yet.";
    }

    function updateJob(j) {
      var s = document.getElementById("job-status");
      if (s) { s.textContent = j.status; s.className = "status s-" + j.status; }
      var p = document.getElementById("job-progress");
      if (p) p.textContent = j.step + "/" + (j.total_steps || "?");
      var e = document.getElementById("job-eta");
      if (e) e.textContent = fmtDuration(j.eta_s);
    }

    function addEvents(evs) {
      if (!eventsList) return;
      evs.forEach(function (ev) {
        if (ev.seq <= lastSeq) return;
        lastSeq = ev.seq;
        var li = el("li", {"class": "lvl-" + ev.level});
        li.appendChild(el("span", {"class": "dim"}, ev.when));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(el("span", {"class": "lvl"}, ev.level));
        li.appendChild(document.createTextNode(" " + ev.message));
        eventsList.appendChild(li);
      });
    }

    var active = true;
    function poll() {
      fetch(url + "?after=" + lastSeq, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (d) {
          draw(d); updateJob(d.job); addEvents(d.events);
          root.setAttribute("data-drawn", "1");
          active = ["validating_files", "queued", "running"].indexOf(d.job.status) >= 0;
        })
        .catch(function (err) {
          var note = document.getElementById("charts-note");
          if (note) note.textContent = "could not load the curves: " + err.message;
        })
        .then(function () { if (active) setTimeout(poll, pollMs); });
    }
    poll();
    window.addEventListener("resize", function () {
      Object.keys(charts).forEach(function (t) { charts[t].plot.setSize({width: width(), height: 200}); });
    });
  }

  // ----------------------------------------------------------------------------- sample filters
  function setupFilters() {
    var table = document.getElementById("samples");
    if (!table) return;
    var fmin = document.getElementById("f-min"), fmax = document.getElementById("f-max");
    var ferr = document.getElementById("f-error"), count = document.getElementById("f-count");
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    function apply() {
      var lo = fmin.value === "" ? null : parseFloat(fmin.value);
      var hi = fmax.value === "" ? null : parseFloat(fmax.value);
      var mode = ferr.value, shown = 0;
      rows.forEach(function (tr) {
        var r = tr.getAttribute("data-reward"), e = tr.getAttribute("data-error");
        var reward = r === "" ? null : parseFloat(r);
        var ok = true;
        if (lo !== null && (reward === null || reward < lo)) ok = false;
        if (hi !== null && (reward === null || reward > hi)) ok = false;
        if (mode === "none" && e) ok = false;
        if (mode === "some" && !e) ok = false;
        if (mode.indexOf("kind:") === 0 && e !== mode.slice(5)) ok = false;
        tr.classList.toggle("hidden", !ok);
        if (ok) shown += 1;
      });
      count.textContent = shown + " of " + rows.length + " samples";
    }
    [fmin, fmax, ferr].forEach(function (x) { x.addEventListener("input", apply); x.addEventListener("change", apply); });
    var sel = document.getElementById("step-select");
    if (sel) sel.addEventListener("change", function () { sel.form.submit(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var charts = document.getElementById("charts");
    if (charts && window.uPlot) setupCharts(charts);
    setupFilters();
  });
})();
