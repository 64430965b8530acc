// Live updates without a front-end build: poll /live every few seconds; when the version
// changes, fetch this page again and swap the regions marked data-live-region (never the
// form a person is filling in, so nothing typed is lost).
(function () {
  "use strict";
  var body = document.body;
  var version = body.dataset.liveVersion;
  if (!version) { return; }
  var scope = body.dataset.liveScope || "";
  var interval = parseInt(body.dataset.liveInterval || "2500", 10);
  var status = document.getElementById("live-status");
  var busy = false;
  var pageUrl = body.dataset.liveUrl || window.location.href;
  // After a refused form the address is the POST's; show (and refetch) the page's own.
  if (body.dataset.liveUrl && window.location.pathname !== body.dataset.liveUrl.split("?")[0]) {
    window.history.replaceState(null, "", body.dataset.liveUrl);
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    document.querySelectorAll("[data-live-region]").forEach(function (region) {
      var fresh = region.id ? doc.getElementById(region.id) : null;
      // A region someone is working in (focus inside, or a field changed) is left alone.
      if (fresh && !region.contains(document.activeElement) && !region.dataset.dirty) {
        region.replaceWith(document.importNode(fresh, true));
      }
    });
    if (status) {
      status.textContent = "Updated at " + new Date().toLocaleTimeString();
      status.classList.add("updated");
    }
  }

  function tick() {
    if (busy || document.hidden) { return; }
    busy = true;
    var url = "/live" + (scope ? "?patient_id=" + encodeURIComponent(scope) : "");
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || data.version === version) { return null; }
        version = data.version;
        body.dataset.liveVersion = version;
        return fetch(pageUrl, { credentials: "same-origin", cache: "no-store" })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) { if (html) { swap(html); } });
      })
      .catch(function () { /* offline for a moment: try again next tick */ })
      .then(function () { busy = false; });
  }
  document.addEventListener("input", function (event) {
    var region = event.target.closest && event.target.closest("[data-live-region]");
    if (region) { region.dataset.dirty = "1"; }
  });
  window.setInterval(tick, interval);
})();
