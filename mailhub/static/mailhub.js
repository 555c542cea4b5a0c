/* Behaviour every page shares. No inline scripts anywhere (the Content-Security-Policy forbids them):
   a form with data-confirm asks before it submits. */
document.addEventListener("submit", function (event) {
  const form = event.target;
  if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
});
