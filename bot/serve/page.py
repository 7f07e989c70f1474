"""The login page: static HTML and a small script that polls ``/login/status``.

The page holds no secret: the token comes from ``?auth=`` (then kept in the tab's
``sessionStorage`` and removed from the address bar) or is typed into the page, and every
data request sends it as ``Authorization: Bearer``.
"""

from __future__ import annotations

__all__ = ["LOGIN_PAGE"]

LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>ilinkbot login</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; background: #f4f5f7;
         color: #1f2328; margin: 0; display: flex; justify-content: center; }
  main { background: #fff; margin: 32px 12px; padding: 24px 28px; border-radius: 12px;
         box-shadow: 0 1px 4px rgba(0,0,0,.12); max-width: 420px; width: 100%;
         text-align: center; }
  h1 { font-size: 1.3rem; margin: 0 0 4px; }
  .sub { color: #656d76; font-size: .9rem; margin: 0 0 16px; }
  #status { font-size: 1.05rem; margin: 12px 0; min-height: 1.5em; }
  #qr { width: 264px; height: 264px; image-rendering: pixelated; border: 1px solid #d0d7de;
        border-radius: 8px; }
  #qrbox small { display: block; color: #656d76; margin-top: 6px; }
  #qrlink { word-break: break-all; font-size: .8rem; color: #0969da; }
  form { margin: 12px 0; }
  input { font-size: 1.2rem; padding: 6px 10px; width: 9em; text-align: center;
          border: 1px solid #d0d7de; border-radius: 6px; }
  button { font-size: 1rem; padding: 7px 16px; border: 0; border-radius: 6px;
           background: #1f883d; color: #fff; cursor: pointer; }
  button.secondary { background: #6e7781; }
  #done { color: #1a7f37; font-size: 1.1rem; }
  #done .check { font-size: 3rem; display: block; }
  .error { color: #cf222e; }
  [hidden] { display: none !important; }
</style>
</head>
<body data-state="loading">
<main>
  <h1>Log a WeChat bot in</h1>
  <p class="sub">ilinkbot &middot; the same login as <code>ilinkbot login</code></p>
  <form id="tokenform" hidden>
    <p>This page needs the service's token (<code>ilinkbot serve --show-token</code>).</p>
    <input id="token" type="password" autocomplete="off" placeholder="token" style="width:14em">
    <button type="submit">Open</button>
  </form>
  <div id="status" role="status" aria-live="polite">Loading&hellip;</div>
  <div id="qrbox" hidden>
    <img id="qr" alt="QR code to scan with WeChat">
    <small id="qrnum"></small>
    <a id="qrlink" target="_blank" rel="noopener noreferrer"></a>
  </div>
  <form id="codeform" hidden>
    <input id="code" inputmode="numeric" autocomplete="one-time-code" placeholder="number">
    <button type="submit" id="codebtn">Send</button>
  </form>
  <div id="done" hidden><span class="check">&#10004;</span><span id="donetext"></span></div>
  <p><button id="restart" class="secondary" hidden>Start again</button></p>
</main>
<script>
(function () {
  "use strict";
  var KEY = "ilinkbot-serve-token";
  var params = new URLSearchParams(location.search);
  var token = params.get("auth") || sessionStorage.getItem(KEY) || "";
  if (params.get("auth")) {
    sessionStorage.setItem(KEY, token);
    history.replaceState(null, "", location.pathname);
  }
  var $ = function (id) { return document.getElementById(id); };
  var timer = null;
  var lastVersion = -1;

  function api(method, path, body) {
    var opts = { method: method, headers: { "Authorization": "Bearer " + token },
                 cache: "no-store" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        j.httpStatus = r.status;
        return j;
      });
    });
  }

  function askToken(message) {
    document.body.dataset.state = "token";
    $("tokenform").hidden = false;
    $("status").textContent = message || "";
    $("status").className = message ? "error" : "";
  }

  function render(s) {
    if (s.httpStatus === 401) { stop(); askToken("That token was not accepted."); return; }
    if (s.httpStatus && s.httpStatus >= 400 && !s.state) {
      $("status").textContent = s.error || ("error " + s.httpStatus);
      $("status").className = "error";
      return;
    }
    document.body.dataset.state = s.state;
    $("tokenform").hidden = true;
    $("status").textContent = s.message;
    $("status").className = s.state === "failed" ? "error" : "";
    var showQr = !!s.qr_image;
    $("qrbox").hidden = !showQr;
    if (showQr && $("qr").getAttribute("src") !== s.qr_image) {
      $("qr").setAttribute("src", s.qr_image);
      $("qrlink").textContent = s.qr_url || "";
      $("qrlink").href = s.qr_url || "#";
    }
    $("qrnum").textContent = showQr ? ("QR code " + s.qr_number + " of " + s.qr_max) : "";
    var wasHidden = $("codeform").hidden;
    $("codeform").hidden = !s.needs_code;
    if (s.needs_code && (wasHidden || s.version !== lastVersion)) {
      if (s.state === "verify_code_wrong") { $("code").value = ""; }
      $("code").focus();
    }
    $("done").hidden = !s.done;
    if (s.done) {
      $("donetext").textContent = " Logged in: bot " + (s.account || "?") +
        (s.owner ? ", owner " + s.owner : "") + ".";
    }
    $("restart").hidden = s.state !== "failed" && s.state !== "idle";
    lastVersion = s.version;
    if (s.done || s.state === "failed") { stop(); }
  }

  function poll() {
    api("GET", "/login/status").then(function (s) {
      render(s);
      if (timer !== null) { timer = setTimeout(poll, 1000); }
    }).catch(function () {
      $("status").textContent = "The service does not answer; retrying\\u2026";
      if (timer !== null) { timer = setTimeout(poll, 2000); }
    });
  }

  function stop() { if (timer !== null) { clearTimeout(timer); timer = null; } }

  function start(restart) {
    stop();
    api("POST", "/login/start", restart ? { restart: true } : {}).then(function (s) {
      render(s);
      if (s.httpStatus === 200) { timer = setTimeout(poll, 500); }
    }).catch(function () {
      $("status").textContent = "The service does not answer.";
      $("status").className = "error";
    });
  }

  $("tokenform").addEventListener("submit", function (e) {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(KEY, token);
    start(false);
  });
  $("codeform").addEventListener("submit", function (e) {
    e.preventDefault();
    var code = $("code").value.replace(/\\s+/g, "");
    if (!code) { return; }
    $("codebtn").disabled = true;
    api("POST", "/login/code", { code: code }).then(function (s) {
      $("codebtn").disabled = false;
      if (s.state) { render(s); } else { $("status").textContent = s.error || "error"; }
    }).catch(function () { $("codebtn").disabled = false; });
  });
  $("restart").addEventListener("click", function () { start(true); });

  if (!token) { askToken(""); } else { start(false); }
})();
</script>
</body>
</html>
"""
