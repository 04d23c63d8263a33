// shouwang: the print views' "print" button (sync_agent/child_pages.py); a file of its own for the CSP.
(function () {
  "use strict";
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });
})();
