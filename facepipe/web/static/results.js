// Refresh the results table every 2 s while the page is visible. The server renders the rows
// (escaped by Jinja); the new rows replace the old ones only when their version changed.
"use strict";
(function () {
  const INTERVAL_MS = 2000;
  const main = document.getElementById("results");
  const status = document.getElementById("refresh-status");
  if (!main) {
    return;
  }
  const url = main.dataset.rowsUrl;
  let busy = false;

  function currentVersion() {
    const rows = main.querySelector(".rows");
    return rows ? rows.dataset.version : "";
  }

  async function refresh() {
    if (busy || document.visibilityState === "hidden") {
      return;
    }
    busy = true;
    try {
      const response = await fetch(url, { headers: { Accept: "text/html" }, cache: "no-store" });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
      const rows = parsed.querySelector(".rows");
      if (rows && rows.dataset.version !== currentVersion()) {
        main.replaceChildren(document.adoptNode(rows));
      }
      status.textContent = "Refreshes every 2 s; checked at " + new Date().toISOString().slice(11, 19) + " UTC.";
      status.classList.remove("stale");
    } catch (err) {
      status.textContent = "Could not refresh (" + err.message + "); trying again.";
      status.classList.add("stale");
    } finally {
      busy = false;
    }
  }

  setInterval(refresh, INTERVAL_MS);
  document.addEventListener("visibilitychange", refresh);
})();
