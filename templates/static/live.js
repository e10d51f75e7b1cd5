// Live pages: listens to GET /api/stream and refreshes the list of this page
// from the server's own HTML, so the page looks exactly as a reload would.
// Without this script (or without EventSource) the pages work as they are.
(function () {
  "use strict";
  var hook = document.querySelector("[data-live-stream]");
  if (!hook || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var thread = hook.getAttribute("data-live-thread");
  var status = document.createElement("p");
  status.className = "sr";
  status.setAttribute("role", "status");
  document.body.appendChild(status);

  var waiting = false;
  var again = false;

  function list(doc) {
    return doc.querySelector("[data-live-list]");
  }

  function merge(html) {
    var fresh = list(new DOMParser().parseFromString(html, "text/html"));
    var here = list(document);
    if (!fresh) {
      return;
    }
    if (!here) {
      // An empty page got its first row: take the whole new list.
      var empty = document.querySelector(".empty");
      var node = document.importNode(fresh, true);
      if (empty) {
        empty.replaceWith(node);
      }
      return;
    }
    var added = 0;
    var previous = null;
    Array.prototype.forEach.call(fresh.children, function (item) {
      var key = item.getAttribute("data-entry");
      var mine = null;
      Array.prototype.forEach.call(here.children, function (old) {
        if (old.getAttribute("data-entry") === key) {
          mine = old;
        }
      });
      var node = mine;
      if (!mine) {
        node = document.importNode(item, true);
        added += 1;
      } else if (mine.innerHTML !== item.innerHTML || mine.className !== item.className) {
        node = document.importNode(item, true);
        mine.replaceWith(node);
      }
      // Keep the server's order (the inbox puts the newest thread first).
      var want = previous ? previous.nextElementSibling : here.firstElementChild;
      if (want !== node) {
        here.insertBefore(node, want);
      }
      previous = node;
    });
    // Rows the server no longer lists here (erased, or moved to an older page) go.
    while (previous && previous.nextElementSibling) {
      here.removeChild(previous.nextElementSibling);
    }
    if (added) {
      status.textContent = added === 1 ? "1 new message" : added + " new messages";
    }
  }

  function refresh() {
    if (waiting) {
      again = true;
      return;
    }
    waiting = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (resp) {
        return resp.ok ? resp.text() : null;
      })
      .then(function (html) {
        if (html) {
          merge(html);
        }
      })
      .catch(function () {})
      .then(function () {
        waiting = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  var source = new EventSource(hook.getAttribute("data-live-stream"));
  source.onmessage = function (message) {
    var event;
    try {
      event = JSON.parse(message.data);
    } catch (err) {
      return;
    }
    if (event.type === "reset") {
      refresh();
      return;
    }
    if (thread && event.thread !== thread) {
      return;
    }
    refresh();
  };
})();
