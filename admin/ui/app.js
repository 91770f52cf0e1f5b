// scrimp status page: polls the node's admin API and draws it. Every value
// from the API goes into the page as text (textContent), never as markup.
"use strict";

(function () {
  const POLL_MS = 1500;
  const STATE_ORDER = ["up", "draining", "check-down", "guarded", "down", "refused"];
  const prevStates = new Map(); // "app/node" -> state, to flash changes
  const reqSamples = []; // [time ms, requests] from stub_status, for the rate

  function $(id) { return document.getElementById(id); }

  // el builds an element: el("td", {class: "num"}, "text", child, ...).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function badge(state) { return el("span", { class: "badge s-" + state }, state); }

  // table draws a table; cls gives each column's header class ("num",
  // "hide-narrow"), matching its cells'.
  function table(head, rows, cls) {
    const tr = el("tr", null, ...head.map((h, i) => el("th", { class: (cls || [])[i] || null }, h)));
    return el("div", { class: "scroll" }, el("table", null, el("thead", null, tr), el("tbody", null, ...rows)));
  }

  function replace(id, ...nodes) { $(id).replaceChildren(...nodes); }

  // ago writes how long ago t (ISO text) was: "4 s ago".
  function ago(t) {
    if (!t) return "—";
    const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
    return (s / 86400).toFixed(1) + " d ago";
  }

  function since(t) {
    const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000);
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function clock(t) {
    const d = new Date(t);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  // dur writes a Go duration in nanoseconds.
  function dur(ns) {
    if (!ns) return "—";
    if (ns < 1e6) return (ns / 1e3).toFixed(0) + " µs";
    if (ns < 1e9) return (ns / 1e6).toFixed(ns < 1e7 ? 1 : 0) + " ms";
    return (ns / 1e9).toFixed(2) + " s";
  }

  function bytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
    if (n < 1 << 30) return (n / (1 << 20)).toFixed(1) + " MiB";
    return (n / (1 << 30)).toFixed(2) + " GiB";
  }

  function num(n) { return Number(n).toLocaleString("en-US"); }

  async function get(path) {
    const res = await fetch(path, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
    if (res.status === 401) {
      window.location.assign("/");
      throw new Error("signed out");
    }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(path + ": " + (body.error || "HTTP " + res.status));
    return body;
  }

  function drawNode(st) {
    const parts = [el("span", { class: "name", id: "node-name" }, st.name), badge(st.role === "lb" ? "load balancer" : st.role)];
    const meta = [st.gossip_addr || st["gossip-addr"], "up " + since(st.started)];
    if (st.lb) meta.push(st.lb.proxy + " (" + st.lb.mode + (st.lb["proxy-pid"] ? ", pid " + st.lb["proxy-pid"] : "") + ")");
    if ((st["key-fingerprints"] || []).length) meta.push("gossip key " + st["key-fingerprints"][0]);
    else meta.push("plaintext gossip");
    parts.push(el("span", { class: "meta" }, meta.join(" · ")));
    replace("node", ...parts);
    $("version").textContent = "scrimp " + st.version;
    document.title = st.name + " · scrimp status";
  }

  function tile(label, value, sub, tone) {
    return el("div", { class: "tile" + (tone ? " " + tone : "") },
      el("div", { class: "label" }, label), el("div", { class: /[a-z]/i.test(String(value)) ? "value word" : "value" }, value), sub ? el("div", { class: "sub" }, sub) : null);
  }

  function drawTiles(st, members, apps, proxy) {
    const alive = members.members.filter((m) => m.state === "alive").length;
    const lost = members.members.length - alive;
    let counts = {};
    for (const a of apps.applications) for (const b of a.backends) counts[b.state] = (counts[b.state] || 0) + 1;
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const tiles = [
      tile("Members", alive + " / " + members.members.length, lost ? lost + " not alive" : "all alive", lost ? "warn" : null),
      tile("Applications", apps.applications.length, total + " backend instances"),
      tile("Backends up", counts.up || 0, [
        counts.draining ? counts.draining + " draining" : null,
        (counts.down || 0) + (counts["check-down"] || 0) ? (counts.down || 0) + (counts["check-down"] || 0) + " down" : null,
      ].filter(Boolean).join(" · ") || "none out", total && !counts.up ? "bad" : "good"),
    ];
    if (st.lb) {
      const hist = st.lb.history || [], change = hist[hist.length - 1], last = st.lb.last;
      const failed = (o) => o && (o.result === "rejected" || o.result === "render-failed");
      tiles.push(tile("Last change", change ? change.result : "—",
        (change ? ago(change.at) : "none yet") + (last ? " · checked " + ago(last.at) : ""),
        failed(change) || failed(last) ? "bad" : null));
      tiles.push(tile("Reloads", st.lb.reloads, (st.lb.refused || []).length + " refused · " + st.lb.guarded + " guarded"));
      if (proxy && proxy.available && proxy.nginx) {
        tiles.push(tile("Requests", num(proxy.nginx.requests), rate() + " · " + proxy.nginx.active + " active"));
      } else if (proxy && proxy.available && proxy.servers) {
        const tot = proxy.servers.reduce((a, s) => a + s.total, 0);
        tiles.push(tile("Sessions", num(tot), proxy.servers.reduce((a, s) => a + s.current, 0) + " now"));
      }
    } else if (st.backend) {
      tiles.push(tile("This backend", st.backend.draining ? "draining" : "in service",
        st.backend.draining ? (st.backend.unacknowledged.length ? "waiting for " + st.backend.unacknowledged.join(", ") : "every load balancer acknowledged") : null,
        st.backend.draining ? "warn" : "good"));
    }
    replace("tiles", ...tiles);
  }

  function drawApps(apps) {
    if (!apps.applications.length) {
      replace("apps", el("p", { class: "empty" }, "No application is advertised yet."));
      return;
    }
    const cards = apps.applications.map((a) => {
      const counts = {};
      for (const b of a.backends) counts[b.state] = (counts[b.state] || 0) + 1;
      const states = Object.keys(counts).sort((x, y) => STATE_ORDER.indexOf(x) - STATE_ORDER.indexOf(y));
      const where = [a.protocol, ":" + a["listen-port"]];
      if (a.domains) where.push(a.domains.join(", "));
      if (a.paths) where.push(a.paths.join(", "));
      const bar = el("div", { class: "bar", "aria-hidden": "true" });
      for (const s of states) {
        const seg = el("span", { class: "s-" + s });
        seg.style.width = (100 * counts[s] / a.backends.length) + "%";
        bar.append(seg);
      }
      const rows = a.backends.map((b) => {
        const key = a.name + "/" + b.node;
        const before = prevStates.get(key);
        prevStates.set(key, b.state);
        return el("tr", { class: before && before !== b.state ? "changed" : null, data: { app: a.name, node: b.node, state: b.state } },
          el("td", { class: "nowrap" }, b.node),
          el("td", { class: "mono nowrap hide-narrow" }, b.addr),
          el("td", null, badge(b.state)),
          el("td", { class: "reason" }, b.reason || ""));
      });
      return el("article", { class: "app", data: { app: a.name } },
        el("div", { class: "app-head" },
          el("span", { class: "name" }, a.name),
          el("span", { class: "where" }, where.join(" · ")),
          el("span", { class: "counts" }, ...states.map((s) => el("span", { class: "badge s-" + s }, counts[s] + " " + s)))),
        bar,
        a.backends.length ? table(["Backend", "Address", "State", ""], rows, [null, "hide-narrow", null, null]) : el("p", { class: "empty", style: null }, "no backend"));
    });
    replace("apps", el("div", { class: "apps" }, ...cards));
  }

  function rate() {
    if (reqSamples.length < 2) return "— req/s";
    const [t0, r0] = reqSamples[0], [t1, r1] = reqSamples[reqSamples.length - 1];
    if (t1 <= t0) return "— req/s";
    return ((r1 - r0) / ((t1 - t0) / 1000)).toFixed(1) + " req/s";
  }

  function spark() {
    // requests per interval over the last samples
    const pts = [];
    for (let i = 1; i < reqSamples.length; i++) {
      const dt = (reqSamples[i][0] - reqSamples[i - 1][0]) / 1000;
      pts.push(dt > 0 ? Math.max(0, (reqSamples[i][1] - reqSamples[i - 1][1]) / dt) : 0);
    }
    if (pts.length < 2) return null;
    const max = Math.max(1, ...pts), w = 100, h = 30;
    const xy = pts.map((p, i) => (i * w / (pts.length - 1)).toFixed(1) + "," + (h - p / max * (h - 2) - 1).toFixed(1));
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", "spark");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "requests per second, last minute");
    const area = document.createElementNS(ns, "polygon");
    area.setAttribute("points", "0," + h + " " + xy.join(" ") + " " + w + "," + h);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", xy.join(" "));
    svg.append(area, line);
    return svg;
  }

  function drawProxy(st, proxy, err) {
    if (!st.lb) {
      replace("proxy", el("p", { class: "empty" }, "This node is a backend: ask a load balancer's page for its proxy."));
      return;
    }
    if (err) {
      replace("proxy", el("p", { class: "err" }, err));
      return;
    }
    if (!proxy || !proxy.available) {
      replace("proxy", el("p", { class: "empty" }, (proxy && proxy.reason) || "The proxy reports no counts."));
      return;
    }
    const src = el("p", { class: "muted small" }, "from " + proxy.source);
    if (proxy.nginx) {
      const n = proxy.nginx;
      const kv = (k, v) => el("div", null, el("div", { class: "k" }, k), el("div", { class: "v" }, v));
      replace("proxy",
        el("div", { class: "kv" }, kv("requests", num(n.requests)), kv("rate", rate()), kv("active", n.active),
          kv("reading", n.reading), kv("writing", n.writing), kv("waiting", n.waiting), kv("accepted", num(n.accepts)), kv("handled", num(n.handled))),
        spark(), src);
      return;
    }
    // Empty runtime slots (no node, in maintenance) are not shown.
    const rows = (proxy.servers || []).filter((s) => s.node || s.status !== "MAINT").map((s) => el("tr", { data: { node: s.node || s.server } },
      el("td", { class: "nowrap" }, s.node || s.server),
      el("td", { class: "hide-narrow" }, s.backend),
      el("td", null, badge(s.status.split(" ")[0])),
      el("td", { class: "num" }, s.current),
      el("td", { class: "num" }, num(s.total)),
      el("td", { class: "num hide-narrow" }, bytes(s["bytes-out"]))));
    replace("proxy", rows.length ? table(["Server", "Backend", "Status", "Now", "Total", "Out"], rows, [null, "hide-narrow", null, "num", "num", "num hide-narrow"]) : el("p", { class: "empty" }, "no server"), src);
  }

  function drawHistory(st) {
    if (!st.lb) {
      const b = st.backend;
      const rows = (b.applications || []).map((a) => el("tr", null, el("td", null, a.name), el("td", null, badge(a.state))));
      replace("history", el("p", { class: "muted" }, "A backend does not reload a proxy. Its applications:"), table(["Application", "State"], rows));
      return;
    }
    const hist = (st.lb.history || []).slice().reverse();
    const rows = hist.map((o) => el("tr", { data: { result: o.result } },
      el("td", { class: "nowrap", title: o.at }, clock(o.at)),
      el("td", null, badge(o.result)),
      el("td", { class: "num" }, dur(o.proxy)),
      el("td", { class: "num hide-narrow" }, dur(o.render)),
      el("td", { class: "num hide-narrow" }, dur(o.latency)),
      el("td", { class: "num" }, o.applications + " / " + o.backends),
      el("td", { class: "num hide-narrow" }, bytes(o.bytes)),
      el("td", { class: "err" }, o.error || "")));
    const out = [];
    if (rows.length) out.push(table(["At", "Result", "Proxy", "Render", "Latency", "Apps / nodes", "Size", ""], rows,
      [null, null, "num", "num hide-narrow", "num hide-narrow", "num", "num hide-narrow", null]));
    else out.push(el("p", { class: "empty" }, "No reload yet."));
    const refused = st.lb.refused || [];
    if (refused.length) {
      out.push(el("h2", null, "Refused"));
      out.push(table(["Application", "Node", "Why"], refused.map((r) =>
        el("tr", null, el("td", null, r.application), el("td", null, r.node), el("td", { class: "reason" }, r.reason)))));
    }
    replace("history", ...out);
  }

  function drawMembers(members) {
    const rows = members.members.map((m) => el("tr", { data: { member: m.name, state: m.state } },
      el("td", { class: "nowrap" }, m.name, m.self ? el("span", { class: "self" }, "this node") : null),
      el("td", null, m.role === "lb" ? "load balancer" : m.role),
      el("td", { class: "mono nowrap hide-narrow" }, m.addr),
      el("td", null, badge(m.state)),
      el("td", null, ...(m.applications || []).map((a) => el("span", { class: "chip s-" + a.state, title: a.state }, a.name + (a.state !== "up" ? " (" + a.state + ")" : "")))),
      el("td", { class: "nowrap muted hide-narrow" }, m.since ? "lost " + ago(m.since) : m.self ? "—" : ago(m["last-seen"]))));
    replace("members", table(["Name", "Role", "Address", "State", "Applications", "Last seen"], rows, [null, null, "hide-narrow", null, null, "hide-narrow"]));
  }

  function setLive(ok, text) {
    $("live").dataset.state = ok ? "ok" : "error";
    $("live-text").textContent = text;
    const b = $("banner");
    b.hidden = ok;
    if (!ok) b.textContent = "Cannot reach the node's admin API: " + text + ". Retrying…";
  }

  async function refresh() {
    try {
      const [st, members, apps] = await Promise.all([get("/v1/status"), get("/v1/members"), get("/v1/apps")]);
      let proxy = null, perr = null;
      if (st.lb) {
        try {
          proxy = await get("/v1/proxy");
          if (proxy.available && proxy.nginx) {
            reqSamples.push([Date.now(), proxy.nginx.requests]);
            while (reqSamples.length > 41) reqSamples.shift();
          }
        } catch (e) { perr = e.message; }
      }
      drawNode(st);
      drawTiles(st, members, apps, proxy);
      drawApps(apps);
      drawProxy(st, proxy, perr);
      drawHistory(st);
      drawMembers(members);
      setLive(true, "live · " + clock(new Date()));
      document.body.dataset.loaded = "true";
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    } catch (e) {
      setLive(false, e.message);
    } finally {
      setTimeout(refresh, POLL_MS);
    }
  }

  refresh();
})();
