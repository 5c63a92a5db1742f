// The fleet dashboard: sign in with a read key, then read the public API from the browser.
// No framework, no build step. The key lives in sessionStorage (this tab only) and is sent as
// "Authorization: Bearer"; it is never put in a URL. Endpoints that a server may not have yet
// (fleet analytics, silent devices, history) are detected by their 404 and their part is hidden.
"use strict";

(function () {
  const KEY_STORAGE = "energyDashboard.key";
  const PAGE_SIZE = 50;
  const LIST_PAGE = 1000;          // GET /v1/vehicles?limit= (its maximum)
  const SILENT_AFTER_MS = 15 * 60 * 1000;
  const REFRESH_MS = 5000;         // visible rows and the ingest cards (and the list while it is empty)
  const LIST_REFRESH_MS = 15000;   // the vehicle list and the silent ones (new vehicles appear)
  const FULL_REFRESH_MS = 60000;   // the efficiencies and the fleet totals
  const PER_VEHICLE_EFFICIENCY_LIMIT = 500; // above this, efficiency is fetched only for the rows on screen
  const $ = (id) => document.getElementById(id);

  const state = {
    key: sessionStorage.getItem(KEY_STORAGE),
    vehicles: [],                  // {id, soc, temp, kwh, lastSeen (ms), meterId}
    efficiency: new Map(),         // id -> {ratio, warnings}
    silentIds: null,               // Set from /v1/devices/silent, else null (computed from lastSeen)
    sort: {key: "id", dir: 1},
    page: 0,
    filter: "",
    timers: [],
    lastAccepted: null,            // {total, at} for the ingest rate
    missing: new Set(),            // endpoints this server does not have
    vehicleHours: 24,
    charts: {},
  };
  window.dashboard = state;        // the browser tests read the charts' data from here

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
    }
  }

  function isMissingRoute(err) {
    return err instanceof ApiError && err.status === 404 && /requested URL was not found/i.test(err.message);
  }

  async function api(path, {key = state.key, text = false} = {}) {
    let response;
    try {
      response = await fetch(path, {headers: {"Authorization": `Bearer ${key}`, "Accept": text ? "text/plain" : "application/json"},
        cache: "no-store"});
    } catch (e) {
      throw new ApiError(0, {error: "unreachable", message: "The engine does not answer (network error)."});
    }
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (e) { body = {message: `HTTP ${response.status}`}; }
      throw new ApiError(response.status, body);
    }
    return text ? response.text() : response.json();
  }

  // Call an endpoint that may not exist on this server; remember a 404 route so it is asked only once.
  async function optional(name, path) {
    if (state.missing.has(name)) return null;
    try {
      return await api(path);
    } catch (err) {
      if (isMissingRoute(err)) { state.missing.add(name); return null; }
      throw err;
    }
  }

  function banner(message) {
    const b = $("banner");
    b.textContent = message || "";
    b.hidden = !message;
  }

  function explain(err) {
    if (!(err instanceof ApiError)) return String(err);
    if (err.status === 0) return "Cannot reach the engine: is it running?";
    if (err.status === 401) return "The key was refused (unknown, revoked or expired). Sign in again.";
    if (err.status === 403) return `This key lacks the "${err.body.requiredScope || "read"}" scope.`;
    if (err.status === 429) return "Rate limited by the engine; the dashboard will retry.";
    if (err.status === 503) return "The engine's Redis or Postgres is unavailable; retrying.";
    return `${err.status}: ${err.message}`;
  }

  function handleError(err) {
    if (err instanceof ApiError && err.status === 401) { signOut(explain(err)); return; }
    banner(explain(err));
  }

  // ---- formatting -------------------------------------------------------------------------------
  const fmt = (v, digits = 1, unit = "") => (v === null || v === undefined || Number.isNaN(v)) ? "–" : `${Number(v).toFixed(digits)}${unit}`;
  const pct = (ratio) => ratio === null || ratio === undefined ? "–" : `${(ratio * 100).toFixed(1)} %`;
  function ago(ms) {
    if (!ms) return "never";
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 90) return `${s} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  // ---- views ------------------------------------------------------------------------------------
  function show(view) {
    for (const id of ["sign-in", "fleet", "vehicle"]) $(id).hidden = id !== view;
    $("sign-out").hidden = view === "sign-in";
  }

  function stopTimers() {
    state.timers.forEach(clearInterval);
    state.timers = [];
  }

  function signOut(message) {
    stopTimers();
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    state.vehicles = [];
    state.efficiency = new Map();
    banner("");
    show("sign-in");
    const e = $("sign-in-error");
    e.textContent = message || "";
    e.hidden = !message;
  }

  async function signIn(event) {
    event.preventDefault();
    const key = $("key").value.trim();
    const error = $("sign-in-error");
    error.hidden = true;
    if (!key) return;
    try {
      await api("/v1/vehicles?limit=1", {key});
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 403
        ? `This key cannot read: it lacks the "${err.body.requiredScope || "read"}" scope. Use a key with the read scope.`
        : explain(err);
      error.hidden = false;
      return;
    }
    $("key").value = "";
    state.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
    route();
  }

  function route() {
    stopTimers();
    banner("");
    if (!state.key) { show("sign-in"); return; }
    const match = location.hash.match(/^#\/vehicles\/([^/]+)$/);
    if (match) { openVehicle(decodeURIComponent(match[1])); } else { openFleet(); }
  }

  // ---- fleet ------------------------------------------------------------------------------------
  function toRow(reading, meterId) {
    return {id: reading.vehicleId, soc: reading.soc, temp: reading.batteryTemp, kwh: reading.kwhDeliveredDc,
      lastSeen: Date.parse(reading.timestamp), meterId};
  }

  async function loadVehicles() {
    const vehicles = [];
    let after = "";
    for (;;) {
      const page = await api(`/v1/vehicles?limit=${LIST_PAGE}${after ? `&after=${encodeURIComponent(after)}` : ""}`);
      for (const v of page.vehicles) vehicles.push(toRow(v, v.meterId));
      if (!state.vehicles.length) { state.vehicles = vehicles.slice(); renderFleet(); }  // first page: paint now
      if (!page.next) break;
      after = page.next;
    }
    state.vehicles = vehicles;
  }

  // The fleet ranking (one request per 1,000 vehicles) when the server has it; true if it did.
  async function loadRanking() {
    let cursor = "";
    for (;;) {
      const page = await optional("ranking", `/v1/analytics/vehicles?hours=24&sort=efficiency&order=asc&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      if (!page) return false;
      for (const p of page.vehicles) state.efficiency.set(p.vehicleId, {ratio: p.efficiencyRatio, warnings: p.warnings || []});
      if (!page.next) return true;
      cursor = page.next;
    }
  }

  // Without the ranking: one performance call per vehicle, six at a time.
  async function perVehicleEfficiency(ids) {
    let next = 0;
    async function worker() {
      while (next < ids.length) {
        const id = ids[next++];
        try {
          const p = await api(`/v1/analytics/performance/${encodeURIComponent(id)}?hours=24`);
          state.efficiency.set(id, {ratio: p.efficiencyRatio, warnings: p.warnings || []});
        } catch (err) {
          if (err instanceof ApiError && err.status === 404) state.efficiency.set(id, {ratio: null, warnings: [], unmapped: true});
          else throw err;
        }
      }
    }
    await Promise.all(Array.from({length: 6}, worker));
  }

  // A fleet too large for a call per vehicle gets efficiencies only for the rows on screen (sorting by it then
  // orders what is known); the ranking endpoint, where the server has it, covers every vehicle at once.
  async function loadEfficiencies() {
    if (await loadRanking()) return;
    const big = state.vehicles.length > PER_VEHICLE_EFFICIENCY_LIMIT;
    await perVehicleEfficiency((big ? visibleRows() : state.vehicles).map((v) => v.id));
  }

  async function loadSilent() {
    const ids = new Set();
    let cursor = "";
    for (;;) {
      const page = await optional("silent", `/v1/devices/silent?kind=vehicle&for=15m&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      if (!page) { state.silentIds = null; return; }
      for (const d of page.devices) ids.add(d.id);
      if (!page.next) break;
      cursor = page.next;
    }
    state.silentIds = ids;
  }

  function isSilent(v) {
    return state.silentIds ? state.silentIds.has(v.id) : Date.now() - v.lastSeen > SILENT_AFTER_MS;
  }

  async function loadTotals() {
    const fleet = await optional("fleet", "/v1/analytics/fleet?hours=24");
    const note = $("totals-note");
    if (fleet) {
      $("total-ac").textContent = fmt(fleet.acKwh, 1, " kWh");
      $("total-dc").textContent = fmt(fleet.dcKwh, 1, " kWh");
      $("total-eff").textContent = pct(fleet.efficiencyRatio);
      if (fleet.warnings !== undefined) $("warning-count").textContent = Array.isArray(fleet.warnings) ? fleet.warnings.length : fleet.warnings;
      $("fleet-as-of").textContent = fleet.asOf ? `as of ${new Date(fleet.asOf).toLocaleTimeString()}` : "";
      note.hidden = true;
      return;
    }
    // No fleet endpoint: the totals are hidden rather than guessed from a sample of the fleet.
    for (const id of ["card-ac", "card-dc", "card-eff"]) $(id).hidden = true;
    let warnings = 0;
    for (const e of state.efficiency.values()) warnings += e.warnings.length;
    $("warning-count").textContent = state.efficiency.size ? warnings : "–";
    note.textContent = "Fleet totals need GET /v1/analytics/fleet, which this server does not have.";
    note.hidden = false;
  }

  async function loadIngest() {
    let text;
    try {
      text = await api("/metrics", {text: true});
    } catch (err) {
      if (err instanceof ApiError && (err.status === 403 || err.status === 401 || err.status === 404)) {
        $("card-rate").hidden = true; $("card-backlog").hidden = true; return;
      }
      throw err;
    }
    let accepted = 0, backlog = null;
    for (const line of text.split("\n")) {
      if (line.startsWith("energy_readings_accepted_total")) accepted += Number(line.split(" ").pop());
      else if (line.startsWith("energy_stream_backlog ")) backlog = Number(line.split(" ").pop());
    }
    const now = Date.now();
    if (state.lastAccepted && now > state.lastAccepted.at) {
      const rate = (accepted - state.lastAccepted.total) / ((now - state.lastAccepted.at) / 1000);
      $("ingest-rate").textContent = `${Math.max(0, rate).toFixed(rate < 10 ? 1 : 0)} /s`;
    }
    state.lastAccepted = {total: accepted, at: now};
    $("backlog").textContent = backlog === null ? "–" : backlog.toLocaleString();
  }

  function sortedFiltered() {
    const needle = state.filter.toLowerCase();
    const rows = needle ? state.vehicles.filter((v) => v.id.toLowerCase().includes(needle)) : state.vehicles.slice();
    const {key, dir} = state.sort;
    const value = (v) => key === "efficiency" ? (state.efficiency.get(v.id) || {}).ratio : v[key];
    rows.sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === y) return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
      if (x === null || x === undefined) return 1;   // unknown values last, in either direction
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
    return rows;
  }

  function socBar(soc) {
    const fill = el("div", {class: `fill ${soc < 20 ? "low" : soc < 50 ? "mid" : ""}`});
    fill.style.width = `${Math.max(0, Math.min(100, soc))}%`;
    return el("div", {class: "soc"}, el("div", {class: "track", role: "img", "aria-label": `SoC ${soc}%`}, fill),
      el("span", {class: "soc-value", text: fmt(soc, 1, " %")}));
  }

  function renderFleet() {
    const rows = sortedFiltered();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const visible = rows.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
    const body = $("fleet-rows");
    body.replaceChildren(...visible.map((v) => {
      const silent = isSilent(v);
      const eff = state.efficiency.get(v.id);
      const link = el("a", {href: `#/vehicles/${encodeURIComponent(v.id)}`, text: v.id});
      const seen = el("td", {class: "last-seen", text: ago(v.lastSeen)});
      if (silent) seen.append(" ", el("span", {class: "badge silent", text: "silent"}));
      const tr = el("tr", {"data-vehicle-id": v.id, class: silent ? "silent" : ""},
        el("td", {}, link), el("td", {class: "soc-cell"}, socBar(v.soc)),
        el("td", {class: "wide", text: fmt(v.temp, 1, " °C")}), seen,
        el("td", {class: "efficiency", text: eff ? (eff.unmapped ? "no meter" : pct(eff.ratio)) : "…"}));
      return tr;
    }));
    $("page-info").textContent = `Page ${state.page + 1} of ${pages}`;
    $("prev-page").disabled = state.page === 0;
    $("next-page").disabled = state.page >= pages - 1;
    $("fleet-count").textContent = `${rows.length.toLocaleString()} of ${state.vehicles.length.toLocaleString()} vehicles`;
    const silentCount = state.silentIds ? state.silentIds.size : state.vehicles.filter(isSilent).length;
    $("silent-count").textContent = state.vehicles.length || state.silentIds ? silentCount : "–";
    for (const th of document.querySelectorAll("#fleet-table th")) {
      th.setAttribute("aria-sort", th.dataset.sort === state.sort.key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
    }
    const empty = $("fleet-empty");
    if (!state.vehicles.length) {
      empty.textContent = "No vehicle has reported yet. Start a simulated fleet with `make demo`, or point the simulator " +
        "at this engine: python -m simulator --url " + location.origin + " --key <a key that can write>.";
      empty.hidden = false;
    } else if (!rows.length) {
      empty.textContent = `No vehicle id contains "${state.filter}".`;
      empty.hidden = false;
    } else {
      empty.hidden = true;
    }
    return visible;
  }

  function visibleRows() {
    return sortedFiltered().slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
  }

  async function refreshVisible() {
    const visible = visibleRows();
    if (!visible.length) return;
    const answer = await api(`/v1/vehicles/latest?ids=${visible.map((v) => encodeURIComponent(v.id)).join(",")}`);
    const byId = new Map(answer.vehicles.map((r) => [r.vehicleId, r]));
    for (const v of visible) {
      const r = byId.get(v.id);
      if (r) Object.assign(v, toRow(r, v.meterId));
    }
    renderFleet();
    const unknown = visible.filter((v) => !state.efficiency.has(v.id)).map((v) => v.id);
    if (unknown.length && state.missing.has("ranking")) {
      await perVehicleEfficiency(unknown);
      renderFleet();
    }
  }

  async function refreshList() {
    await loadVehicles();
    renderFleet();
    await loadSilent();
    renderFleet();
  }

  async function refreshFigures() {
    await loadEfficiencies();
    renderFleet();
    await loadTotals();
  }

  function every(ms, task) {
    const run = () => task().then(() => banner(""), handleError);
    state.timers.push(setInterval(run, ms));
  }

  async function openFleet() {
    show("fleet");
    document.title = "Fleet: energy dashboard";
    renderFleet();
    try {
      await Promise.all([refreshList().then(refreshFigures), loadIngest()]);
    } catch (err) {
      handleError(err);
    }
    // While no vehicle is known yet (a fleet just starting), look for them every few seconds.
    // Silent devices come from Redis like the rows on screen: both every few seconds.
    every(REFRESH_MS, () => Promise.all([
      state.vehicles.length ? loadSilent().then(refreshVisible) : refreshList(), loadIngest()]));
    every(LIST_REFRESH_MS, refreshList);
    every(FULL_REFRESH_MS, refreshFigures);
  }

  // ---- vehicle ----------------------------------------------------------------------------------
  function chartWidth(node) {
    return Math.max(280, Math.min(node.parentElement.clientWidth, 1160));
  }

  function drawChart(name, node, opts, data) {
    if (state.charts[name]) state.charts[name].destroy();
    node.replaceChildren();
    state.charts[name] = new uPlot({width: chartWidth(node), height: 260, ...opts}, data, node);
    node.dataset.points = String(data[0].length);
  }

  function emptyChart(name, note, message) {
    if (state.charts[name]) { state.charts[name].destroy(); delete state.charts[name]; }
    $(`chart-${name}`).replaceChildren();
    $(`chart-${name}`).dataset.points = "0";
    note.textContent = message;
    note.hidden = false;
  }

  async function allReadings(path, fromIso, toIso) {
    const readings = [];
    let cursor = "";
    for (;;) {
      const page = await optional("history", `${path}?from=${encodeURIComponent(fromIso)}&to=${encodeURIComponent(toIso)}&limit=10000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      if (!page) return null;
      readings.push(...page.readings);
      if (!page.next) return readings;
      cursor = page.next;
    }
  }

  async function loadVehicleCharts(id, meterId, hours) {
    const to = new Date();
    const from = new Date(to.getTime() - hours * 3600 * 1000);
    state.chartWindow = {from: from.toISOString(), to: to.toISOString()};  // what the charts show (tests read it)
    const socNote = $("chart-soc-note"), energyNote = $("chart-energy-note");
    socNote.hidden = true; energyNote.hidden = true;
    const base = `/v1/vehicles/${encodeURIComponent(id)}/readings`;
    let times, soc, temp;
    if (hours <= 24) {
      const readings = await allReadings(base, from.toISOString(), to.toISOString());
      if (readings === null) {
        emptyChart("soc", socNote, "History needs GET /v1/vehicles/<id>/readings, which this server does not have.");
        emptyChart("energy", energyNote, "Energy per hour needs the history API's buckets, which this server does not have.");
        return;
      }
      times = readings.map((r) => Date.parse(r.timestamp) / 1000);
      soc = readings.map((r) => r.soc);
      temp = readings.map((r) => r.batteryTemp);
    }
    const query = `?from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}&interval=1h&tz=UTC`;
    const vehicleBuckets = await optional("history", base + query);
    if (vehicleBuckets === null) {
      if (!times) emptyChart("soc", socNote, "History needs GET /v1/vehicles/<id>/readings, which this server does not have.");
      emptyChart("energy", energyNote, "Energy per hour needs the history API's buckets, which this server does not have.");
      if (!times) return;
    }
    if (!times) {
      const b = vehicleBuckets.buckets.filter((x) => x.count > 0);
      times = b.map((x) => Date.parse(x.start) / 1000);
      soc = b.map((x) => x.socLast);
      temp = b.map((x) => x.batteryTempAvg);
    }
    state.chartSource = {times: times.length, lastSoc: soc.length ? soc[soc.length - 1] : null};
    if (!times.length) {
      emptyChart("soc", socNote, "No reading in this range.");
    } else {
      drawChart("soc", $("chart-soc"), {
        scales: {x: {time: true}, soc: {range: [0, 100]}, temp: {auto: true}},
        axes: [{}, {scale: "soc", label: "SoC %"}, {scale: "temp", side: 1, label: "°C", grid: {show: false}}],
        series: [{}, {label: "SoC %", scale: "soc", stroke: "#1a7f37", width: 2},
          {label: "Battery °C", scale: "temp", stroke: "#b42318", width: 1.5}],
      }, [times, soc, temp]);
      $("chart-soc").dataset.lastSoc = String(soc[soc.length - 1]);
    }
    if (vehicleBuckets === null) return;
    const meterBuckets = meterId
      ? await optional("history", `/v1/meters/${encodeURIComponent(meterId)}/readings${query}`) : null;
    const acByStart = new Map((meterBuckets ? meterBuckets.buckets : []).map((b) => [b.start, b.acKwh]));
    const hoursX = vehicleBuckets.buckets.map((b) => Date.parse(b.start) / 1000);
    const dc = vehicleBuckets.buckets.map((b) => b.dcKwh);
    const ac = vehicleBuckets.buckets.map((b) => acByStart.has(b.start) ? acByStart.get(b.start) : null);
    if (!hoursX.length) { emptyChart("energy", energyNote, "No reading in this range."); return; }
    if (!meterId) { energyNote.textContent = "This vehicle has no meter mapped: only its DC energy is shown."; energyNote.hidden = false; }
    // AC bars wide behind, DC bars narrow in front: the gap between them is the charging loss.
    const bars = (size) => uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({size: [size, 40]}) : undefined;
    drawChart("energy", $("chart-energy"), {
      scales: {x: {time: true}},
      axes: [{}, {label: "kWh"}],
      series: [{}, {label: "AC kWh", stroke: "#0a5cc2", fill: "rgba(10,92,194,0.35)", paths: bars(0.7)},
        {label: "DC kWh", stroke: "#9a6700", fill: "rgba(154,103,0,0.6)", paths: bars(0.35)}],
    }, [hoursX, ac, dc]);
  }

  async function openVehicle(id) {
    show("vehicle");
    document.title = `${id}: energy dashboard`;
    $("vehicle-id").textContent = id;
    for (const b of document.querySelectorAll(".range button")) b.classList.toggle("on", Number(b.dataset.hours) === state.vehicleHours);
    const hours = state.vehicleHours;
    try {
      let latest = null;
      try { latest = await api(`/v1/vehicles/${encodeURIComponent(id)}/latest`); } catch (err) { if (err.status !== 404) throw err; }
      let meterId = null;
      try { meterId = (await api(`/v1/mappings/${encodeURIComponent(id)}`)).meterId; } catch (err) { if (err.status !== 404) throw err; }
      $("v-soc").textContent = latest ? fmt(latest.soc, 1, " %") : "no reading";
      $("v-temp").textContent = latest ? fmt(latest.batteryTemp, 1, " °C") : "–";
      $("v-last").textContent = latest ? `${new Date(latest.timestamp).toLocaleString()} (${ago(Date.parse(latest.timestamp))})` : "never";
      $("vehicle-silent").hidden = !latest || Date.now() - Date.parse(latest.timestamp) <= SILENT_AFTER_MS;
      $("v-meter").textContent = meterId || "none mapped";
      const warnings = $("v-warnings");
      warnings.replaceChildren();
      try {
        const p = await api(`/v1/analytics/performance/${encodeURIComponent(id)}?hours=${hours}`);
        $("v-energy").textContent = `${fmt(p.acKwh, 2)} / ${fmt(p.dcKwh, 2)} kWh`;
        $("v-eff").textContent = pct(p.efficiencyRatio);
        const resets = p.counterResets ? p.counterResets.meter + p.counterResets.vehicle : 0;
        const glitches = p.glitches ? (typeof p.glitches === "number" ? p.glitches : (p.glitches.meter || 0) + (p.glitches.vehicle || 0)) : 0;
        $("v-counters").textContent = `${resets} / ${glitches}`;
        for (const w of p.warnings || []) warnings.append(el("li", {text: w}));
      } catch (err) {
        if (!(err instanceof ApiError) || (err.status !== 404 && err.status !== 400)) throw err;
        $("v-energy").textContent = "–"; $("v-eff").textContent = "–"; $("v-counters").textContent = "–";
        warnings.append(el("li", {text: err.status === 404 ? "No meter is mapped: no efficiency." : `Performance: ${err.message}`}));
      }
      await loadVehicleCharts(id, meterId, hours);
      banner("");
    } catch (err) {
      handleError(err);
    }
  }

  // ---- wiring -----------------------------------------------------------------------------------
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(""));
  $("search").addEventListener("input", (e) => { state.filter = e.target.value.trim(); state.page = 0; renderFleet(); });
  $("prev-page").addEventListener("click", () => { state.page -= 1; renderFleet(); refreshVisible().catch(handleError); });
  $("next-page").addEventListener("click", () => { state.page += 1; renderFleet(); refreshVisible().catch(handleError); });
  for (const th of document.querySelectorAll("#fleet-table th")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = state.sort.key === key ? {key, dir: -state.sort.dir} : {key, dir: 1};
      state.page = 0;
      renderFleet();
      refreshVisible().catch(handleError);
    });
  }
  for (const b of document.querySelectorAll(".range button")) {
    b.addEventListener("click", () => { state.vehicleHours = Number(b.dataset.hours); route(); });
  }
  window.addEventListener("hashchange", route);
  route();
})();
