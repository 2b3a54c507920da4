// The topology page's script: the filter box, and the refresh every data-refresh seconds (the
// server-rendered <main> fetched again: swapped in when its revision changed, else only its rates
// copied in place). Rates are formatted on the server alone: the page is complete without this.
(function() {
  "use strict";
  var every = Number(document.body.dataset.refresh) * 1000,
    status = document.getElementById("status"),
    filter = document.getElementById("filter");
  filter.hidden = false;
  var items = ".pair, .endpoint, .apart .container, .orphans li, tr.flow",
    groups = "details.bridge, section.overlay, section.apart, section.unattached, section.flows, " +
    "section.orphans";

  function matches(el, terms) {
    var box = el.closest("details.bridge, section.overlay"),
      name = box ? box.dataset.bridge || box.dataset.overlay : "",
      text = (el.textContent + " " + name).toLowerCase();
    return terms.some(function(t) {
      return text.indexOf(t) >= 0;
    });
  }

  function applyFilter() {
    var terms = filter.value.toLowerCase().split(/\s+/).filter(Boolean),
      on = terms.length > 0;
    document.querySelectorAll(items).forEach(function(el) {
      el.classList.toggle("hidden", on && !matches(el, terms));
    });
    document.querySelectorAll(groups).forEach(function(g) {
      var shown = Array.prototype.some.call(g.querySelectorAll(items), function(el) {
        return !el.classList.contains("hidden");
      });
      g.classList.toggle("hidden", on && !shown);
    });
  }

  function keepFilter() {
    history.replaceState(null, "", filter.value ? "#filter=" + encodeURIComponent(filter.value) : "#");
    applyFilter();
  }

  // Rates, and the flows' figures (data-live): the server's text, copied in place.
  var live = "[data-rx], [data-tx], [data-live]";

  function rateKey(el) {
    if (el.dataset.live !== undefined) return el.closest("[data-flow]").dataset.flow + el.dataset.live;
    return el.dataset.rx !== undefined ? "rx" + el.dataset.rx : "tx" + el.dataset.tx;
  }

  function rates(fresh) {
    var now = {};
    fresh.querySelectorAll(live).forEach(function(el) {
      now[rateKey(el)] = el.textContent;
    });
    document.getElementById("topology").querySelectorAll(live).forEach(function(el) {
      var key = rateKey(el);
      if (key in now) el.textContent = now[key];
    });
  }

  function swap(fresh) {
    var open = {};
    document.querySelectorAll("details.bridge").forEach(function(d) {
      open[d.dataset.bridge] = d.open;
    });
    fresh.querySelectorAll("details.bridge").forEach(function(d) {
      if (d.dataset.bridge in open) d.open = open[d.dataset.bridge];
    });
    document.getElementById("topology").replaceWith(fresh);
    applyFilter();
  }

  function parse(html) {
    var inert = document.createElement("template");
    inert.innerHTML = html;
    var fresh = inert.content.querySelector("main");
    if (!fresh) throw new Error("no page in the answer");
    return document.importNode(fresh, true);
  }

  function show(fresh) {
    if (fresh.dataset.revision === document.getElementById("topology").dataset.revision) {
      rates(fresh);
    } else {
      swap(fresh);
    }
  }

  function tick() {
    fetch("topology?fragment=1", {
        cache: "no-store",
        credentials: "same-origin"
      })
      .then(function(r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function(html) {
        show(parse(html));
        status.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function(e) {
        status.textContent = "refresh failed: " + e.message;
      })
      .then(function() {
        setTimeout(tick, every);
      });
  }

  if (location.hash.indexOf("#filter=") === 0) {
    filter.value = decodeURIComponent(location.hash.slice(8));
    applyFilter();
  }
  filter.addEventListener("input", keepFilter);
  window.addEventListener("beforeprint", function() {
    document.querySelectorAll("details").forEach(function(d) {
      d.open = true;
    });
  });
  setTimeout(tick, every);
})();
