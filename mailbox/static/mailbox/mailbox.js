/* Mail UI behaviour: keyboard shortcuts, selection, iframe sizing, compose autosave and address suggestions.
   No inline scripts and no eval: everything hangs off data attributes. */
(function () {
  "use strict";

  function csrfToken() {
    const el = document.querySelector("input[name=csrfmiddlewaretoken]");
    return el ? el.value : "";
  }

  // --- Layout -------------------------------------------------------------------------------
  document.addEventListener("click", function (event) {
    const toggle = event.target.closest(".nav-toggle");
    if (toggle) {
      const app = toggle.closest(".mail-app");
      const open = app.classList.toggle("nav-open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    }
    const showRows = event.target.closest("[data-show-rows]");
    if (showRows) {
      showRows.dataset.showRows.split(" ").forEach(function (name) {
        const row = document.querySelector('[data-row="' + name + '"]');
        if (row) row.classList.add("shown");
      });
      showRows.hidden = true;
    }
  });
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-autosubmit]")) event.target.form.submit();
    if (event.target.id === "select-all") {
      document.querySelectorAll(".thread-list input[name=threads]").forEach(function (box) {
        box.checked = event.target.checked;
      });
    }
  });

  // --- Polling: do not replace the list while the user has a selection -------------------------
  document.addEventListener("htmx:beforeRequest", function (event) {
    const el = event.detail.elt;
    if (el && el.id === "thread-rows" && el.querySelector("input[name=threads]:checked")) event.preventDefault();
    if (el && el.id === "mail-nav" && el.closest(".mail-app.nav-open") && el.matches(":focus-within")) event.preventDefault();
  });

  // --- Message iframes: grow to their content (same origin, no scripts inside) -----------------
  function fitFrame(frame) {
    try {
      const doc = frame.contentDocument;
      if (doc && doc.body) frame.style.height = (Math.max(doc.body.scrollHeight, doc.body.offsetHeight) + 16) + "px";
    } catch (e) { /* not ready */ }
  }
  function watchFrames(root) {
    root.querySelectorAll("iframe.message-body").forEach(function (frame) {
      frame.addEventListener("load", function () { fitFrame(frame); setTimeout(function () { fitFrame(frame); }, 300); });
      fitFrame(frame);
    });
  }
  document.addEventListener("toggle", function (event) {
    if (event.target.matches && event.target.matches("details.message") && event.target.open) {
      event.target.querySelectorAll("iframe.message-body").forEach(fitFrame);
    }
  }, true);

  // --- Keyboard shortcuts ------------------------------------------------------------------------
  let cursor = -1;
  function rows() { return Array.from(document.querySelectorAll(".thread-row[data-thread]")); }
  function moveCursor(step) {
    const list = rows();
    if (!list.length) return false;
    cursor = Math.max(0, Math.min(list.length - 1, cursor + step));
    list.forEach(function (r, i) { r.classList.toggle("selected", i === cursor); });
    list[cursor].scrollIntoView({ block: "nearest" });
    return true;
  }
  function moveMessage(step) {
    const list = Array.from(document.querySelectorAll("details.message"));
    if (!list.length) return;
    let i = list.findIndex(function (d) { return d.classList.contains("focused"); });
    if (i < 0) i = list.length - 1;
    i = Math.max(0, Math.min(list.length - 1, i + step));
    list.forEach(function (d, k) { d.classList.toggle("focused", k === i); });
    list[i].open = true;
    list[i].scrollIntoView({ block: "nearest" });
  }
  function clickKey(key) {
    const el = document.querySelector('[data-key="' + key + '"]');
    if (el) { el.click(); return true; }
    return false;
  }
  function selectedOrCurrent() {
    const list = rows();
    if (document.querySelector(".thread-list input[name=threads]:checked")) return true;
    if (cursor >= 0 && list[cursor]) { list[cursor].querySelector("input[name=threads]").checked = true; return true; }
    return false;
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const t = event.target;
    if (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName)) {
      if (event.key === "Escape") t.blur();
      return;
    }
    const onList = rows().length > 0;
    const key = event.key;
    if (key === "/") { const s = document.getElementById("search-input"); if (s) { event.preventDefault(); s.focus(); s.select(); } return; }
    if (key === "?") { const h = document.getElementById("shortcut-help"); if (h) h.hidden = !h.hidden; return; }
    if (key === "c") { clickKey("c"); return; }
    if (key === "z") { clickKey("z"); return; }
    if (onList) {
      if (key === "j") { moveCursor(1); event.preventDefault(); return; }
      if (key === "k") { moveCursor(-1); event.preventDefault(); return; }
      if (key === "x" && cursor >= 0) { const box = rows()[cursor].querySelector("input[name=threads]"); box.checked = !box.checked; return; }
      if (key === "Enter" || key === "o") { const r = rows()[cursor]; if (r) r.querySelector("a.thread-link").click(); return; }
      if ((key === "e" || key === "#") && selectedOrCurrent()) { clickKey(key); return; }
      return;
    }
    if (key === "j") { moveMessage(1); return; }
    if (key === "k") { moveMessage(-1); return; }
    if (["r", "a", "f", "e", "#", "u"].includes(key)) clickKey(key);
  });

  // --- Compose: autosave, suggestions ---------------------------------------------------------------
  function initCompose(form) {
    const status = form.querySelector(".autosave-status");
    // The rich-text editor (editor.js) keeps the body_html textarea up to date and fires "input" as it changes.

    let timer = null, saving = false, dirty = false;
    function schedule() { dirty = true; clearTimeout(timer); timer = setTimeout(save, 1500); }
    function notSaved(why) {
      status.textContent = status.dataset.notSavedLabel + (why ? " " + why : "");
      status.classList.add("danger");
    }
    function save() {
      if (saving) { schedule(); return; }
      const data = new FormData(form);
      data.delete("files");
      data.set("action", "autosave");
      saving = true; dirty = false;
      // form.action would be the buttons named "action"; the attribute is the URL.
      fetch(form.getAttribute("action"), { method: "POST", body: data, headers: { "X-CSRFToken": csrfToken() }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (json) {
          if (json.saved) {
            if (form.getAttribute("action") !== json.url) {
              form.setAttribute("action", json.url);
              window.history.replaceState(null, "", json.url);
            }
            status.textContent = status.dataset.savedLabel + " " + json.saved_at;
            status.classList.remove("danger");
          } else {
            notSaved(Object.values(json.errors || {}).flat().map(function (e) { return e.message; }).join(" "));
          }
        })
        .catch(function () { notSaved(""); schedule(); })
        .finally(function () { saving = false; });
    }
    form.addEventListener("input", function (e) { if (e.target.type !== "file") schedule(); });
    form.addEventListener("submit", function () { clearTimeout(timer); });

    // Before sending with no subject, ask (as mail clients do); before uploading, check the size limit.
    form.addEventListener("submit", function (e) {
      const subject = form.querySelector("input[name=subject]");
      if (e.submitter && (e.submitter.value === "send" || e.submitter.value === "schedule") && subject && !subject.value.trim()
          && !window.confirm(form.dataset.noSubject)) e.preventDefault();
    });
    const files = form.querySelector("input[type=file][name=files]");
    const tooBig = form.querySelector(".attach-error");
    if (files && tooBig) files.addEventListener("change", function () {
      const adding = Array.from(files.files).reduce(function (n, f) { return n + f.size; }, 0);
      const over = Number(form.dataset.attachedBytes) + adding > Number(form.dataset.maxBytes);
      if (over) files.value = "";
      tooBig.hidden = !over;
    });

    // Address suggestions for the last address typed in To / Cc / Bcc.
    form.querySelectorAll("input[data-suggest]").forEach(function (input) {
      const list = input.parentElement.querySelector(".suggestions");
      let active = -1, results = [], pending = null;
      function lastToken() { const parts = input.value.split(/[,;]/); return parts[parts.length - 1].trim(); }
      function render() {
        list.innerHTML = "";
        results.forEach(function (p, i) {
          const li = document.createElement("li");
          li.setAttribute("role", "option");
          li.setAttribute("aria-selected", i === active ? "true" : "false");
          li.textContent = p.name ? p.name + " <" + p.email + ">" : p.email;
          li.addEventListener("mousedown", function (e) { e.preventDefault(); choose(i); });
          list.appendChild(li);
        });
        list.hidden = results.length === 0;
      }
      function choose(i) {
        const p = results[i];
        const parts = input.value.split(/[,;]/);
        parts[parts.length - 1] = " " + (p.name ? p.name.replace(/[",<>]/g, "") + " <" + p.email + ">" : p.email);
        input.value = parts.join(",").replace(/^\s+/, "") + ", ";
        results = []; render(); schedule();
      }
      input.addEventListener("input", function () {
        const q = lastToken();
        clearTimeout(pending);
        if (!q) { results = []; render(); return; }
        pending = setTimeout(function () {
          fetch(form.dataset.suggestUrl + "?q=" + encodeURIComponent(q), { credentials: "same-origin" })
            .then(function (r) { return r.json(); })
            .then(function (json) { results = json.results || []; active = -1; render(); });
        }, 150);
      });
      input.addEventListener("keydown", function (e) {
        if (list.hidden) return;
        if (e.key === "ArrowDown") { active = Math.min(results.length - 1, active + 1); render(); e.preventDefault(); }
        else if (e.key === "ArrowUp") { active = Math.max(0, active - 1); render(); e.preventDefault(); }
        else if (e.key === "Enter" && active >= 0) { choose(active); e.preventDefault(); }
        else if (e.key === "Escape") { results = []; render(); }
      });
      input.addEventListener("blur", function () { setTimeout(function () { results = []; render(); }, 100); });
    });
  }

  /* Schedule send: the time is picked in the browser's time zone, which the server is told; tomorrow 08:00
     is offered first, and nothing earlier than now. */
  function initSchedule(form) {
    const input = form.querySelector("#id_send_at");
    const zone = form.querySelector("#id_time_zone");
    if (!input || !zone) return;
    zone.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    const local = function (date) {
      const pad = function (n) { return String(n).padStart(2, "0"); };
      return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
        "T" + pad(date.getHours()) + ":" + pad(date.getMinutes());
    };
    input.min = local(new Date());
    if (!input.value) {
      const tomorrow = new Date();
      tomorrow.setDate(tomorrow.getDate() + 1);
      tomorrow.setHours(8, 0, 0, 0);
      input.value = local(tomorrow);
    }
  }

  /* The signature goes on when the message is sent; here its text is shown under the editor, and choosing
     another From picks that address's default signature. */
  function initSignature(form) {
    const select = form.querySelector("select[name=signature]");
    if (!select) return;
    const previews = form.querySelectorAll(".signature-preview");
    const show = function () {
      previews.forEach(function (p) { p.hidden = p.dataset.signature !== select.value; });
    };
    select.addEventListener("change", show);
    show();
    const from = form.querySelector("select[name=account]");
    const map = document.getElementById("signature-defaults");
    if (!from || !map) return;
    const defaults = JSON.parse(map.textContent);
    from.addEventListener("change", function () {
      const chosen = defaults[from.value];
      select.value = chosen ? String(chosen) : "";
      show();
      select.dispatchEvent(new Event("input", { bubbles: true }));  // autosave keeps the choice
    });
  }

  function init() {
    watchFrames(document);
    const form = document.getElementById("compose-form");
    if (form) { initCompose(form); initSchedule(form); initSignature(form); }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
