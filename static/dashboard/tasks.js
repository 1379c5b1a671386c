/* Live task progress on the dashboard's tasks page.
 *
 * For each unfinished task row the server listed, open the tasks app's websocket
 * (/ws/tasks/<id>/, authenticated by the session cookie) and update the row from its
 * "task.snapshot" / "task.update" messages. A socket closes once its task is finished;
 * a dropped socket is retried a few times with a growing delay, then left alone (the page
 * still shows the last known state, and a reload shows the current one).
 */
(function () {
  "use strict";

  var MAX_RETRIES = 5;
  var FINISHED = { completed: true, failed: true };
  var GOOD = { completed: true }, BAD = { failed: true }, BUSY = { in_progress: true };
  var source = document.getElementById("follow-tasks");
  var ids = source ? JSON.parse(source.textContent) : [];
  var state = document.getElementById("live-state");
  var open = 0, finished = 0;

  function setState() {
    if (!state) return;
    if (open > 0) state.textContent = "live: " + open + " connected";
    else state.textContent = finished >= ids.length ? "all finished" : "not connected";
  }

  function badgeClass(status) {
    if (GOOD[status]) return "good";
    if (BAD[status]) return "bad";
    if (BUSY[status]) return "busy";
    return "idle";
  }

  function update(row, task) {
    var status = task.task_status || "";
    var progress = Math.max(0, Math.min(100, Number(task.progress) || 0));
    row.dataset.status = status;
    var badge = row.querySelector('[data-field="status"]');
    if (badge) {
      badge.textContent = status.replace(/_/g, " ");
      badge.className = "badge " + badgeClass(status);
    }
    var bar = row.querySelector('[data-field="bar"]');
    if (bar) {
      bar.style.width = progress + "%";
      bar.parentNode.setAttribute("aria-valuenow", String(progress));
    }
    var text = row.querySelector('[data-field="progress"]');
    if (text) text.textContent = progress + "%";
    var message = row.querySelector('[data-field="message"]');
    if (message) {
      // textContent, never innerHTML: messages and errors are data, not markup.
      message.textContent = task.error ? task.error : (task.progress_message || "");
      message.className = task.error ? "error" : "";
    }
  }

  function follow(id, attempt) {
    var row = document.getElementById("task-" + id);
    if (!row || FINISHED[row.dataset.status]) return;
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/ws/tasks/" + id + "/");
    var done = false, connected = false;
    socket.onopen = function () { connected = true; open += 1; attempt = 0; setState(); };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (!message || !message.task) return;
      update(row, message.task);
      if (FINISHED[message.task.task_status] && !done) {
        done = true;
        finished += 1;
        socket.close();
      }
    };
    socket.onclose = function (event) {
      if (connected) { connected = false; open -= 1; }
      setState();
      // 4401/4404: not signed in / not visible: retrying would not help.
      if (done || event.code === 4401 || event.code === 4404 || attempt >= MAX_RETRIES) return;
      window.setTimeout(function () { follow(id, attempt + 1); }, 1000 * Math.pow(2, attempt));
    };
  }

  ids.forEach(function (id) { follow(id, 0); });
  setState();
})();
