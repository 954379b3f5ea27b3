/* The task composer's device picker: search, pick by kind, online markers and a live count.
 * The <select multiple> stays the form's field (it works without this script); this adds a
 * search box and a kind filter that hide non-matching options, buttons that select or clear
 * what is shown, and a line counting the selection. Markup: the select carries
 * data-device-picker; each option data-kind and data-online ("1"/"0").
 */
(function () {
  "use strict";

  function make(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var key in attrs) { node.setAttribute(key, attrs[key]); }
    if (text) { node.textContent = text; }
    return node;
  }

  function setUp(select) {
    var options = Array.prototype.slice.call(select.options);
    var kinds = {};
    options.forEach(function (option) { kinds[option.getAttribute("data-kind") || ""] = true; });

    var bar = make("div", {"class": "pool-picker-bar"});
    var search = make("input", {type: "search", placeholder: "Search devices by name or id", "class": "pool-picker-search", "aria-label": "Search devices"});
    var kind = make("select", {"class": "pool-picker-kind", "aria-label": "Kind"});
    kind.appendChild(make("option", {value: "*"}, "every kind"));
    Object.keys(kinds).sort().forEach(function (name) { kind.appendChild(make("option", {value: name}, name || "(no kind)")); });
    var onlineOnly = make("input", {type: "checkbox", "class": "pool-picker-online"});
    var onlineLabel = make("label", {}, " online only");
    onlineLabel.insertBefore(onlineOnly, onlineLabel.firstChild);
    var pickShown = make("button", {type: "button", "class": "button pool-picker-select"}, "Select shown");
    var clear = make("button", {type: "button", "class": "button pool-picker-clear"}, "Clear");
    var count = make("div", {"class": "pool-picker-count", "aria-live": "polite"});
    [search, kind, onlineLabel, pickShown, clear].forEach(function (node) { bar.appendChild(node); bar.appendChild(document.createTextNode(" ")); });
    select.parentNode.insertBefore(bar, select);
    select.parentNode.insertBefore(count, select.nextSibling);

    function matches(option) {
      var wanted = search.value.trim().toLowerCase();
      if (wanted && option.textContent.toLowerCase().indexOf(wanted) < 0) { return false; }
      if (kind.value !== "*" && (option.getAttribute("data-kind") || "") !== kind.value) { return false; }
      if (onlineOnly.checked && option.getAttribute("data-online") !== "1") { return false; }
      return true;
    }

    function refresh() {
      var shown = 0, selected = 0, selectedOnline = 0;
      options.forEach(function (option) {
        var visible = matches(option);
        option.hidden = !visible;
        if (visible) { shown += 1; }
        if (option.selected) {
          selected += 1;
          if (option.getAttribute("data-online") === "1") { selectedOnline += 1; }
        }
      });
      count.textContent = selected + " selected (" + selectedOnline + " online) · " + shown + " of " + options.length + " shown";
      count.setAttribute("data-selected", String(selected));
      count.setAttribute("data-shown", String(shown));
    }

    search.addEventListener("input", refresh);
    kind.addEventListener("change", refresh);
    onlineOnly.addEventListener("change", refresh);
    select.addEventListener("change", refresh);
    pickShown.addEventListener("click", function () {
      options.forEach(function (option) { if (!option.hidden) { option.selected = true; } });
      refresh();
    });
    clear.addEventListener("click", function () {
      options.forEach(function (option) { option.selected = false; });
      refresh();
    });
    refresh();
  }

  function start() {
    document.querySelectorAll("select[data-device-picker]").forEach(setUp);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
