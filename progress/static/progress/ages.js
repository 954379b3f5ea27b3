// Times and ages tick without a reload (a file of its own: the CSP allows no inline script).
//  - [data-progress-since="<epoch s>"]: an age, "42 s", "7 min", "3 h 5 min" (the Live page, running work);
//  - [data-relative-time="<epoch s>"]: a moment, "3 min ago" or "in 2 h" (coordinator/admin_display.py).
(function () {
  if (window.coordinatorAges) { return; }
  window.coordinatorAges = true;
  function human(seconds) {
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) { return s + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min"; }
    if (s < 86400) { return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"; }
    return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  }
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-progress-since]").forEach(function (cell) {
      cell.textContent = human(now - Number(cell.getAttribute("data-progress-since")));
    });
    document.querySelectorAll("[data-relative-time]").forEach(function (cell) {
      var delta = Number(cell.getAttribute("data-relative-time")) - now;
      cell.textContent = delta > 0 ? "in " + human(delta) : human(-delta) + " ago";
    });
  }
  function start() { tick(); setInterval(tick, 1000); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
