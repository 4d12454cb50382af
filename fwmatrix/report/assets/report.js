// fwmatrix HTML report: the findings' filters by kind, severity and acceptance. No fetches, no eval.
(function () {
  "use strict";
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input[data-filter]"));
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.finding"));
  var counter = document.getElementById("findings-shown");
  function apply() {
    var on = { kind: {}, severity: {}, status: {} };
    boxes.forEach(function (box) { if (box.checked) { on[box.getAttribute("data-filter")][box.value] = true; } });
    var shown = 0;
    rows.forEach(function (row) {
      var visible = on.kind[row.getAttribute("data-kind")] === true && on.severity[row.getAttribute("data-severity")] === true &&
        on.status[row.getAttribute("data-status")] === true;
      row.hidden = !visible;
      if (visible) { shown += 1; }
    });
    if (counter) { counter.textContent = shown + " of " + rows.length + " findings shown"; }
  }
  boxes.forEach(function (box) { box.addEventListener("change", apply); });
  apply();
}());
