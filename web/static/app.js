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
// The station's forms (sync_agent/record_pages.py): a searchable picker of the station's children
// and parents' rows added and removed in place; without JavaScript the same buttons post the form
// back to the server, which shows it again with a row more or less.
(function () {
  "use strict";
  document.querySelectorAll("input.picker-search[data-picker]").forEach(function (box) {
    var list = document.getElementById(box.getAttribute("data-picker"));
    if (!list) return;
    var count = document.querySelector("[data-count-for='" + list.id + "']");
    box.hidden = false;
    function recount() {
      if (!count) return;
      var n = list.querySelectorAll("input[type=checkbox]:checked").length;
      count.textContent = count.getAttribute("data-template").replace("{n}", n);
      count.hidden = false;
    }
    box.addEventListener("input", function () {
      var q = box.value.trim();
      list.querySelectorAll("label.pick").forEach(function (label) {
        var checked = label.querySelector("input").checked;
        label.hidden = !!q && !checked && label.textContent.indexOf(q) < 0;
      });
    });
    box.addEventListener("keydown", function (ev) {  // Enter picks the only match instead of posting
      if (ev.key !== "Enter") return;
      ev.preventDefault();
      var shown = Array.prototype.filter.call(list.querySelectorAll("label.pick"), function (l) { return !l.hidden; });
      var open = shown.filter(function (l) { return !l.querySelector("input").checked; });
      if (open.length === 1) { open[0].querySelector("input").checked = true; box.value = ""; box.dispatchEvent(new Event("input")); recount(); }
    });
    list.addEventListener("change", recount);
    recount();
  });
  document.querySelectorAll("[data-rows]").forEach(function (rows) {
    var form = rows.closest("form");
    var add = form.querySelector("[data-add-row='" + rows.getAttribute("data-rows") + "']");
    var tpl = document.getElementById("tpl-" + rows.getAttribute("data-rows"));
    var max = parseInt(rows.getAttribute("data-max"), 10) || 4;
    function refresh() { if (add) add.hidden = rows.children.length >= max; }
    rows.addEventListener("click", function (ev) {
      var drop = ev.target.closest("button.drop-row");
      if (!drop) return;
      ev.preventDefault();
      drop.closest(".parent-row").remove();
      refresh();
    });
    if (add && tpl) add.addEventListener("click", function (ev) {
      ev.preventDefault();
      var next = 0;
      rows.querySelectorAll(".parent-row").forEach(function (r) { next = Math.max(next, parseInt(r.getAttribute("data-index"), 10) + 1); });
      var html = tpl.innerHTML.replace(/__i__/g, String(next));
      rows.insertAdjacentHTML("beforeend", html);
      var first = rows.lastElementChild.querySelector("input");
      if (first) first.focus();
      refresh();
    });
    refresh();
  });
})();
