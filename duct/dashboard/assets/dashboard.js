// duct's dashboard: the services a store knows, and a chart per series or
// stack of series, drawn as plain SVG.  History comes from api/series, then
// each chart follows the live events stream.  Every request goes to the
// page's own origin, with relative URLs.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const POINTS = 300;          // points per series asked of api/series
  const REDRAW_MS = 1000;      // charts are redrawn at most this often
  const RETRY_MS = 5000;       // wait before reopening a closed event stream
  const FETCHES = 4;           // api/series requests in flight at once
  const HEIGHT = 150;
  const PAD = { left: 48, right: 8, top: 8, bottom: 20 };
  const COLOURS = ["#3366cc", "#dc7633", "#2e9e5b", "#b8336a", "#8e6ccf",
                   "#c9a227", "#1b9aaa", "#7f7f7f", "#e06666", "#6aa84f"];

  // With a token on the web server, the page is opened as /?access_token=...;
  // the API gets it as a bearer header, and the event stream (an EventSource
  // cannot send headers) in the same query parameter.
  const token = new URLSearchParams(location.search).get("access_token");
  const app = {
    range: 3600,
    offset: 0,              // server clock minus ours, in seconds
    graphs: [],             // [prefix, type], longest prefix first
    services: new Map(),    // host \0 service -> row
    charts: new Map(),      // host \0 group -> chart
    hosts: new Map(),       // host -> {section, list, grid}
    lastSeq: null,
    received: 0,
    stream: null,
    generation: 0,          // bumped when the range changes: late answers are ignored
  };

  // -- small helpers --------------------------------------------------------------

  const key = (a, b) => a + "\u0000" + b;
  const now = () => Date.now() / 1000 + app.offset;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function number(value) {
    if (typeof value !== "number" || !isFinite(value)) return "";
    const abs = Math.abs(value);
    for (const [size, suffix] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (abs >= size) return trim(value / size) + suffix;
    }
    return trim(value);
  }

  function trim(value) {
    const abs = Math.abs(value);
    const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
    return String(Number(value.toFixed(digits)));
  }

  function clockTime(seconds) {
    const d = new Date((seconds - app.offset) * 1000);
    const hm = d.toTimeString().slice(0, 5);
    return app.range > 86400 ? d.toLocaleDateString(undefined, { weekday: "short" }) + " " + hm : hm;
  }

  function age(seconds) {
    const s = Math.max(0, now() - seconds);
    if (s < 90) return Math.round(s) + "s ago";
    if (s < 5400) return Math.round(s / 60) + "m ago";
    if (s < 129600) return Math.round(s / 3600) + "h ago";
    return Math.round(s / 86400) + "d ago";
  }

  function request(path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    return fetch(path, { headers, cache: "no-store" }).then((response) => {
      if (response.status === 404) return null;
      if (!response.ok) {
        return response.json().catch(() => ({})).then((body) => {
          throw new Error(path.split("?")[0] + ": " + response.status + " " + (body.error || response.statusText));
        });
      }
      return response.json();
    });
  }

  function showError(message) {
    const node = document.getElementById("error");
    node.textContent = message || "";
    node.hidden = !message;
  }

  function setStatus(word) {
    const node = document.getElementById("status");
    node.textContent = word;
    node.className = "status status-" + word;
  }

  // -- graph types: the server's rule (duct/graphs.py), for services seen live --------

  function covers(prefix, service) {
    if (prefix.endsWith(".*")) return service.startsWith(prefix.slice(0, -1));
    return service === prefix || service.startsWith(prefix + ".");
  }

  function graphOf(service) {
    for (const [prefix, type] of app.graphs) {
      if (covers(prefix, service)) {
        const stacked = type === "stack" || type === "full-stack";
        return { type, group: stacked ? prefix : service };
      }
    }
    return { type: "line", group: service };
  }

  // -- the page: a section per host, with its services and its charts ---------------

  function hostSection(host) {
    let section = app.hosts.get(host);
    if (section) return section;
    const node = el("section", { class: "host", "data-host": host });
    node.append(el("h2", {}, host));
    const table = el("table", { class: "services" });
    const list = el("tbody");
    table.append(list);
    const grid = el("div", { class: "charts" });
    const body = el("div", { class: "host-body" });
    body.append(table, grid);
    node.append(body);
    const sections = document.getElementById("hosts");
    const after = [...app.hosts.keys()].filter((h) => h > host).sort()[0];
    sections.insertBefore(node, after ? app.hosts.get(after).node : null);
    section = { node, list, grid };
    app.hosts.set(host, section);
    return section;
  }

  function insertSorted(parent, node, name) {
    const next = [...parent.children].find((child) => child.dataset.sort > name);
    node.dataset.sort = name;
    parent.insertBefore(node, next || null);
  }

  function serviceRow(data) {
    const id = key(data.host, data.service);
    let row = app.services.get(id);
    if (!row) {
      const graph = data.graph ? { type: data.graph, group: data.group } : graphOf(data.service);
      const tr = el("tr", { "data-host": data.host, "data-service": data.service });
      const cells = {
        state: el("td", { class: "state" }),
        service: el("td", { class: "name" }, data.service),
        metric: el("td", { class: "metric" }),
        age: el("td", { class: "age" }),
      };
      tr.append(cells.state, cells.service, cells.metric, cells.age);
      insertSorted(hostSection(data.host).list, tr, data.service);
      // A service first seen on the live stream has no history worth asking for.
      const stored = data.seq === undefined;
      row = { host: data.host, service: data.service, graph, tr, cells, time: 0, ttl: null, stored };
      app.services.set(id, row);
      document.getElementById("counts").textContent = app.services.size + " services";
      applyFilter(row);
    }
    if (typeof data.time === "number" && data.time >= row.time) {
      row.state = data.state;
      row.time = data.time;
      row.ttl = data.ttl;
      row.metric = data.metric;
      row.cells.state.textContent = data.state || "";
      row.cells.metric.textContent = number(data.metric);
      row.tr.title = data.description || "";
      row.tr.dataset.state = data.state || "none";
      paintAge(row);
    }
    return row;
  }

  function paintAge(row) {
    row.cells.age.textContent = row.time ? age(row.time) : "";
    const stale = row.ttl && row.time + row.ttl < now();
    row.tr.classList.toggle("stale", Boolean(stale));
  }

  function chartFor(row) {
    const id = key(row.host, row.graph.group);
    let chart = app.charts.get(id);
    if (chart) return chart;
    const figure = el("figure", {
      class: "chart",
      "data-host": row.host,
      "data-group": row.graph.group,
      "data-type": row.graph.type,
      "data-points": "0",
    });
    const title = row.graph.group.endsWith(".*") ? row.graph.group.slice(0, -2) + " (" + row.graph.type + ")" : row.graph.group;
    const caption = el("figcaption", {}, title);
    const plot = svg("svg", { class: "plot", height: HEIGHT, role: "img", "aria-label": title });
    const legend = el("ul", { class: "legend" });
    figure.append(caption, plot, legend);
    insertSorted(hostSection(row.host).grid, figure, row.graph.group);
    chart = { host: row.host, group: row.graph.group, type: row.graph.type, figure, plot, legend,
              series: new Map(), dirty: true };
    app.charts.set(id, chart);
    applyChartFilter(chart);
    return chart;
  }

  function seriesOf(row) {
    const chart = chartFor(row);
    let series = chart.series.get(row.service);
    if (!series) {
      series = { service: row.service, points: [], loaded: false, requested: false, live: [] };
      chart.series.set(row.service, series);
      chart.dirty = true;
    }
    return [chart, series];
  }

  // -- filtering ------------------------------------------------------------------------

  function matches(text) {
    const filter = document.getElementById("filter").value.trim().toLowerCase();
    return !filter || text.toLowerCase().includes(filter);
  }

  function applyFilter(row) {
    row.tr.hidden = !matches(row.host + " " + row.service);
  }

  function applyChartFilter(chart) {
    const names = [...chart.series.keys(), chart.group].map((s) => chart.host + " " + s);
    chart.figure.hidden = !names.some(matches);
  }

  function refilter() {
    app.services.forEach(applyFilter);
    app.charts.forEach(applyChartFilter);
  }

  // -- history -------------------------------------------------------------------------------

  const queue = [];
  let fetching = 0;

  function loadHistory(chart, series) {
    series.requested = true;
    queue.push([chart, series, app.generation]);
    pump();
  }

  function pump() {
    while (fetching < FETCHES && queue.length) {
      const [chart, series, generation] = queue.shift();
      if (generation !== app.generation) continue;
      fetching++;
      const query = new URLSearchParams({ host: chart.host, service: series.service,
                                          since: String(-app.range), points: String(POINTS) });
      request("api/series?" + query).then((body) => {
        if (generation !== app.generation) return;
        const history = body ? body.points : [];
        const last = history.length ? history[history.length - 1][0] : -Infinity;
        series.points = history.concat(series.live.filter((p) => p[0] > last));
        series.live = [];
        series.loaded = true;
        chart.dirty = true;
      }).catch((error) => showError(String(error.message || error))).finally(() => {
        fetching--;
        pump();
      });
    }
  }

  function loadServices() {
    return request("api/services").then((body) => {
      app.offset = body.now - Date.now() / 1000;
      app.graphs = body.graphs || [];
      for (const data of body.services) {
        const row = serviceRow(data);
        if (typeof data.metric === "number") {
          const [chart, series] = seriesOf(row);
          loadHistory(chart, series);
        }
      }
    });
  }

  function reloadHistory() {
    app.generation++;
    queue.length = 0;
    for (const chart of app.charts.values()) {
      for (const series of chart.series.values()) {
        series.live = series.points.slice();
        series.loaded = false;
        loadHistory(chart, series);
      }
    }
  }

  // -- live events ---------------------------------------------------------------------------

  function connect() {
    const query = new URLSearchParams();
    if (app.lastSeq !== null) query.set("since", String(app.lastSeq));
    if (token) query.set("access_token", token);
    const url = "events" + (query.toString() ? "?" + query : "");
    const stream = new EventSource(url);
    app.stream = stream;
    stream.onopen = () => setStatus("live");
    stream.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      if (typeof event.seq === "number") app.lastSeq = event.seq;
      received(event);
    };
    // The stream skipped events it no longer held: the store has them.
    stream.addEventListener("gap", () => reloadHistory());
    stream.onerror = () => {
      if (stream.readyState === EventSource.CLOSED) {
        // Refused (not a network error): the browser will not retry by itself.
        setStatus("offline");
        stream.close();
        setTimeout(connect, RETRY_MS);
      } else {
        setStatus("reconnecting");  // the browser retries, sending Last-Event-ID
      }
    };
  }

  function received(event) {
    if (!event.host || !event.service) return;
    app.received++;
    const row = serviceRow(event);
    document.getElementById("status").dataset.received = String(app.received);
    if (typeof event.metric !== "number" || !isFinite(event.metric)) return;
    const [chart, series] = seriesOf(row);
    const point = [event.time, event.metric];
    if (series.loaded) {
      const points = series.points;
      if (!points.length || points[points.length - 1][0] < event.time) points.push(point);
    } else if (!row.stored) {
      series.points.push(point);
      series.loaded = true;
    } else {
      series.live.push(point);
      if (!series.requested) loadHistory(chart, series);
    }
    chart.dirty = true;
  }

  // -- drawing ---------------------------------------------------------------------------

  function visible(points, since) {
    let start = 0;
    while (start < points.length && points[start][0] < since) start++;
    return start ? points.slice(start) : points;
  }

  // Halve a long live series by averaging neighbours, so an open page stays light.
  function thin(points) {
    if (points.length <= 2 * POINTS) return points;
    const out = [];
    for (let i = 0; i + 1 < points.length; i += 2) {
      out.push([(points[i][0] + points[i + 1][0]) / 2, (points[i][1] + points[i + 1][1]) / 2]);
    }
    if (points.length % 2) out.push(points[points.length - 1]);
    return out;
  }

  function valueAt(points, t, tolerance) {
    let lo = 0;
    let hi = points.length - 1;
    if (hi < 0) return 0;
    if (t <= points[0][0]) return points[0][0] - t <= tolerance ? points[0][1] : 0;
    if (t >= points[hi][0]) return t - points[hi][0] <= tolerance ? points[hi][1] : 0;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (points[mid][0] <= t) lo = mid; else hi = mid;
    }
    const [t0, v0] = points[lo];
    const [t1, v1] = points[hi];
    return t1 === t0 ? v1 : v0 + (v1 - v0) * (t - t0) / (t1 - t0);
  }

  function medianStep(times) {
    if (times.length < 2) return 0;
    const steps = [];
    for (let i = 1; i < times.length; i++) steps.push(times[i] - times[i - 1]);
    steps.sort((a, b) => a - b);
    return steps[steps.length >> 1];
  }

  // Stacked layers on the times of the longest series: [{service, values}], bottom first.
  function stackLayers(list, full) {
    const reference = list.reduce((a, b) => (b.points.length > a.points.length ? b : a));
    const times = reference.points.map((p) => p[0]);
    const tolerance = medianStep(times) / 2;
    const values = list.map((s) => times.map((t) => Math.max(0, valueAt(s.points, t, tolerance))));
    if (full) {
      for (let i = 0; i < times.length; i++) {
        const total = values.reduce((sum, v) => sum + v[i], 0);
        for (const v of values) v[i] = total > 0 ? v[i] / total : 0;
      }
    }
    const tops = [];
    let base = times.map(() => 0);
    for (const v of values) {
      const top = base.map((b, i) => b + v[i]);
      tops.push({ bottom: base, top });
      base = top;
    }
    return { times, tops };
  }

  function draw(chart) {
    chart.dirty = false;
    const width = Math.max(chart.figure.clientWidth - 2, 200);
    const plot = chart.plot;
    plot.setAttribute("width", width);
    plot.setAttribute("viewBox", "0 0 " + width + " " + HEIGHT);
    plot.replaceChildren();
    const until = now();
    const since = until - app.range;
    const list = [...chart.series.values()].sort((a, b) => (a.service < b.service ? -1 : 1));
    for (const s of list) s.points = thin(visible(s.points, since));
    const shown = list.filter((s) => s.points.length);
    const full = chart.type === "full-stack";
    const stacked = full || chart.type === "stack";
    const layers = stacked && shown.length ? stackLayers(shown, full) : null;

    let lo = Infinity;
    let hi = -Infinity;
    if (layers) {
      lo = 0;
      hi = full ? 1 : Math.max(0, ...layers.tops[layers.tops.length - 1].top);
    } else {
      for (const s of shown) for (const p of s.points) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
      if (chart.type === "bar") { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
    }
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    if (hi === lo) { const pad = Math.abs(hi) * 0.1 || 1; lo -= pad; hi += pad; }

    const x0 = PAD.left;
    const x1 = width - PAD.right;
    const y0 = HEIGHT - PAD.bottom;
    const y1 = PAD.top;
    const x = (t) => x0 + ((t - since) / app.range) * (x1 - x0);
    const y = (v) => y0 - ((v - lo) / (hi - lo)) * (y0 - y1);
    const f = (n) => n.toFixed(1);

    // Axes: three values up the side, three times along the bottom.
    for (const v of [lo, (lo + hi) / 2, hi]) {
      plot.append(svg("line", { class: "grid", x1: x0, x2: x1, y1: f(y(v)), y2: f(y(v)) }));
      const label = svg("text", { class: "axis", x: x0 - 4, y: f(y(v) + 4), "text-anchor": "end" });
      label.textContent = full ? Math.round(v * 100) + "%" : number(v);
      plot.append(label);
    }
    for (const [t, anchor] of [[since, "start"], [since + app.range / 2, "middle"], [until, "end"]]) {
      const label = svg("text", { class: "axis", x: f(x(t)), y: HEIGHT - 5, "text-anchor": anchor });
      label.textContent = clockTime(t);
      plot.append(label);
    }

    let drawn = 0;
    chart.legend.replaceChildren();
    list.forEach((s, index) => {
      const colour = COLOURS[index % COLOURS.length];
      const item = el("li");
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = colour;
      const prefix = chart.group.endsWith(".*") ? chart.group.slice(0, -1) : chart.group + ".";
      const name = s.service.startsWith(prefix) ? s.service.slice(prefix.length) : s.service;
      const last = s.points.length ? s.points[s.points.length - 1][1] : null;
      item.append(swatch, document.createTextNode(name + " " + number(last)));
      chart.legend.append(item);
    });
    if (layers) {
      layers.tops.forEach((layer, index) => {
        const colour = COLOURS[list.indexOf(shown[index]) % COLOURS.length];
        const upper = layers.times.map((t, i) => f(x(t)) + "," + f(y(layer.top[i])));
        const lower = layers.times.map((t, i) => f(x(t)) + "," + f(y(layer.bottom[i]))).reverse();
        plot.append(svg("polygon", { class: "area", points: upper.concat(lower).join(" "),
                                     fill: colour, stroke: colour, "data-service": shown[index].service }));
        drawn += layers.times.length;
      });
    } else if (chart.type === "bar") {
      shown.forEach((s) => {
        const colour = COLOURS[list.indexOf(s) % COLOURS.length];
        const step = medianStep(s.points.map((p) => p[0])) || app.range / POINTS;
        const barWidth = Math.max(1, ((step / app.range) * (x1 - x0) * 0.8) / shown.length);
        const offset = (list.indexOf(s) - (shown.length - 1) / 2) * barWidth;
        for (const [t, v] of s.points) {
          const top = y(Math.max(v, 0));
          const height = Math.abs(y(v) - y(0));
          plot.append(svg("rect", { class: "bar", x: f(x(t) - barWidth / 2 + offset), y: f(top),
                                    width: f(barWidth), height: f(height), fill: colour }));
          drawn++;
        }
      });
    } else {
      shown.forEach((s) => {
        const colour = COLOURS[list.indexOf(s) % COLOURS.length];
        const gap = 3 * (medianStep(s.points.map((p) => p[0])) || app.range);
        let d = "";
        let previous = null;
        for (const [t, v] of s.points) {
          d += (previous === null || t - previous > gap ? "M" : "L") + f(x(t)) + "," + f(y(v));
          previous = t;
          drawn++;
        }
        plot.append(svg("path", { class: "line", d, stroke: colour, "data-service": s.service }));
      });
    }
    chart.figure.dataset.points = String(drawn);
  }

  function redraw() {
    for (const chart of app.charts.values()) {
      if (chart.dirty && !chart.figure.hidden) draw(chart);
    }
  }

  // -- start ------------------------------------------------------------------------------------

  function start() {
    const range = document.getElementById("range");
    range.addEventListener("change", () => {
      app.range = Number(range.value);
      reloadHistory();
      app.charts.forEach((chart) => { chart.dirty = true; });
    });
    document.getElementById("filter").addEventListener("input", () => {
      refilter();
      app.charts.forEach((chart) => { chart.dirty = true; });
    });
    setInterval(redraw, REDRAW_MS);
    // Times move on even when nothing arrives: ages, and charts sliding left.
    setInterval(() => {
      app.services.forEach(paintAge);
      app.charts.forEach((chart) => { chart.dirty = true; });
    }, 10 * REDRAW_MS);
    window.addEventListener("resize", () => app.charts.forEach((chart) => { chart.dirty = true; }));
    loadServices()
      .then(() => showError(""))
      .catch((error) => showError("cannot load services: " + (error.message || error)))
      .finally(connect);
  }

  start();
})();
