// The dashboard's only script of its own: show refused actions, and go to the sign-in page when
// a live stream says the session ended. Everything else is htmx attributes in the templates.
document.addEventListener("htmx:responseError", function (event) {
  var flash = document.getElementById("flash");
  if (flash) {
    flash.className = "error";
    flash.textContent = event.detail.xhr.status + ": " + event.detail.xhr.responseText;
  }
});
document.addEventListener("htmx:afterRequest", function (event) {
  var flash = document.getElementById("flash");
  if (flash && event.detail.successful && event.detail.target === flash) {
    flash.className = "ok";
  }
});
document.addEventListener("htmx:sseMessage", function (event) {
  if (event.detail.type === "signout") {
    window.location = "/ui/login?next=" + encodeURIComponent(window.location.pathname);
  }
});
