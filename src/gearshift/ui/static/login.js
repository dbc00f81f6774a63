"use strict";
// Show why the last sign-in failed (the server redirects here with ?error=...).
(function () {
  const error = new URLSearchParams(location.search).get("error");
  const el = error && document.getElementById(error);
  if (el) el.hidden = false;
})();
