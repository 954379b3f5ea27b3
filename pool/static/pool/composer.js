/* The task composer's device picker: search, pick by kind, online markers and a live count.
 * The <select multiple> stays the form's field (it works without this script); this adds a
 * search box and a kind filter that hide non-matching options, buttons that select or clear
 * what is shown, and a line counting the selection. Markup: the select carries
 * data-device-picker; each option data-kind and data-online ("1"/"0").
 *
 * And the live count of matching devices: whenever the target changes (its kind, the tag typed,
 * the group, the devices picked), the `to` it makes is sent to the staff-only JSON view named by
 * the target radios' data-count-url, which resolves it as sending would, and the answer is shown
 * under the target (".pool-target-count", its data-count the number).
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
    // Picking by button changes the selection without a change event: announce it (the live count listens).
    function changed() { select.dispatchEvent(new Event("change")); }
    pickShown.addEventListener("click", function () {
      options.forEach(function (option) { if (!option.hidden) { option.selected = true; } });
      changed();
    });
    clear.addEventListener("click", function () {
      options.forEach(function (option) { option.selected = false; });
      changed();
    });
    refresh();
  }

  function setUpCount(first) {
    var form = first.form;
    var url = first.getAttribute("data-count-url");
    var radios = form.querySelectorAll('input[name="target"]');
    var tag = form.querySelector('[name="tag"]');
    var group = form.querySelector('[name="group"]');
    var devices = form.querySelector('select[name="devices"]');
    var line = make("p", {"class": "pool-target-count help", "aria-live": "polite"});
    var list = document.getElementById("id_target") || radios[radios.length - 1].parentNode;
    list.parentNode.insertBefore(line, list.nextSibling);
    var asked = 0, timer = null;

    function targetString() {
      var chosen = form.querySelector('input[name="target"]:checked');
      var kind = chosen ? chosen.value : "";
      if (kind === "all") { return "device:*"; }
      if (kind === "tag") { return tag && tag.value.trim() ? "device:tag:" + tag.value.trim() : ""; }
      if (kind === "group") { return group && group.value ? "device:group:" + group.value : ""; }
      if (!devices) { return ""; }
      var ids = Array.prototype.filter.call(devices.options, function (o) { return o.selected; })
        .map(function (o) { return o.value; });
      if (!ids.length) { return ""; }
      return ids.length === 1 ? "device:" + ids[0] : "device:[" + ids.join(",") + "]";
    }

    function show(text, count) {
      line.textContent = text;
      if (count === null) { line.removeAttribute("data-count"); } else { line.setAttribute("data-count", String(count)); }
    }

    function ask() {
      var to = targetString();
      var mine = ++asked;  // only the answer to the latest question is shown
      if (!to) { show("Choose a target to see how many devices it reaches.", null); return; }
      show("Counting the devices of " + to + "…", null);
      fetch(url + "?to=" + encodeURIComponent(to), {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then(function (response) { return response.json().then(function (body) { return {ok: response.ok, body: body}; }); })
        .then(function (answer) {
          if (mine !== asked) { return; }
          if (!answer.ok) { show(answer.body.message || "This target is not valid.", null); return; }
          var n = answer.body.count;
          show(n + (n === 1 ? " device matches " : " devices match ") + answer.body.to + " now.", n);
        })
        .catch(function () { if (mine === asked) { show("Could not count the matching devices.", null); } });
    }

    function soon() {  // typing a tag asks once it pauses, not at every key
      clearTimeout(timer);
      timer = setTimeout(ask, 250);
    }

    Array.prototype.forEach.call(radios, function (radio) { radio.addEventListener("change", ask); });
    if (tag) { tag.addEventListener("input", soon); }
    if (group) { group.addEventListener("change", ask); }
    if (devices) { devices.addEventListener("change", soon); }
    ask();
  }

  function start() {
    document.querySelectorAll("select[data-device-picker]").forEach(setUp);
    var counted = document.querySelector('input[name="target"][data-count-url]');
    if (counted) { setUpCount(counted); }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
