/* The operations dashboard (the admin index): draws each panel's charts with uPlot (vendored,
 * coordinator/vendor/uplot) from the values the page embeds (#ops-data: {now, charts: {chart id:
 * [{name, label}]}, hour: {name: [[minute, value, 1], ...]}, day: {name: [[bucket start, mean,
 * minutes], ...]}, day_bucket: seconds}; times in Unix seconds), and adds each new minute
 * as it arrives on the progress channel (progress/live.js dispatches `progress:event` on
 * #ops-dashboard; a minute's state is {minute, <series>: value, ..., overview}). An `overview`
 * (each minute, and every OPERATIONS_LIVE_SECONDS while the page is open: {cards: {key: {value,
 * note}}, attention: {panel: [{title, count, url}]}}) replaces the count cards' values
 * ([data-ops-card], [data-ops-note]) and each panel's needs-attention list ([data-ops-attention]),
 * computed by the same selector that rendered the page. No reload.
 * Each chart element carries data-points (how many values it shows) and data-total (their sum). */
(function () {
  "use strict";
  var MINUTE = 60;
  var COLORS = ["#2b6cb0", "#c53030", "#2f855a", "#b7791f"];
  var data, range = 3600, charts = [];

  function grid(series) {
    var step = range > 3600 ? data.day_bucket : MINUTE, source = range > 3600 ? data.day : data.hour;
    var end = Math.floor(data.now / step) * step, start = end - range, xs = [];
    for (var t = start; t <= end; t += step) { xs.push(t); }
    var columns = [xs], shown = 0, total = 0;
    series.forEach(function (s) {
      var byMinute = {};
      (source[s.name] || []).forEach(function (point) { byMinute[point[0]] = point[1]; });
      columns.push(xs.map(function (t) {
        if (Object.prototype.hasOwnProperty.call(byMinute, t)) { shown++; total += byMinute[t]; return byMinute[t]; }
        return null;
      }));
    });
    return {columns: columns, shown: shown, total: total};
  }

  function size(el) { return {width: Math.max(300, el.clientWidth || 340), height: 170}; }

  function build(el, series) {
    var drawn = grid(series);
    var options = {
      width: size(el).width,
      height: size(el).height,
      scales: {x: {time: true}, y: {range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; }}},
      axes: [{}, {size: 48}],
      series: [{}].concat(series.map(function (s, i) {
        return {label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, points: {size: 4}};
      }))
    };
    var plot = new uPlot(options, drawn.columns, el);
    mark(el, drawn);
    charts.push({el: el, series: series, plot: plot});
  }

  function mark(el, drawn) {
    el.setAttribute("data-points", String(drawn.shown));
    el.setAttribute("data-total", String(Math.round(drawn.total * 1000) / 1000));
  }

  function redraw() {
    charts.forEach(function (chart) {
      var drawn = grid(chart.series);
      chart.plot.setData(drawn.columns);
      mark(chart.el, drawn);
    });
  }

  function overview(seen) {
    var cards = seen.cards || {}, attention = seen.attention || {};
    document.querySelectorAll("[data-ops-card]").forEach(function (el) {
      var card = cards[el.getAttribute("data-ops-card")];
      if (card) { el.textContent = card.value; }
    });
    document.querySelectorAll("[data-ops-note]").forEach(function (el) {
      var card = cards[el.getAttribute("data-ops-note")];
      if (card) { el.textContent = card.note; }
    });
    document.querySelectorAll("[data-ops-attention]").forEach(function (list) {
      var items = attention[list.getAttribute("data-ops-attention")];
      if (!items) { return; }  // a panel this overview does not speak of keeps what it shows
      while (list.firstChild) { list.removeChild(list.firstChild); }
      items.forEach(function (item) {
        var li = document.createElement("li"), a = document.createElement("a"), strong = document.createElement("strong");
        a.href = item.url;
        strong.textContent = String(item.count);
        a.appendChild(strong);
        a.appendChild(document.createTextNode(" " + item.title));
        li.appendChild(a);
        list.appendChild(li);
      });
      list.hidden = items.length === 0;
    });
  }

  function receive(domEvent) {
    var state = (domEvent.detail && domEvent.detail.state) || {};
    if (state.overview && typeof state.overview === "object") { overview(state.overview); }
    if (typeof state.minute !== "number") { return; }
    var bucket = Math.floor(state.minute / data.day_bucket) * data.day_bucket;
    Object.keys(state).forEach(function (name) {
      if (name === "minute" || typeof state[name] !== "number") { return; }
      var value = state[name];
      var hour = data.hour[name] || (data.hour[name] = []), last = hour[hour.length - 1];
      if (last && last[0] === state.minute) { last[1] = value; return; }  // a minute recorded again
      hour.push([state.minute, value, 1]);
      var day = data.day[name] || (data.day[name] = []), lastBucket = day[day.length - 1];
      if (lastBucket && lastBucket[0] === bucket) {
        lastBucket[1] = (lastBucket[1] * lastBucket[2] + value) / (lastBucket[2] + 1);  // the bucket's mean
        lastBucket[2] += 1;
      } else {
        day.push([bucket, value, 1]);
      }
    });
    data.now = Math.max(data.now, state.minute + MINUTE);
    redraw();
  }

  function choose(button) {
    range = Number(button.getAttribute("data-range"));
    document.querySelectorAll(".ops-range [data-range]").forEach(function (b) {
      b.setAttribute("aria-pressed", b === button ? "true" : "false");
    });
    redraw();
  }

  function start() {
    var source = document.getElementById("ops-data"), root = document.getElementById("ops-dashboard");
    if (!source || !root || typeof uPlot === "undefined") { return; }
    data = JSON.parse(source.textContent);
    document.querySelectorAll(".ops-chart").forEach(function (el) {
      if (data.charts[el.id]) { build(el, data.charts[el.id]); }
    });
    root.addEventListener("progress:event", receive);
    document.querySelectorAll(".ops-range [data-range]").forEach(function (button) {
      button.addEventListener("click", function () { choose(button); });
    });
    window.addEventListener("resize", function () {
      charts.forEach(function (chart) { chart.plot.setSize(size(chart.el)); });
    });
    document.documentElement.setAttribute("data-ops-charts", String(charts.length));
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
