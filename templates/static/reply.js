// The inbox reply box, enhanced: drop files onto it, see what the send core will do with
// them as soon as they are chosen, and send once however often the button is pressed.
// Without this script the form still posts and the server answers with the thread.
(function () {
  "use strict";
  var form = document.querySelector("form.reply-form");
  if (!form) { return; }
  var input = form.querySelector('input[type="file"]');
  var zone = form.querySelector(".dropzone");
  var out = form.querySelector(".reply-preview");
  var hint = form.querySelector(".drop-hint");
  var fieldset = form.querySelector("fieldset");
  var csrf = form.querySelector('input[name="csrf_token"]').value;
  var pending = null;

  function show(items, refused) {
    out.textContent = "";
    var list = document.createElement("ul");
    items.forEach(function (text) {
      var li = document.createElement("li");
      li.textContent = text;
      if (refused) { li.className = "refused"; }
      list.appendChild(li);
    });
    out.appendChild(list);
  }

  function preview() {
    var stored = form.querySelectorAll('input[name="stored"]:checked');
    var count = input.files.length + stored.length;
    if (!count) { out.textContent = ""; return; }
    var data = new FormData();
    for (var i = 0; i < input.files.length; i++) { data.append("files", input.files[i]); }
    for (var j = 0; j < stored.length; j++) { data.append("stored", stored[j].value); }
    if (pending) { pending.abort(); }
    pending = new AbortController();
    show(["Checking " + count + " file(s)…"], false);
    fetch(form.getAttribute("data-preview"), {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
      signal: pending.signal
    }).then(function (resp) {
      return resp.json().then(function (body) { return { ok: resp.ok, body: body }; });
    }).then(function (answer) {
      if (answer.ok) {
        show(answer.body.files.map(function (f) { return f.summary; }), false);
      } else {
        show(["Cannot be sent: " + (answer.body.message || answer.body.error)], true);
      }
    }).catch(function (err) {
      if (err.name !== "AbortError") { show(["Preview unavailable: " + err.message], true); }
    });
  }

  input.addEventListener("change", preview);
  form.querySelectorAll('input[name="stored"]').forEach(function (box) {
    box.addEventListener("change", preview);
  });

  if (zone && !fieldset.disabled) {
    if (hint) { hint.hidden = false; }
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      var all = new DataTransfer();
      var i;
      for (i = 0; i < input.files.length; i++) { all.items.add(input.files[i]); }
      for (i = 0; i < e.dataTransfer.files.length; i++) { all.items.add(e.dataTransfer.files[i]); }
      input.files = all.files;
      preview();
    });
  }

  // The server sends a form's key once; disabling the button after the first press
  // only spares the second request.
  form.addEventListener("submit", function () {
    var button = form.querySelector('button[type="submit"]');
    window.setTimeout(function () { button.disabled = true; button.textContent = "Sending…"; }, 0);
  });
}());
