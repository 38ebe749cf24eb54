/* stadtwacht control-room page: district map, active alerts, sensor health and timeline.
 * Reads GET /api/state once, then live updates from GET /events (Server-Sent Events, "state" events).
 * Acknowledge / silence / lift a silence go to the alerting API with the operator's bearer token (sessionStorage
 * only); logged in, the page also lists the active silences (GET /api/silences).
 * No external resources: everything is drawn as plain SVG and DOM built with textContent. */
"use strict";

(function () {
  const I18N = {
    de: {
      title: "Lagebild Stuttgart", connecting: "Verbinde …", live: "Live", offline: "Verbindung unterbrochen – neuer Versuch …",
      exercise: "ÜBUNG – EXERCISE – keine echte Gefahrenlage",
      approximate: "Näherungsweise Stadtbezirksgrenzen (eingebaute Demo-Karte) – nicht für echte Alarmierung.",
      elsewhere: "Diese Instanz überwacht {n} von {total} Stadtbezirken. Die grauen überwacht eine andere stadtwacht-Instanz: deren Stufen und Alarme erscheinen hier nicht.",
      elsewhere_district: "andere Instanz",
      elsewhere_shown: "Diese Instanz entscheidet {n} von {total} Stadtbezirken. Stufen und Alarme der übrigen zeigt sie so, wie die entscheidende stadtwacht-Instanz sie meldet; Quittierungen werden dorthin weitergeleitet, Stummschaltungen gelten auf allen Instanzen.",
      remote: "entscheidet eine andere Instanz", ack_forwarded: "Quittierung weitergeleitet",
      login_heading: "Anmeldung für Quittieren und Stummschalten", operator: "Bediener/in", token: "API-Token",
      login: "Anmelden", logout: "Abmelden", logged_in_as: "Angemeldet als",
      map: "Stadtbezirke", hazard: "Gefahr", hz_flood: "Hochwasser", hz_air: "Luft", hz_sensor: "Sensoren",
      alerts: "Aktive Alarme", silence_for: "Stumm für",
      login_hint: "Zum Quittieren und Stummschalten bitte oben anmelden.",
      col_level: "Stufe", col_what: "Gefahr", col_districts: "Bezirke", col_value: "Wert", col_trend: "Trend",
      col_age: "Seit", col_actions: "Aktion", no_alerts: "Keine aktiven Alarme.",
      health: "Sensorzustand", no_health: "Alle Sensoren melden normal.", timeline: "Ereignisse",
      no_timeline: "Noch keine Ereignisse.",
      footer: "stadtwacht – offenes Warnsystem für den Bevölkerungsschutz. Lokale Seite, keine externen Ressourcen.",
      ack: "Quittieren", silence: "Stumm", acked_by: "quittiert von", silenced: "stumm",
      rising: "steigend", falling: "fallend", steady: "gleichbleibend",
      level: "Stufe", level0: "normal", threshold: "Schwelle",
      stale: "meldet nicht mehr", stuck: "hängt (konstanter Wert)", range: "außerhalb des Messbereichs", anomaly: "auffälliger Verlauf",
      since: "seit", firing: "ausgelöst", update: "geändert", resolved: "aufgehoben",
      new_alert: "Neuer Alarm", ack_ok: "Quittiert", silence_ok: "Stummgeschaltet",
      unauthorized: "Token abgelehnt (401) – bitte neu anmelden.", failed: "Fehlgeschlagen",
      unknown_district: "Stummschalten nicht möglich: der Stadtbezirk des Alarms ist unbekannt.",
      silences: "Aktive Stummschaltungen", no_silences: "Keine aktiven Stummschaltungen.", unsilence: "Aufheben",
      unsilence_ok: "Stummschaltung aufgehoben", up_to_level: "bis Stufe {n}", all_levels: "alle Stufen",
      all_hazards: "alle Gefahren", until: "bis", until_removed: "bis zur Aufhebung", by: "von",
      level_rose: "Die Stufe ist inzwischen gestiegen – bitte die neue Stufe prüfen und erneut quittieren.",
      map_desc: "Karte der Stadtbezirke, eingefärbt nach aktueller Stufe der Gefahr",
      legend: "Legende", alarm: "Alarm", attribution: "Bezirke: Landeshauptstadt Stuttgart bzw. Näherung; Messwerte: LUBW/UBA, sensor.community-Mitwirkende (ODbL).",
      ago_s: "vor {n} s", ago_m: "vor {n} min", ago_h: "vor {n} h {m} min", ago_d: "vor {n} d",
    },
    en: {
      title: "Stuttgart situation", connecting: "Connecting …", live: "Live", offline: "Connection lost – retrying …",
      exercise: "EXERCISE – ÜBUNG – not a real emergency",
      approximate: "Approximate district boundaries (built-in demo map) – not for real alerting.",
      elsewhere: "This instance watches {n} of {total} districts. The grey ones are watched by another stadtwacht instance: their levels and alerts do not appear here.",
      elsewhere_district: "another instance",
      elsewhere_shown: "This instance decides {n} of {total} districts. It shows the levels and alerts of the others as the stadtwacht instance deciding them reports them; acknowledgements are forwarded there, silences apply on every instance.",
      remote: "decided by another instance", ack_forwarded: "Acknowledgement forwarded",
      login_heading: "Log in to acknowledge and silence", operator: "Operator", token: "API token",
      login: "Log in", logout: "Log out", logged_in_as: "Logged in as",
      map: "Districts", hazard: "Hazard", hz_flood: "Flood", hz_air: "Air", hz_sensor: "Sensors",
      alerts: "Active alerts", silence_for: "Silence for",
      login_hint: "Log in above to acknowledge and silence.",
      col_level: "Level", col_what: "Hazard", col_districts: "Districts", col_value: "Value", col_trend: "Trend",
      col_age: "Since", col_actions: "Action", no_alerts: "No active alerts.",
      health: "Sensor health", no_health: "All sensors report normally.", timeline: "Events",
      no_timeline: "No events yet.",
      footer: "stadtwacht – open civil-protection alerting. Local page, no external resources.",
      ack: "Acknowledge", silence: "Silence", acked_by: "acknowledged by", silenced: "silenced",
      rising: "rising", falling: "falling", steady: "steady",
      level: "Level", level0: "normal", threshold: "threshold",
      stale: "silent (stale)", stuck: "stuck (constant value)", range: "out of range", anomaly: "anomalous readings",
      since: "since", firing: "firing", update: "update", resolved: "resolved",
      new_alert: "New alert", ack_ok: "Acknowledged", silence_ok: "Silenced",
      unauthorized: "Token rejected (401) – please log in again.", failed: "Failed",
      unknown_district: "Cannot silence: the alert's district is unknown.",
      silences: "Active silences", no_silences: "No active silences.", unsilence: "Lift",
      unsilence_ok: "Silence lifted", up_to_level: "up to level {n}", all_levels: "all levels",
      all_hazards: "all hazards", until: "until", until_removed: "until lifted", by: "by",
      level_rose: "The level has risen since – check the new level and acknowledge again.",
      map_desc: "Map of the districts coloured by the current level of the hazard",
      legend: "Legend", alarm: "alarm", attribution: "Districts: Landeshauptstadt Stuttgart or approximation; readings: LUBW/UBA, sensor.community contributors (ODbL).",
      ago_s: "{n} s ago", ago_m: "{n} min ago", ago_h: "{n} h {m} min ago", ago_d: "{n} d ago",
    },
  };
  const UNITS = { water_level: "cm", discharge: "m³/s", pm10: "µg/m³", pm2_5: "µg/m³", no2: "µg/m³", o3: "µg/m³", so2: "µg/m³" };
  // what a sensor fault's value and threshold are (its quantity is the fault kind), as in the notifications
  const FAULT_MEASURE = {
    de: { stale: ["Messpause", "Grenze"], stuck: ["Schwankungsbreite", "Grenze"], range: ["Messwert", "Messbereichsgrenze"],
          anomaly: ["Anomaliewert", "Schwelle"] },
    en: { stale: ["no readings for", "limit"], stuck: ["spread of values", "limit"], range: ["value", "measuring range limit"],
          anomaly: ["anomaly score", "threshold"] },
  };
  const HAZARD_ORDER = { flood: 0, air: 1, sensor: 2 }; // at equal severity, hazards before sensor faults
  const QUANTITY = {
    de: { water_level: "Pegel", discharge: "Abfluss", pm10: "PM10", pm2_5: "PM2,5", no2: "NO₂", o3: "Ozon", so2: "SO₂",
          stale: "Ausfall", stuck: "hängt", range: "Messbereich", anomaly: "Anomalie" },
    en: { water_level: "water level", discharge: "discharge", pm10: "PM10", pm2_5: "PM2.5", no2: "NO₂", o3: "ozone", so2: "SO₂",
          stale: "stale", stuck: "stuck", range: "range", anomaly: "anomaly" },
  };
  // Sequential, colour-blind-safe scale (samples of "inferno": lightness falls monotonically);
  // the darkest stop is the alarm colour and is also hatched, and every district shows its level number.
  const SCALE = ["#ececec", "#fcffa4", "#f9a825", "#dd513a", "#6a176e"];
  const TEXT_ON = ["#222", "#222", "#222", "#fff", "#fff"];
  const ELSEWHERE = "#9a9a9a"; // a district another instance decides (scale-out): unknown here, not "normal"
  const SVGNS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;
  let state = null;
  let lang = store.getItem("stadtwacht.lang") || null;
  let hazard = store.getItem("stadtwacht.hazard") || "flood";
  let seenAlerts = null; // Set of alert ids already announced
  let scrolledToLink = false; // the row a notification linked to (#alert-<id>) was scrolled to
  let mapKey = null; // districts geometry already drawn (ids joined)
  let clockOffset = 0; // ms the pipeline's event-time clock (state.now) is ahead of this browser's clock
  let silences = null; // GET /api/silences (logged in only); null: not loaded
  let silencesAt = 0; // Date.now() of the last load

  function t(key) { return (I18N[lang] || I18N.de)[key] || I18N.de[key] || key; }
  function fmt(key, vars) { return t(key).replace(/\{(\w+)\}/g, (_, k) => String(vars[k])); }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "className") e.className = v; else e.setAttribute(k, v === true ? "" : String(v));
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function quantityName(q) { return (QUANTITY[lang] || QUANTITY.de)[q] || q; }
  function maxLevel(h) { return (state && state.max_levels && state.max_levels[h]) || 1; }
  function scaleIndex(level, h) {
    if (!level || level <= 0) return 0;
    return Math.max(1, Math.min(4, Math.round((level * 4) / maxLevel(h))));
  }
  function numberFmt(v, digits) {  // digits: exactly that many decimals (default: at most one)
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const opts = digits === undefined ? { maximumFractionDigits: 1 } : { minimumFractionDigits: digits, maximumFractionDigits: digits };
    return new Intl.NumberFormat(lang === "en" ? "en-GB" : "de-DE", opts).format(v);
  }
  function durationFmt(sec) {
    if (sec === null || sec === undefined || Number.isNaN(sec)) return "–";
    const s = Math.max(0, Math.round(sec));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return s % 3600 >= 60 ? `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min` : `${Math.floor(s / 3600)} h`;
    return s % 86400 >= 3600 ? `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h` : `${Math.floor(s / 86400)} d`;
  }
  // [value, "(threshold …)"] of an alert or event: with its unit, or what a sensor fault measured
  function measure(r) {
    const fault = r.hazard === "sensor" && (FAULT_MEASURE[lang] || FAULT_MEASURE.de)[r.quantity];
    if (fault) {
      const f = r.quantity === "stale" ? durationFmt : r.quantity === "anomaly" ? (v) => numberFmt(v, 2) : numberFmt;
      return [`${fault[0]} ${f(r.value)}`, `(${fault[1]} ${f(r.threshold)})`];
    }
    const unit = UNITS[r.quantity] ? " " + UNITS[r.quantity] : "";
    return [numberFmt(r.value) + unit, `(${t("threshold")} ${numberFmt(r.threshold)})`];
  }
  function timeFmt(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso || "";
    return d.toLocaleString(lang === "en" ? "en-GB" : "de-DE", { day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function age(iso) {
    const s = Math.max(0, Math.round((Date.now() + clockOffset - new Date(iso).getTime()) / 1000));
    if (Number.isNaN(s)) return "";
    if (s < 60) return fmt("ago_s", { n: s });
    if (s < 3600) return fmt("ago_m", { n: Math.floor(s / 60) });
    if (s < 86400) return fmt("ago_h", { n: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
    return fmt("ago_d", { n: Math.floor(s / 86400) });
  }

  // ---------- static texts and language ----------
  function applyLanguage() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
    $("lang-toggle").textContent = lang === "de" ? "EN" : "DE";
    $("lang-toggle").setAttribute("aria-label", lang === "de" ? "Switch to English" : "Auf Deutsch umschalten");
    $("attribution").textContent = t("attribution");
    setConn($("conn").dataset.state);
    document.title = "stadtwacht – " + t("title");
    if (state) render();
  }

  // ---------- login ----------
  function auth() {
    const token = store.getItem("stadtwacht.token");
    const operator = store.getItem("stadtwacht.operator");
    return token && operator ? { token, operator } : null;
  }
  function renderLogin() {
    const a = auth();
    $("login-form").hidden = !!a;
    $("logged-in").hidden = !a;
    $("login-hint").hidden = !!a;
    $("operator-name").textContent = a ? a.operator : "";
    document.querySelectorAll("button[data-action]").forEach((b) => { b.disabled = !a; });
  }

  // ---------- map ----------
  function rings(geom) {
    if (!geom) return [];
    if (geom.type === "Polygon") return [geom.coordinates];
    if (geom.type === "MultiPolygon") return geom.coordinates;
    return [];
  }
  function drawMap(fc) {
    const feats = (fc && fc.features) || [];
    const key = feats.map((f) => f.properties.id).join(",");
    if (key === mapKey) return;
    mapKey = key;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    feats.forEach((f) => rings(f.geometry).forEach((poly) => poly.forEach((ring) => ring.forEach(([lon, lat]) => {
      x0 = Math.min(x0, lon); x1 = Math.max(x1, lon); y0 = Math.min(y0, lat); y1 = Math.max(y1, lat);
    }))));
    if (!Number.isFinite(x0)) return;
    const kx = Math.cos(((y0 + y1) / 2) * Math.PI / 180); // equirectangular, true to scale at mid-latitude
    const W = 1000, scale = W / ((x1 - x0) * kx), H = Math.round((y1 - y0) * scale);
    const px = (lon) => ((lon - x0) * kx * scale).toFixed(1);
    const py = (lat) => ((y1 - lat) * scale).toFixed(1);
    const svg = $("map");
    svg.setAttribute("viewBox", `-10 -10 ${W + 20} ${H + 20}`);
    const g = $("districts"), labels = $("labels");
    g.replaceChildren(); labels.replaceChildren();
    feats.forEach((f) => {
      let d = "", best = null, bestArea = -1;
      rings(f.geometry).forEach((poly) => {
        poly.forEach((ring) => { d += "M" + ring.map(([lon, lat]) => px(lon) + "," + py(lat)).join("L") + "Z"; });
        const outer = poly[0] || [];
        let a = 0, cx = 0, cy = 0;
        for (let i = 0, j = outer.length - 1; i < outer.length; j = i++) {
          const xi = +px(outer[i][0]), yi = +py(outer[i][1]), xj = +px(outer[j][0]), yj = +py(outer[j][1]);
          const c = xj * yi - xi * yj; a += c; cx += (xi + xj) * c; cy += (yi + yj) * c;
        }
        if (Math.abs(a) > bestArea && a !== 0) { bestArea = Math.abs(a); best = [cx / (3 * a), cy / (3 * a)]; }
      });
      const path = document.createElementNS(SVGNS, "path");
      path.setAttribute("d", d);
      path.setAttribute("fill-rule", "evenodd");
      path.setAttribute("data-district", f.properties.id);
      path.setAttribute("data-level", "0");
      path.setAttribute("class", "district");
      path.appendChild(document.createElementNS(SVGNS, "title"));
      g.appendChild(path);
      if (best) {
        const txt = document.createElementNS(SVGNS, "text");
        txt.setAttribute("x", best[0].toFixed(1)); txt.setAttribute("y", best[1].toFixed(1));
        txt.setAttribute("data-label", f.properties.id);
        const name = document.createElementNS(SVGNS, "tspan");
        name.setAttribute("class", "name"); name.setAttribute("x", best[0].toFixed(1));
        name.textContent = f.properties.name;
        const lvl = document.createElementNS(SVGNS, "tspan");
        lvl.setAttribute("class", "lvl"); lvl.setAttribute("x", best[0].toFixed(1)); lvl.setAttribute("dy", "1.15em");
        txt.append(name, lvl);
        labels.appendChild(txt);
      }
    });
  }
  function colourMap() {
    const feats = (state.districts && state.districts.features) || [];
    const byId = new Map(feats.map((f) => [f.properties.id, f.properties]));
    const list = $("district-list");
    list.replaceChildren();
    const max = maxLevel(hazard);
    document.querySelectorAll("#districts path").forEach((p) => {
      const props = byId.get(p.dataset.district) || {};
      const txt = document.querySelector(`#labels text[data-label="${CSS.escape(p.dataset.district)}"]`);
      p.setAttribute("data-watched", String(props.watched !== false));
      if (props.watched === false) {
        p.removeAttribute("data-level");
        p.setAttribute("fill", ELSEWHERE);
        p.setAttribute("data-colour", ELSEWHERE);
        const label = `${props.name || p.dataset.district}: ${t("elsewhere_district")}`;
        p.querySelector("title").textContent = label;
        list.appendChild(el("li", {}, label));
        if (txt) {
          txt.setAttribute("fill", "#fff");
          txt.setAttribute("class", "");
          txt.querySelector(".lvl").textContent = "?";
        }
        return;
      }
      // contract: properties.levels[hazard]; also accepts the hazards as flat properties (properties[hazard])
      const level = Number((props.levels ? props.levels[hazard] : props[hazard]) || 0);
      const idx = scaleIndex(level, hazard);
      p.setAttribute("data-level", String(level));
      p.setAttribute("fill", level >= max && level > 0 ? "url(#alarm-hatch)" : SCALE[idx]);
      p.setAttribute("data-colour", SCALE[idx]);
      const label = `${props.name || p.dataset.district}: ${t("hz_" + hazard)} ${t("level")} ${level}${level === 0 ? " (" + t("level0") + ")" : ""}`;
      p.querySelector("title").textContent = label;
      list.appendChild(el("li", {}, label));
      if (txt) {
        txt.setAttribute("fill", TEXT_ON[idx]);
        txt.setAttribute("class", level >= max && level > 0 ? "alarm" : "");
        txt.querySelector(".lvl").textContent = level > 0 ? `${t("level")} ${level}` : "";
      }
    });
    $("map-desc").textContent = `${t("map_desc")}: ${t("hz_" + hazard)}`;
    const legend = $("legend");
    legend.replaceChildren();
    for (let lv = 0; lv <= max; lv++) {
      const idx = scaleIndex(lv, hazard);
      const li = el("li", {});
      const sw = el("span", { className: "swatch" + (lv === max && lv > 0 ? " hatch" : ""), "aria-hidden": "true" });
      sw.style.background = SCALE[idx];
      li.append(sw, el("span", {}, lv === 0 ? `0 ${t("level0")}` : `${lv}${lv === max ? " " + t("alarm") : ""}`));
      legend.appendChild(li);
    }
    if (feats.some((f) => f.properties.watched === false)) {
      const sw = el("span", { className: "swatch", "aria-hidden": "true" });
      sw.style.background = ELSEWHERE;
      const li = el("li", {});
      li.append(sw, el("span", {}, t("elsewhere_district")));
      legend.appendChild(li);
    }
    document.querySelectorAll('#hazard-select input').forEach((i) => { i.checked = i.value === hazard; });
  }

  // ---------- alerts ----------
  function trendCell(trend) {
    const arrow = { rising: "↑", falling: "↓", steady: "→" }[trend] || "";
    const td = el("td", { className: "trend " + (trend || "") });
    td.append(el("span", { "aria-hidden": "true" }, arrow + " "), el("span", {}, t(trend || "steady")));
    return td;
  }
  function renderAlerts() {
    const body = $("alerts");
    const alerts = (state.alerts || []).slice().sort((a, b) =>
      (b.level / maxLevel(b.hazard)) - (a.level / maxLevel(a.hazard)) ||
      (HAZARD_ORDER[a.hazard] ?? 9) - (HAZARD_ORDER[b.hazard] ?? 9) || String(b.time).localeCompare(String(a.time)));
    body.replaceChildren();
    const a = auth();
    alerts.forEach((al) => {
      const idx = scaleIndex(al.level, al.hazard);
      const tr = el("tr", { "data-alert-id": al.alert_id, "data-level": al.level, "data-hazard": al.hazard,
        id: "alert-" + al.alert_id,
        className: (al.acked_by ? "acked " : "") + (al.silenced ? "silenced" : "") +
          (location.hash === "#alert-" + al.alert_id ? " linked" : "") });
      const badge = el("span", { className: "badge" + (idx === 4 ? " hatch" : "") }, al.level);
      badge.style.background = SCALE[idx]; badge.style.color = TEXT_ON[idx];
      const lvl = el("td", { className: "level" });
      lvl.append(badge);
      const what = el("td", {});
      what.append(el("strong", {}, t("hz_" + al.hazard) + " "), el("span", {}, quantityName(al.quantity)),
        el("span", { className: "level-name" }, al.level_name || ""));
      const names = (al.district_names && al.district_names.length ? al.district_names : al.districts) || [];
      const val = el("td", { className: "value", title: timeFmt(al.value_at || al.time) });  // as of (refreshed)
      const [shown, limit] = measure(al);
      val.append(el("span", {}, shown), el("span", { className: "muted small" }, " " + limit));
      const ageTd = el("td", { className: "age", "data-since": al.started_at, title: timeFmt(al.started_at) }, age(al.started_at));
      const act = el("td", { className: "actions" });
      if (al.acked_by) {
        act.appendChild(el("span", { className: "acked-by" }, `✓ ${t("acked_by")} ${al.acked_by}`));
      } else {
        act.appendChild(el("button", { type: "button", "data-action": "ack", "data-alert-id": al.alert_id, disabled: !a }, t("ack")));
      }
      if (al.remote) {  // decided elsewhere: acknowledgements are forwarded, silences shared with every instance
        act.appendChild(el("span", { className: "remote-tag muted small" }, " " + t("remote")));
      }
      if (al.silenced) {
        act.appendChild(el("span", { className: "silenced-tag" }, " 🔕 " + t("silenced")));
      } else {
        act.appendChild(el("button", { type: "button", "data-action": "silence", "data-alert-id": al.alert_id, disabled: !a,
          className: "secondary" }, t("silence")));
      }
      const trend = al.hazard === "sensor" ? el("td", { className: "trend" }, "–") : trendCell(al.trend);  // a fault has none
      tr.append(lvl, what, el("td", { className: "districts" }, names.join(", ")), val, trend, ageTd, act);
      body.appendChild(tr);
    });
    $("alert-count").textContent = String(alerts.length);
    $("no-alerts").hidden = alerts.length > 0;
    // announce alerts not seen before (not on the first render: those are the page's starting point)
    const ids = new Set(alerts.map((x) => x.alert_id));
    if (seenAlerts !== null) {
      const fresh = alerts.filter((x) => !seenAlerts.has(x.alert_id));
      if (fresh.length) {
        $("announcer").textContent = fresh.map((x) => `${t("new_alert")}: ${t("hz_" + x.hazard)} ${t("level")} ${x.level} ${x.level_name || ""} – ${((x.district_names || x.districts) || []).join(", ")}`).join(". ");
      }
    }
    // opened from a notification's link (#alert-<id>): that alert's row once it is there
    if (!scrolledToLink && location.hash.startsWith("#alert-")) {
      const row = document.getElementById(location.hash.slice(1));
      if (row) { row.scrollIntoView({ block: "center" }); scrolledToLink = true; }
    }
    seenAlerts = new Set([...(seenAlerts || []), ...ids]);
  }

  // ---------- sensor health and timeline ----------
  function renderHealth() {
    const list = $("health");
    const items = state.sensor_health || [];
    list.replaceChildren();
    items.forEach((h) => {
      const li = el("li", { "data-sensor-id": h.sensor_id, "data-kind": h.kind, className: "kind-" + h.kind });
      li.append(el("span", { className: "tag" }, quantityName(h.kind)),
        ...(h.sensor_name ? [el("span", { className: "sensor-name" }, h.sensor_name + " ")] : []),
        el("code", {}, h.sensor_id),
        el("span", {}, ` ${h.district ? "(" + (h.district_name || h.district) + ") " : ""}${t(h.kind)}, ${t("since")} ${timeFmt(h.since)}`));
      list.appendChild(li);
    });
    $("health-count").textContent = String(items.length);
    $("no-health").hidden = items.length > 0;
  }
  function renderTimeline() {
    const list = $("timeline");
    const items = state.timeline || [];
    list.replaceChildren();
    items.slice(0, 100).forEach((r) => {
      const idx = scaleIndex(r.level, r.hazard);
      const li = el("li", { "data-alert-id": r.alert_id, className: "ev-" + r.event });
      const badge = el("span", { className: "badge small" }, r.level);
      badge.style.background = SCALE[idx]; badge.style.color = TEXT_ON[idx];
      const names = (r.district_names && r.district_names.length ? r.district_names : r.districts) || [];
      li.append(el("time", { datetime: r.time }, timeFmt(r.time)), badge,
        el("span", { className: "ev" }, t(r.event)),
        el("span", {}, ` ${t("hz_" + r.hazard)} ${quantityName(r.quantity)} ${r.level_name || ""} – ${names.join(", ")} – ${measure(r)[0]}`));
      list.appendChild(li);
    });
    $("no-timeline").hidden = items.length > 0;
  }

  function render() {
    if (!lang) lang = state.language === "en" ? "en" : "de";
    $("banner-exercise").hidden = !state.exercise;
    $("banner-approximate").hidden = !state.approximate;
    const elsewhere = state.elsewhere || [];
    const total = ((state.districts && state.districts.features) || []).length;
    $("banner-elsewhere").hidden = elsewhere.length === 0;
    $("banner-elsewhere").textContent = fmt(state.elsewhere_shown ? "elsewhere_shown" : "elsewhere",
      { n: total - elsewhere.length, total });
    const asOf = state.now || state.generated_at; // the situation's time (in the demo: the story clock)
    $("generated-at").textContent = asOf ? timeFmt(asOf) : "";
    drawMap(state.districts);
    colourMap();
    renderAlerts();
    renderHealth();
    renderTimeline();
    renderSilences();
    renderLogin();
  }
  function setState(s) {
    const first = !state;
    state = s;
    const now = s.now ? new Date(s.now).getTime() : NaN;
    clockOffset = Number.isNaN(now) ? 0 : now - Date.now();
    if (first && !store.getItem("stadtwacht.lang")) { lang = s.language === "en" ? "en" : "de"; applyLanguage(); }
    render();
    loadSilences(false);
  }

  // ---------- silences ----------
  async function loadSilences(force) {
    if (!auth()) { silences = null; renderSilences(); return; }
    if (!force && Date.now() - silencesAt < 5000) return;
    silencesAt = Date.now();
    try {
      const res = await api("GET", "/api/silences");
      silences = (res && res.silences) || [];
    } catch (err) { showError(err.message); }
    renderSilences();
  }
  function renderSilences() {
    const block = $("silences-block");
    block.hidden = !auth() || silences === null;
    if (block.hidden) return;
    const names = new Map(((state && state.districts && state.districts.features) || []).map((f) => [f.properties.id, f.properties.name]));
    const active = silences.filter((s) => s.active !== false); // ended ones stay stored until removed
    const list = $("silences");
    list.replaceChildren();
    active.forEach((s) => {
      const li = el("li", { "data-silence-id": s.id });
      const where = [...(s.districts || []).map((d) => names.get(d) || d), ...(s.sensors || [])].join(", ");
      const parts = [where, s.hazard ? t("hz_" + s.hazard) : t("all_hazards"),
        s.max_level === null || s.max_level === undefined ? t("all_levels") : fmt("up_to_level", { n: s.max_level }),
        s.ends ? `${t("until")} ${timeFmt(s.ends)}` : t("until_removed")];
      if (s.created_by) parts.push(`${t("by")} ${s.created_by}`);
      li.append(el("span", { className: "what" }, "🔕 " + parts.join(" – ")));
      if (s.source !== "config") {  // the configuration's come back at the next start: lifted there
        li.append(el("button", { type: "button", className: "secondary", "data-unsilence": s.id }, t("unsilence")));
      }
      list.appendChild(li);
    });
    $("silence-count").textContent = String(active.length);
    $("no-silences").hidden = active.length > 0;
  }
  async function onUnsilence(ev) {
    const b = ev.target.closest("button[data-unsilence]");
    if (!b || b.disabled) return;
    const id = b.dataset.unsilence;
    b.disabled = true;
    try {
      const res = await api("DELETE", `/api/silences/${encodeURIComponent(id)}`);
      $("action-status").textContent = `${t("unsilence_ok")}: ${id}`;
      if (res && res.shared === false) showError(res.warning);  // lifted here only: the other instances lack it
      silences = (silences || []).filter((s) => s.id !== id);
      renderSilences();
    } catch (err) {
      showError(err.message);
      b.disabled = false;
    }
    loadSilences(true);
  }

  // ---------- actions ----------
  async function api(method, url, body) {
    const a = auth();
    if (!a) return null;
    const opts = { method, headers: { Authorization: "Bearer " + a.token } };
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    const res = await fetch(url, opts);
    if (res.status === 401) {
      store.removeItem("stadtwacht.token");
      silences = null;
      renderLogin();
      renderSilences();
      throw new Error(t("unauthorized"));
    }
    if (!res.ok) {
      const err = new Error(`${t("failed")}: HTTP ${res.status} ${await res.text().catch(() => "")}`.trim());
      err.status = res.status;
      throw err;
    }
    return res.json().catch(() => ({}));
  }
  function post(url, body) { return api("POST", url, body); }
  async function onAction(ev) {
    const b = ev.target.closest("button[data-action]");
    if (!b || b.disabled) return;
    const a = auth();
    const id = b.dataset.alertId;
    const al = (state.alerts || []).find((x) => x.alert_id === id);
    const status = $("action-status");
    b.disabled = true;
    try {
      if (b.dataset.action === "ack") {
        // the level shown: when it has risen since, the API refuses (409): a new level needs its own acknowledgement
        const res = await post(`/api/alerts/${encodeURIComponent(id)}/ack`,
          al ? { operator: a.operator, level: al.level } : { operator: a.operator });
        status.textContent = `${t(res && res.forwarded ? "ack_forwarded" : "ack_ok")}: ${id}`;
        if (al) { al.acked_by = a.operator; al.acked_at = new Date().toISOString(); renderAlerts(); }
      } else {
        const duration = $("silence-duration").value;
        // alerting/api.py: {"districts": [...], "sensors": [...], "hazard", "duration", "comment", "created_by",
        // "max_level"} -> 201. Up to the row's level: a rise above it breaks through the silence.
        if (!al || !(al.districts || []).length) throw new Error(t("unknown_district"));  // never a city-wide silence
        const res = await post("/api/silences", { districts: al.districts, hazard: al.hazard || "", max_level: al.level,
          duration, comment: `${t("silence")}: ${al.hazard}/${al.quantity} ${id}`, created_by: a.operator });
        status.textContent = `${t("silence_ok")}: ${(al.district_names || al.districts).join(", ")} (${duration}, ${fmt("up_to_level", { n: al.level })})`;
        if (res && res.shared === false) showError(res.warning);  // held here only: the other instances lack it
        al.silenced = true; renderAlerts();
        loadSilences(true);
      }
    } catch (err) {
      showError(err.status === 409 && b.dataset.action === "ack" ? t("level_rose") : err.message);
      b.disabled = false;
    }
  }
  function showError(msg) {
    const e = $("error");
    e.textContent = msg; e.hidden = !msg;
    if (msg) setTimeout(() => { if (e.textContent === msg) { e.hidden = true; } }, 8000);
  }

  // ---------- live connection ----------
  function setConn(s) {
    $("conn").dataset.state = s;
    $("conn-text").textContent = t(s === "live" ? "live" : s === "offline" ? "offline" : "connecting");
  }
  async function load() {
    try {
      const res = await fetch("/api/state", { cache: "no-store" });
      if (res.ok) setState(await res.json());
    } catch (e) { setConn("offline"); }
  }
  function connect() {
    if (!window.EventSource) { setInterval(load, 2000); return; }
    const es = new EventSource("/events");
    es.addEventListener("open", () => setConn("live"));
    es.addEventListener("state", (m) => { setConn("live"); try { setState(JSON.parse(m.data)); } catch (e) { /* partial */ } });
    es.addEventListener("error", () => setConn("offline")); // EventSource reconnects by itself
  }

  function init() {
    lang = lang || "de";
    applyLanguage();
    renderLogin();
    $("lang-toggle").addEventListener("click", () => {
      lang = lang === "de" ? "en" : "de"; store.setItem("stadtwacht.lang", lang); applyLanguage();
    });
    $("hazard-select").addEventListener("change", (e) => {
      if (e.target.name === "hazard") { hazard = e.target.value; store.setItem("stadtwacht.hazard", hazard); if (state) colourMap(); }
    });
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      store.setItem("stadtwacht.operator", $("login-operator").value.trim());
      store.setItem("stadtwacht.token", $("login-token").value);
      $("login-token").value = "";
      showError("");
      renderLogin();
      if (state) renderAlerts();
      loadSilences(true);
    });
    $("logout").addEventListener("click", () => {
      store.removeItem("stadtwacht.token"); store.removeItem("stadtwacht.operator"); renderLogin();
      silences = null; renderSilences();
      if (state) renderAlerts();
    });
    $("alerts").addEventListener("click", onAction);
    $("silences").addEventListener("click", onUnsilence);
    setInterval(() => loadSilences(false), 15000);  // silences end by themselves
    setInterval(() => document.querySelectorAll("#alerts td.age").forEach((td) => { td.textContent = age(td.dataset.since); }), 1000);
    load().then(connect);
  }
  document.addEventListener("DOMContentLoaded", init);
})();
