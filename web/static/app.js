// shouwang: a little progressive enhancement. Every page works without it; the server
// validates everything again.
(function () {
  "use strict";
  var zh = document.documentElement.lang !== "en";
  var W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], C = "10X98765432";
  function residentIdProblem(v) {
    if (!v) return "";
    if (!/^[0-9]{17}[0-9X]$/.test(v)) return zh ? "身份证号应为 17 位数字加 1 位校验码（数字或 X）" : "17 digits and a check digit or X";
    var s = 0;
    for (var i = 0; i < 17; i++) s += parseInt(v[i], 10) * W[i];
    var want = C[s % 11];
    if (v[17] !== want) return zh ? "身份证号校验位是“" + v[17] + "”，按国家标准应为“" + want + "”，可能有一位数字输错了"
                                 : "check digit is " + v[17] + ", GB 11643 gives " + want;
    return "";
  }
  document.querySelectorAll("input[data-check=resident_id]").forEach(function (input) {
    var out = document.getElementById("err-" + input.name);
    input.addEventListener("input", function () {
      input.value = input.value.toUpperCase().replace(/\s/g, "");
      var msg = input.value.length >= 18 ? residentIdProblem(input.value) : "";
      if (out) out.textContent = msg;
      input.closest(".field").classList.toggle("has-error", !!msg);
    });
  });
  document.querySelectorAll("input[data-filter]").forEach(function (box) {
    var table = document.querySelector(box.getAttribute("data-filter"));
    if (!table) return;
    box.addEventListener("input", function () {
      var q = box.value.trim();
      table.querySelectorAll("tbody tr").forEach(function (tr) {
        tr.style.display = !q || tr.textContent.indexOf(q) >= 0 ? "" : "none";
      });
    });
  });
})();
