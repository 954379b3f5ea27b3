// The Live page's ages tick without a reload (a file of its own: the CSP allows no inline script).
(function () {
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-progress-since]").forEach(function (cell) {
      var s = Math.max(0, Math.round(now - Number(cell.getAttribute("data-progress-since"))));
      cell.textContent = s < 60 ? s + " s" : s < 3600 ? Math.floor(s / 60) + " min" : Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
    });
  }
  tick();
  setInterval(tick, 1000);
}());
