// A one-time sign-in link carries its token after "#": a fragment never reaches a server, so the token is in
// no access log and no Referer. This moves it into the sign-in form and out of the address bar.
document.addEventListener("DOMContentLoaded", function () {
  var match = /^#token=([A-Za-z0-9_-]{20,128})$/.exec(window.location.hash);
  var input = document.getElementById("link-token");
  if (match && input) {
    input.value = match[1];
    window.history.replaceState(null, "", window.location.pathname);
  }
});
