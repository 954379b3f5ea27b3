/* Live admin pages (contract 2): keeps every element carrying data-progress-topic="<topic>"
 * up to date from the WebSocket /ws/progress/ (session cookie auth).
 *
 * For each event on a topic, inside each element with that data-progress-topic:
 *  - [data-progress-field="<key>"] (descendants, or the element itself) get textContent =
 *    state[key] (the event text when key is "text"); <progress>/<meter>/<input> get .value;
 *  - [data-progress-width="<key>"] get style.width = state[key] + "%";
 *  - [data-progress-state="<key>"] get data-state = state[key] (for colour by state in CSS);
 *  - the element gets data-progress-kind = the event kind;
 *  - with data-progress-reload-fragment, the page is fetched again and the element's innerHTML
 *    replaced by that of the element with the same id in the fetched page. With
 *    data-progress-reload-fragment="new" (a list whose rows are topic elements that change in
 *    place) it is fetched only for a topic it has no row for yet (once per topic), or when a
 *    topic it shows ends; data-progress-kinds="stream job ..." limits that to those prefixes.
 * Fields inside a nested element with its own data-progress-topic belong to that element.
 *
 * A replay never overrides a newer server-rendered state: <meta name="progress-covered"> carries
 * the id of the newest event stored when the page was rendered (read before its rows); a replayed
 * event (`snapshot`, sent on subscribe) is applied only if its id is larger than that. A live
 * event is applied if its id is larger than the last one the element applied (data-progress-seen):
 * it was broadcast after its commit, so it is never older than the page (on PostgreSQL ids are
 * not committed in id order, so a live event may carry a smaller id than the page's). A fetched
 * fragment brings its own page's id along.
 *
 * Time-based states are recomputed as time passes: an element with data-live-until="<epoch s>"
 * gets data-live-expired once that moment is past, and its owned [data-live-expired-text]
 * elements get that text ("offline", "stale", ...). With data-live-until-field="<key>", an
 * event's state[key] (epoch seconds) moves the moment and the element is live again.
 * data-progress-topic="*" receives every event the reader may see (admins: all).
 * Each element also gets a `progress:event` DOM event (detail: the event) for every event applied.
 * Reconnects by itself with exponential backoff; <html data-progress-live="connected|closed">
 * tells pages (and tests) the connection state. The WebSocket URL can be overridden with
 * <meta name="progress-ws-url" content="wss://host/ws/progress/">.
 */
(function () {
  "use strict";
  if (window.progressLive) { return; }

  var MIN_BACKOFF = 500, MAX_BACKOFF = 15000, FRAGMENT_INTERVAL = 300, EXPIRY_TICK = 1000;
  var socket = null, backoff = MIN_BACKOFF, subscribed = {}, lastEventId = 0, rescanTimer = null;
  var fragments = {};  // element id -> {busy: bool, again: bool}

  function coveredId(doc) {
    var meta = doc.querySelector('meta[name="progress-covered"]');
    var value = meta ? Number(meta.content) : 0;
    return isNaN(value) ? 0 : value;
  }

  var pageCovered = 0;

  function ownSeenId(root) {
    var own = Number(root.getAttribute("data-progress-seen") || 0);
    return isNaN(own) ? 0 : own;
  }

  function seenId(root) {
    // for replays: what the element applied, and what its page (or fetched fragment) covered
    var fragment = Number(root.getAttribute("data-progress-covered") || 0);
    return Math.max(ownSeenId(root), pageCovered, isNaN(fragment) ? 0 : fragment);
  }

  function expire(root, now) {
    var until = Number(root.getAttribute("data-live-until"));
    if (isNaN(until)) { return; }
    if (now >= until) {
      if (!root.hasAttribute("data-live-expired")) {
        root.setAttribute("data-live-expired", "");
        owned(root, "[data-live-expired-text]").forEach(function (node) {
          node.textContent = node.getAttribute("data-live-expired-text");
        });
      }
    } else if (root.hasAttribute("data-live-expired")) {
      root.removeAttribute("data-live-expired");
    }
  }

  function expireAll() {
    var now = Date.now() / 1000, all = document.querySelectorAll("[data-live-until]");
    for (var i = 0; i < all.length; i++) { expire(all[i], now); }
  }

  function socketUrl() {
    var meta = document.querySelector('meta[name="progress-ws-url"]');
    if (meta && meta.content) { return meta.content; }
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/progress/";
  }

  function topicElements(topic) {
    // data-progress-topic="*" follows every event the reader may see (e.g. the Live page's list)
    var found = [], all = document.querySelectorAll("[data-progress-topic]");
    for (var i = 0; i < all.length; i++) {
      var wanted = all[i].getAttribute("data-progress-topic");
      if (wanted === topic || wanted === "*") { found.push(all[i]); }
    }
    return found;
  }

  function pageTopics() {
    var topics = {}, all = document.querySelectorAll("[data-progress-topic]");
    for (var i = 0; i < all.length; i++) {
      var topic = all[i].getAttribute("data-progress-topic");
      if (topic) { topics[topic] = true; }
    }
    return topics;
  }

  function owned(root, selector) {
    // root itself (if it matches) and its descendants that are not inside a nested topic element
    var result = [], nodes = root.querySelectorAll(selector);
    if (root.matches(selector)) { result.push(root); }
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].closest("[data-progress-topic]") === root) { result.push(nodes[i]); }
    }
    return result;
  }

  function setField(node, value) {
    var tag = node.tagName;
    if (tag === "PROGRESS" || tag === "METER") {
      var number = Number(value);
      if (!isNaN(number)) { node.value = number; }
    } else if (tag === "INPUT" || tag === "TEXTAREA") {
      node.value = value === null ? "" : String(value);
    } else {
      node.textContent = value === null ? "" : String(value);
    }
  }

  function apply(root, event) {
    var state = event.state || {};
    owned(root, "[data-progress-field]").forEach(function (node) {
      var key = node.getAttribute("data-progress-field");
      if (key === "text") {
        // an `end` with an empty text means "keep showing the last message" (seed semantics)
        if (typeof event.text !== "string" || (event.kind === "end" && event.text === "")) { return; }
        setField(node, event.text);
      } else if (Object.prototype.hasOwnProperty.call(state, key)) {
        setField(node, state[key]);
      }
    });
    owned(root, "[data-progress-width]").forEach(function (node) {
      var key = node.getAttribute("data-progress-width");
      if (Object.prototype.hasOwnProperty.call(state, key) && state[key] !== null && !isNaN(Number(state[key]))) {
        node.style.width = Number(state[key]) + "%";
      }
    });
    owned(root, "[data-progress-state]").forEach(function (node) {
      var key = node.getAttribute("data-progress-state");
      if (Object.prototype.hasOwnProperty.call(state, key) && state[key] !== null) { node.setAttribute("data-state", String(state[key])); }
    });
    var untilKey = root.getAttribute("data-live-until-field");
    if (untilKey && Object.prototype.hasOwnProperty.call(state, untilKey) && !isNaN(Number(state[untilKey]))) {
      root.setAttribute("data-live-until", String(Number(state[untilKey])));
      root.removeAttribute("data-live-expired");
      expire(root, Date.now() / 1000);
    }
    root.setAttribute("data-progress-kind", event.kind);
    // For a page's own script that draws more than fields (the operations dashboard's charts).
    root.dispatchEvent(new CustomEvent("progress:event", {detail: event}));
    if (root.hasAttribute("data-progress-reload-fragment") && wantsFragment(root, event)) { reloadFragment(root); }
  }

  var askedFor = {};  // topic -> true: a list was fetched again because of it once already

  function wantsFragment(root, event) {
    if (root.getAttribute("data-progress-reload-fragment") !== "new") { return true; }
    var kinds = root.getAttribute("data-progress-kinds");
    var prefix = String(event.topic).split(":")[0];
    if (kinds !== null && kinds.split(" ").indexOf(prefix) < 0) { return false; }
    var shown = false, rows = root.querySelectorAll("[data-progress-topic]");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute("data-progress-topic") === event.topic) { shown = true; break; }
    }
    if (shown) { return event.kind === "end"; }
    var key = root.id + "|" + event.topic;
    if (askedFor[key] && event.kind !== "new") { return false; }
    askedFor[key] = true;
    return true;
  }

  function receive(event) {
    topicElements(event.topic).forEach(function (root) {
      if (event.id) {
        // a replay the page already shows, or an event older than one this element applied
        if (event.id <= (event.snapshot ? seenId(root) : ownSeenId(root))) { return; }
        root.setAttribute("data-progress-seen", String(event.id));
      }
      apply(root, event);
    });
  }

  function reloadFragment(root) {
    var id = root.id;
    if (!id) { return; }
    var entry = fragments[id] || (fragments[id] = {busy: false, again: false, last: 0});
    if (entry.busy) { entry.again = true; return; }  // coalesce bursts into one more fetch
    entry.busy = true;
    var wait = Math.max(0, entry.last + FRAGMENT_INTERVAL - Date.now());  // at most one fetch per interval
    setTimeout(function () { entry.last = Date.now(); fetchFragment(id, entry); }, wait);
  }

  function fetchFragment(id, entry) {
    fetch(location.href, {credentials: "same-origin", headers: {"X-Progress-Fragment": id}})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById(id), current = document.getElementById(id);
        if (fresh && current) {
          var covered = String(coveredId(doc));
          current.innerHTML = fresh.innerHTML;
          current.setAttribute("data-progress-covered", covered);
          current.querySelectorAll("[data-progress-topic]").forEach(function (node) {
            node.setAttribute("data-progress-covered", covered);
          });
          expireAll();
          scheduleRescan();
        }
      })
      .catch(function () { /* the next event or reconnect tries again */ })
      .then(function () {
        entry.busy = false;
        if (entry.again) { entry.again = false; var el = document.getElementById(id); if (el) { reloadFragment(el); } }
      });
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(message)); return true; }
    return false;
  }

  function sync() {
    var wanted = pageTopics(), add = [], remove = [], topic;
    for (topic in wanted) { if (!subscribed[topic]) { add.push(topic); } }
    for (topic in subscribed) { if (!wanted[topic]) { remove.push(topic); } }
    if (add.length && send({type: "subscribe", topics: add})) { add.forEach(function (t) { subscribed[t] = true; }); }
    if (remove.length && send({type: "unsubscribe", topics: remove})) { remove.forEach(function (t) { delete subscribed[t]; }); }
  }

  function scheduleRescan() {
    if (rescanTimer) { return; }
    rescanTimer = setTimeout(function () { rescanTimer = null; sync(); }, 50);
  }

  function setStatus(status) { document.documentElement.setAttribute("data-progress-live", status); }

  function connect() {
    var ws;
    try { ws = new WebSocket(socketUrl()); } catch (e) { retry(); return; }
    socket = ws;
    ws.onopen = function () { backoff = MIN_BACKOFF; subscribed = {}; setStatus("connected"); sync(); };
    ws.onmessage = function (message) {
      var data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      if (!data || data.type !== "event") { return; }
      if (data.id && data.id > lastEventId) { lastEventId = data.id; }
      receive(data);
    };
    ws.onclose = function () {
      if (socket !== ws) { return; }
      socket = null;
      setStatus("closed");
      retry();
    };
  }

  function retry() {
    var delay = backoff + Math.random() * backoff / 2;
    backoff = Math.min(backoff * 2, MAX_BACKOFF);
    setTimeout(connect, delay);
  }

  function start() {
    pageCovered = coveredId(document);
    expireAll();
    setInterval(expireAll, EXPIRY_TICK);
    new MutationObserver(function (mutations) {
      for (var i = 0; i < mutations.length; i++) {
        if (mutations[i].addedNodes.length || mutations[i].type === "attributes") { scheduleRescan(); return; }
      }
    }).observe(document.body, {childList: true, subtree: true, attributes: true, attributeFilter: ["data-progress-topic"]});
    setStatus("connecting");
    connect();
  }

  window.progressLive = {
    lastEventId: function () { return lastEventId; },
    rescan: scheduleRescan,
    apply: apply
  };
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
