/* The console's only script (templates/console). No inline handlers anywhere: the CSP forbids them.

   - Forms marked data-confirm="question" ask in the page's <dialog> before they are sent, then send
     confirmed=yes. Without this script the server shows its own confirmation page instead, so every
     change is confirmed either way.
   - Uploads sent by htmx (the deploy form) show their progress in the form's <progress> element, from
     htmx's htmx:xhr:progress events.
   - Error answers (400, 403, 413) of htmx forms marked data-swap-errors are shown in their target
     instead of being dropped, so the user reads why the server refused. */
(function () {
  "use strict";

  function confirmDialog(question, onConfirm) {
    var dialog = document.getElementById("console-confirm");
    if (!dialog || typeof dialog.showModal !== "function") { onConfirm(); return; }
    dialog.querySelector(".console-confirm-message").textContent = question;
    dialog.returnValue = "";
    dialog.addEventListener("close", function handler() {
      dialog.removeEventListener("close", handler);
      if (dialog.returnValue === "confirm") { onConfirm(); }
    });
    dialog.showModal();
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm || form.dataset.confirmed === "yes") { return; }
    event.preventDefault();
    confirmDialog(form.dataset.confirm, function () {
      form.dataset.confirmed = "yes";
      var field = form.querySelector("input[name=confirmed]");
      if (!field) {
        field = document.createElement("input");
        field.type = "hidden";
        field.name = "confirmed";
        form.appendChild(field);
      }
      field.value = "yes";
      form.submit();
    });
  }, true);

  function progressOf(element) {
    var form = element.closest ? element.closest("form") : null;
    return form ? form.querySelector("progress") : null;
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var bar = progressOf(event.target);
    if (!bar) { return; }
    bar.value = 0;
    var box = bar.closest(".deploy-progress");
    if (box) { box.classList.add("active"); }
  });

  document.addEventListener("htmx:xhr:progress", function (event) {
    var bar = progressOf(event.target);
    if (bar && event.detail && event.detail.lengthComputable && event.detail.total > 0) {
      bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
      bar.setAttribute("data-percent", String(bar.value));
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var bar = progressOf(event.target);
    if (bar && event.detail && event.detail.successful) {
      bar.value = 100;
      bar.setAttribute("data-percent", "100");
    }
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var element = event.detail.requestConfig ? event.detail.requestConfig.elt : null;
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    if (element && element.closest && element.closest("[data-swap-errors]") && status >= 400 && status < 500) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();
