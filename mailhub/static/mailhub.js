/* Behaviour every page shares. No inline scripts anywhere (the Content-Security-Policy forbids them):
   a form, or the button that submits it, with data-confirm asks before it submits. */
document.addEventListener("submit", function (event) {
  const form = event.target;
  const button = event.submitter;
  const question = (button && button.dataset.confirm) || (form.dataset && form.dataset.confirm);
  if (question && !window.confirm(question)) event.preventDefault();
});
