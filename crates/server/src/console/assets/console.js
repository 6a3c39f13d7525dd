// The CornerShop console's live updates. Every page works without this script: it only
// adds the overview's live figures and charts, the event log's live tail, and the time
// travel slider's update on release. Server-Sent Events, one stream per page.
"use strict";

(function () {
  function sparkline(svg, values) {
    var line = svg.querySelector("polyline");
    if (!line || values.length === 0) return;
    var max = Math.max.apply(null, values.concat([1]));
    var step = values.length > 1 ? 120 / (values.length - 1) : 0;
    line.setAttribute(
      "points",
      values
        .map(function (v, i) {
          return (i * step).toFixed(1) + "," + (29 - (v / max) * 28).toFixed(1);
        })
        .join(" ")
    );
  }

  function formatted(key, value) {
    if (key.indexOf("PerSecond") > 0) return Number(value).toFixed(1);
    return Number(value).toLocaleString("en-GB");
  }

  function overview() {
    var history = document.getElementById("history");
    if (!history) return;
    var samples = [];
    try {
      samples = JSON.parse(history.textContent) || [];
    } catch (e) {
      samples = [];
    }
    var keys = Array.prototype.map.call(
      document.querySelectorAll("[data-spark]"),
      function (svg) {
        return svg.getAttribute("data-spark");
      }
    );
    function draw() {
      keys.forEach(function (key) {
        var svg = document.querySelector('[data-spark="' + key + '"]');
        sparkline(
          svg,
          samples.map(function (s) {
            return s[key] || 0;
          })
        );
      });
    }
    draw();
    var source = new EventSource("/console/live/overview");
    source.addEventListener("sample", function (message) {
      var sample = JSON.parse(message.data);
      if (!sample) return;
      samples.push(sample);
      if (samples.length > 150) samples.shift();
      Object.keys(sample).forEach(function (key) {
        var cell = document.querySelector('[data-live="' + key + '"]');
        if (cell) cell.textContent = formatted(key, sample[key]);
      });
      draw();
    });
  }

  function tail() {
    var table = document.getElementById("log");
    if (!table || !table.dataset.tail) return;
    var body = table.querySelector("tbody");
    var status = document.getElementById("tail-status");
    var source = new EventSource(table.dataset.tail);
    source.addEventListener("row", function (message) {
      var holder = document.createElement("tbody");
      holder.innerHTML = message.data;
      var row = holder.firstElementChild;
      if (!row) return;
      row.classList.add("new");
      body.insertBefore(row, body.firstChild);
      while (body.children.length > 200) body.removeChild(body.lastChild);
    });
    source.addEventListener("error", function () {
      if (status) status.textContent = "The live tail is reconnecting…";
    });
    source.addEventListener("open", function () {
      if (status) status.textContent = "Live: new events appear at the top as they are written.";
    });
  }

  function travel() {
    var slider = document.querySelector("[data-autosubmit]");
    if (!slider) return;
    var shown = document.getElementById("version-shown");
    slider.addEventListener("input", function () {
      if (shown) shown.textContent = slider.value;
    });
    slider.addEventListener("change", function () {
      slider.form.submit();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    overview();
    tail();
    travel();
  });
})();
