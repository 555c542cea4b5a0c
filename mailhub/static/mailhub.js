/* Behaviour every page shares. No inline scripts anywhere (the Content-Security-Policy forbids them):
   a form, or the button that submits it, with data-confirm asks before it submits. */
document.addEventListener("submit", function (event) {
  const form = event.target;
  const button = event.submitter;
  const question = (button && button.dataset.confirm) || (form.dataset && form.dataset.confirm);
  if (question && !window.confirm(question)) event.preventDefault();
});

/* "Sending… Undo": the Undo of a message being sent is offered for as long as Send waits, then goes away. */
document.querySelectorAll(".toast.undo-send").forEach(function (toast) {
  const match = /undo-seconds-(\d+)/.exec(toast.className);
  if (match) window.setTimeout(function () { toast.remove(); }, Number(match[1]) * 1000);
});

/* Times the user chose (a scheduled send) in the browser's own time zone, as they were picked. */
document.querySelectorAll("time.local-time").forEach(function (el) {
  const when = new Date(el.getAttribute("datetime"));
  if (isNaN(when)) return;
  el.textContent = new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
    dateStyle: "medium", timeStyle: "short",
  }).format(when);
});
