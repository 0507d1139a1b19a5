// edged's page: the displays drawn as LEDs from the live stream, their controls, plugins, sensors and problems.
// Served by the daemon itself; no library, no CDN.
"use strict";

const edged = (window.edged = { frames: {}, csrf: sessionStorage.getItem("edged-csrf") || "", state: null });
const $ = (sel, root = document) => root.querySelector(sel);
const cards = {};
let previousCalls = {};
let previousAt = 0;
let stream = null;

function say(text) {
  $("#message").textContent = text || "";
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (edged.csrf) headers["X-CSRF-Token"] = edged.csrf;
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let doc = null;
  try {
    doc = await res.json();
  } catch (e) {
    doc = null;
  }
  if (res.status === 401) {
    $("#login").hidden = false;
  }
  if (!res.ok) {
    const text = (doc && doc.error) || `${res.status} ${res.statusText}`;
    say(text);
    throw new Error(text);
  }
  return doc;
}

function pitch(d) {
  return Math.max(6, Math.min(24, Math.floor(480 / Math.max(d.width, d.height))));
}

function card(d) {
  if (cards[d.name]) return cards[d.name];
  const node = $("#display-template").content.firstElementChild.cloneNode(true);
  node.dataset.display = d.name;
  $(".name", node).textContent = d.name;
  const canvas = $("canvas", node);
  const p = pitch(d);
  canvas.width = d.width * p;
  canvas.height = d.height * p;
  canvas.dataset.pitch = p;
  const post = (what, body) => api("POST", `/api/displays/${encodeURIComponent(d.name)}/${what}`, body).then(refresh);
  const slider = $(".brightness", node);
  slider.addEventListener("input", () => ($(".brightness-value", node).textContent = slider.value));
  slider.addEventListener("change", () => post("brightness", { brightness: Number(slider.value) }).catch(() => {}));
  $(".power", node).addEventListener("change", (e) => post("power", { on: e.target.checked }).catch(() => {}));
  $(".next", node).addEventListener("click", () => post("next", {}).catch(() => {}));
  $(".playlist", node).addEventListener("change", (e) =>
    post("playlist", { playlist: e.target.value }).catch(() => {}),
  );
  $("#displays").appendChild(node);
  cards[d.name] = node;
  return node;
}

function draw(frame) {
  const node = cards[frame.display];
  if (!node) return;
  const canvas = $("canvas", node);
  const p = Number(canvas.dataset.pitch);
  const w = frame.width;
  const h = frame.height;
  if (canvas.width !== w * p || canvas.height !== h * p) {
    canvas.width = w * p;
    canvas.height = h * p;
  }
  const raw = atob(frame.rgb);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const r = p * 0.42;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const cx = x * p + p / 2;
      const cy = y * p + p / 2;
      ctx.beginPath();
      ctx.arc(cx, cy, r, 0, 2 * Math.PI);
      ctx.strokeStyle = "#262626";
      ctx.stroke();
      ctx.fillStyle = `rgb(${raw.charCodeAt(i)},${raw.charCodeAt(i + 1)},${raw.charCodeAt(i + 2)})`;
      ctx.fill();
    }
  }
  canvas.dataset.seq = frame.seq;
  edged.frames[frame.display] = { seq: frame.seq, width: w, height: h, rgb: frame.rgb };
}

function openStream() {
  if (stream) stream.close();
  stream = new EventSource("/api/live");
  stream.addEventListener("frame", (e) => draw(JSON.parse(e.data)));
}

function fill(list, items) {
  list.replaceChildren(
    ...items.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }),
  );
}

function render(state) {
  edged.state = state;
  $("#device").textContent = state.device;
  const playlists = Object.keys(state.playlists);
  for (const d of state.displays) {
    const node = card(d);
    const power = $(".power", node);
    if (document.activeElement !== power) power.checked = d.power;
    const slider = $(".brightness", node);
    if (document.activeElement !== slider) {
      slider.value = d.brightness;
      $(".brightness-value", node).textContent = d.brightness;
    }
    const select = $(".playlist", node);
    const first = d.layers[0];
    const names = first && !playlists.includes(first.playlist) ? [first.playlist, ...playlists] : playlists;
    if (select.options.length !== names.length) {
      select.replaceChildren(...names.map((n) => new Option(n, n)));
    }
    if (first && document.activeElement !== select) select.value = first.playlist;
    $(".playing", node).textContent = d.layers.map((l) => `${l.name}: ${l.playing || "-"}`).join(" · ");
  }
  const now = performance.now();
  const calls = {};
  const rows = state.plugins.map((p) => {
    const key = `${p.display}/${p.layer}/${p.plugin}`;
    calls[key] = p.stats.calls || 0;
    const before = previousCalls[key];
    const fps = before === undefined || !previousAt ? "" : ((calls[key] - before) / ((now - previousAt) / 1000)).toFixed(1);
    const tr = document.createElement("tr");
    const cells = [
      p.display || "",
      p.layer || "",
      p.plugin,
      p.version,
      fps,
      p.stats.ms_mean !== undefined ? p.stats.ms_mean.toFixed(2) : "",
      String(p.strikes),
      p.quarantined ? "quarantined" : p.playing ? "playing" : "",
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    if (p.quarantined || p.strikes) tr.children[6].className = "bad";
    tr.dataset.plugin = p.plugin;
    return tr;
  });
  previousCalls = calls;
  previousAt = now;
  $("#plugins tbody").replaceChildren(...rows);
  const sensors = [];
  for (const [plugin, values] of Object.entries(state.sensors)) {
    for (const [key, value] of Object.entries(values)) sensors.push(`${plugin}: ${key} = ${value}`);
  }
  fill($("#sensors"), sensors);
  fill(
    $("#problems"),
    state.problems.map((p) => `${new Date(p.t * 1000).toLocaleTimeString()} ${p.where}: ${p.message}`),
  );
}

async function refresh() {
  const state = await api("GET", "/api/state");
  $("#login").hidden = true;
  render(state);
  if (!stream || stream.readyState === EventSource.CLOSED) openStream();
  return state;
}

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const doc = await api("POST", "/api/session", { token: $("#token").value });
    edged.csrf = doc.csrf;
    sessionStorage.setItem("edged-csrf", doc.csrf);
    $("#token").value = "";
    say("");
    await refresh();
  } catch (err) {
    $("#login").hidden = false;
  }
});

$("#identify").addEventListener("click", () => api("POST", "/api/identify", { seconds: 5 }).catch(() => {}));

async function loop() {
  try {
    await refresh();
  } catch (e) {
    /* shown in #message; the login box when a credential is needed */
  }
  setTimeout(loop, 1000);
}
loop();
