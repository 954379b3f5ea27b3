// Choosing a job type reloads the form for it (a file of its own: the CSP allows no inline handler).
document.querySelectorAll("select[data-submit-on-change]").forEach(function (select) {
  select.addEventListener("change", function () { select.form.submit(); });
});
