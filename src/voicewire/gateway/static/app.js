// The voicewire demo page: one WebRTC call to the gateway, its live stats and its event log.
//
// Signaling is the OpenAI Realtime WebRTC convention (DESIGN §6): POST the offer SDP to
// /v1/realtime/calls, get 201 with the answer SDP and a Location naming the call; DELETE that
// Location to hang up. The server is ICE-lite with one host candidate in its answer and learns
// our address from our STUN checks (RFC 8445 §2.5), so the offer goes out at once, before ICE
// gathering finishes: waiting for candidates would only add latency.
//
// For tests, window.voicewire = {connect(), hangup(), pc, stats, events, setupMs}: connect()
// resolves once the answer is applied (then watch pc.connectionState), or rejects with the
// message the page shows; events holds the latest 200 data-channel messages, oldest first.
"use strict";

(() => {
  const CALLS_URL = "/v1/realtime/calls";
  const SECRETS_URL = "/v1/realtime/client_secrets";
  const STATS_INTERVAL_MS = 500;
  const CHART_WINDOW_MS = 60_000;
  const MAX_EVENTS = 200;
  const DELETE_TIMEOUT_MS = 2000;
  // Chromium may stay "connecting" for good when no check gets an answer (the answer never
  // said it had no more candidates): give up on our own this long after applying the answer.
  const CONNECT_TIMEOUT_MS = 15_000;
  const NO_MEDIA_PATH = "No media path to the server: its UDP address is unreachable from here";

  const byId = (id) => document.getElementById(id);
  const ui = {
    connect: byId("connect"),
    hangup: byId("hangup"),
    state: byId("state"),
    setup: byId("setup-ms"),
    error: byId("error"),
    audio: byId("remote-audio"),
    chart: byId("chart"),
    events: byId("events"),
    eventCount: byId("event-count"),
    rtt: byId("stat-rtt"),
    remoteRtt: byId("stat-remote-rtt"),
    jitter: byId("stat-jitter"),
    packetsReceived: byId("stat-packets-received"),
    packetsLost: byId("stat-packets-lost"),
    packetsSent: byId("stat-packets-sent"),
    level: byId("stat-level"),
  };

  // One call at a time. A call holds everything hangup must undo; `closed` tells the steps of
  // a setup still in flight that the user hung up meanwhile.
  let call = null;
  let lastPc = null;
  let latestStats = null;
  let setupMs = null;
  let eventsReceived = 0;
  const events = []; // oldest first, the latest MAX_EVENTS
  const samples = []; // chart points {t, rtt, jitter, level} over the last CHART_WINDOW_MS

  class CallAborted extends Error {}

  function connect() {
    return (call || startCall()).ready;
  }

  function startCall() {
    const c = {
      pc: null,
      dc: null,
      mic: null,
      location: null,
      timer: 0,
      deadline: 0,
      sampling: false,
      closed: false,
      abort: new AbortController(),
      startedAt: performance.now(),
    };
    call = c;
    clearError();
    setupMs = null;
    latestStats = null;
    samples.length = 0;
    ui.setup.textContent = "–";
    renderStats(null);
    drawChart();
    setState("connecting");
    c.ready = setUp(c).catch((err) => {
      if (!c.closed) {
        showError(err.message);
        finish(c, "idle");
      }
      throw err;
    });
    return c;
  }

  // The page mints a short-lived key and calls with it, as an OpenAI Realtime web client does
  // with the key its backend mints. An open server (voicewire serve without VOICEWIRE_API_KEYS)
  // mints for anyone; one with API keys refuses, and the page says so.
  async function mintKey(signal) {
    const response = await fetch(SECRETS_URL, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ expires_after: { anchor: "created_at", seconds: 60 } }),
      signal,
    });
    if (!response.ok) throw new Error(await refusal(response));
    return (await response.json()).value;
  }

  async function setUp(c) {
    const key = mintKey(c.abort.signal); // in parallel with the microphone prompt
    key.catch(() => {}); // awaited below; don't report it twice
    let mic;
    try {
      mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      throw new Error(`Microphone unavailable: ${err.message || err.name}`);
    }
    c.mic = mic;
    if (c.closed) throw new CallAborted("hung up");

    // No ICE servers: the server's answer carries a host candidate we can reach directly.
    const pc = new RTCPeerConnection();
    c.pc = lastPc = pc;
    pc.onconnectionstatechange = () => onConnectionState(c);
    pc.ontrack = (event) => {
      // event.streams may be empty (the answer need not carry an msid): build our own stream.
      ui.audio.srcObject = new MediaStream([event.track]);
      ui.audio.play().catch(() => {}); // autoplay may be refused before a gesture; Connect is one
    };
    for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
    // Created before the offer so that the offer has an application (SCTP) section.
    c.dc = pc.createDataChannel("oai-events");
    c.dc.binaryType = "arraybuffer";
    c.dc.onmessage = (event) => logEvent(event.data);

    await pc.setLocalDescription(await pc.createOffer());
    let bearer;
    try {
      bearer = await key;
    } catch (err) {
      if (c.closed) throw new CallAborted("hung up");
      throw err;
    }
    let response;
    try {
      response = await fetch(CALLS_URL, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${bearer}` },
        body: pc.localDescription.sdp,
        signal: c.abort.signal,
      });
    } catch (err) {
      if (c.closed) throw new CallAborted("hung up");
      throw new Error(`Could not reach the server: ${err.message}`);
    }
    if (!response.ok) throw new Error(await refusal(response));
    const location = response.headers.get("Location");
    if (!location) throw new Error("The server's answer has no Location header: cannot hang up");
    const href = new URL(location, response.url).href;
    let answer;
    try {
      answer = await response.text();
    } catch (err) {
      if (!c.closed) throw new Error(`Could not read the server's answer: ${err.message}`);
    }
    if (c.closed) {
      deleteCall(href); // the call exists on the server now: end it there too
      throw new CallAborted("hung up");
    }
    c.location = href;
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
    } catch (err) {
      deleteCall(c.location);
      c.location = null;
      throw new Error(`The server's answer was not accepted: ${err.message}`);
    }
    c.timer = setInterval(() => sampleStats(c), STATS_INTERVAL_MS);
    if (pc.connectionState !== "connected") {
      c.deadline = setTimeout(() => {
        showError(`${NO_MEDIA_PATH} (not connected after ${CONNECT_TIMEOUT_MS / 1000} s)`);
        finish(c, "failed");
      }, CONNECT_TIMEOUT_MS);
    }
  }

  // The gateway explains refusals as {"error": {"type", "message"}} (DESIGN §6).
  async function refusal(response) {
    const status = `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
    try {
      const { error } = await response.json();
      if (error && error.message) {
        return `The server refused the call: ${error.message} (${status}${
          error.type ? ", " + error.type : ""
        })`;
      }
    } catch {
      // Not JSON: the status line is all there is.
    }
    return `The server refused the call (${status})`;
  }

  function onConnectionState(c) {
    if (call !== c) return;
    const state = c.pc.connectionState;
    setState(state);
    if (state === "connected" && setupMs === null) {
      clearTimeout(c.deadline);
      setupMs = Math.round(performance.now() - c.startedAt);
      ui.setup.textContent = `${setupMs} ms`;
      sampleStats(c);
    } else if (state === "failed") {
      showError(`The connection failed. ${NO_MEDIA_PATH}`);
      finish(c, "failed");
    } else if (state === "closed") {
      finish(c, "closed");
    }
  }

  function hangup() {
    return call ? finish(call, "closed") : Promise.resolve();
  }

  // Stop at once what the user hears and sends, tell the server, then close the connection:
  // the DELETE reaches a live call rather than racing the DTLS close_notify.
  async function finish(c, finalState) {
    if (c.closed) return;
    c.closed = true;
    if (call === c) call = null;
    c.abort.abort();
    clearTimeout(c.deadline);
    clearInterval(c.timer);
    if (c.mic) for (const track of c.mic.getTracks()) track.stop();
    ui.audio.srcObject = null;
    setState(finalState === "idle" ? "idle" : "closing");
    if (c.location) await deleteCall(c.location);
    if (c.dc) c.dc.close();
    if (c.pc) c.pc.close();
    if (call === null) setState(finalState);
  }

  function deleteCall(location, keepalive = false) {
    return fetch(location, {
      method: "DELETE",
      keepalive,
      signal: AbortSignal.timeout(DELETE_TIMEOUT_MS),
    }).catch(() => {}); // the server ends the call anyway when consent checks stop (RFC 7675)
  }

  // ---- stats -------------------------------------------------------------------------------

  async function sampleStats(c) {
    if (c.closed || c.sampling) return;
    c.sampling = true;
    try {
      const report = await c.pc.getStats();
      if (c.closed) return;
      latestStats = readStats(report, c.pc, latestStats);
      renderStats(latestStats);
      const now = performance.now();
      samples.push({
        t: now,
        rtt: latestStats.rttMs ?? latestStats.remoteRttMs,
        jitter: latestStats.jitterMs,
        level: latestStats.level,
      });
      while (samples.length && samples[0].t < now - CHART_WINDOW_MS) samples.shift();
      drawChart();
    } catch {
      // The connection closed under us: the next call starts afresh.
    } finally {
      c.sampling = false;
    }
  }

  function readStats(report, pc, previous) {
    let pair = null;
    let inbound = null;
    let outbound = null;
    let remoteInbound = null;
    for (const s of report.values()) {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        pair = report.get(s.selectedCandidatePairId) || pair;
      } else if (s.kind === "audio" || s.mediaType === "audio") {
        if (s.type === "inbound-rtp") inbound = s;
        else if (s.type === "outbound-rtp") outbound = s;
        else if (s.type === "remote-inbound-rtp") remoteInbound = s;
      }
    }
    if (!pair) {
      for (const s of report.values()) {
        if (s.type === "candidate-pair" && (s.selected || (s.nominated && s.state === "succeeded"))) {
          pair = s;
        }
      }
    }
    const ms = (seconds) => (typeof seconds === "number" ? seconds * 1000 : null);
    const stats = {
      timestamp: Date.now(),
      connectionState: pc.connectionState,
      iceConnectionState: pc.iceConnectionState,
      rttMs: ms(pair && pair.currentRoundTripTime),
      remoteRttMs: ms(remoteInbound && remoteInbound.roundTripTime),
      jitterMs: ms(inbound && inbound.jitter),
      packetsReceived: inbound ? inbound.packetsReceived : 0,
      packetsLost: inbound ? inbound.packetsLost : 0,
      packetsSent: outbound ? outbound.packetsSent : 0,
      audioLevel: inbound && typeof inbound.audioLevel === "number" ? inbound.audioLevel : null,
      totalAudioEnergy: inbound ? inbound.totalAudioEnergy : undefined,
      totalSamplesDuration: inbound ? inbound.totalSamplesDuration : undefined,
      level: null,
    };
    // RMS level over the last interval from the energy counters (the webrtc-stats definition of
    // totalAudioEnergy); audioLevel, a recent peak, when they are missing or have not moved.
    const duration = previous && stats.totalSamplesDuration - previous.totalSamplesDuration;
    if (duration > 0) {
      const energy = stats.totalAudioEnergy - previous.totalAudioEnergy;
      stats.level = Math.sqrt(Math.max(energy, 0) / duration);
    } else {
      stats.level = stats.audioLevel;
    }
    return stats;
  }

  function renderStats(s) {
    const fmt = (value, unit, digits = 1) =>
      typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(digits)}${unit}` : "–";
    ui.rtt.textContent = fmt(s && s.rttMs, " ms");
    ui.remoteRtt.textContent = fmt(s && s.remoteRttMs, " ms");
    ui.jitter.textContent = fmt(s && s.jitterMs, " ms");
    ui.packetsReceived.textContent = fmt(s && s.packetsReceived, "", 0);
    ui.packetsLost.textContent = fmt(s && s.packetsLost, "", 0);
    ui.packetsSent.textContent = fmt(s && s.packetsSent, "", 0);
    ui.level.textContent = fmt(s && s.level, "", 3);
  }

  // ---- chart -------------------------------------------------------------------------------
  // Two bands sharing the time axis: RTT and jitter in milliseconds on top, the inbound level
  // (0..1) below. Colours come from CSS custom properties so the page theme owns them.

  function drawChart() {
    const canvas = ui.chart;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);

    const css = getComputedStyle(canvas);
    const color = (name) => css.getPropertyValue(name).trim() || "#888";
    const font = `11px ${css.fontFamily}`;
    const left = 34;
    const right = width - 6;
    const msBand = { top: 8, bottom: Math.round(height * 0.55) };
    const levelBand = { top: msBand.bottom + 22, bottom: height - 18 };
    const now = performance.now();
    const x = (t) => right - ((now - t) / CHART_WINDOW_MS) * (right - left);

    const msMax = niceCeiling(Math.max(5, ...samples.map((p) => Math.max(p.rtt || 0, p.jitter || 0))));
    const yMs = (v) => msBand.bottom - (v / msMax) * (msBand.bottom - msBand.top);
    const yLevel = (v) => levelBand.bottom - Math.min(v, 1) * (levelBand.bottom - levelBand.top);

    g.font = font;
    g.lineWidth = 1;
    g.strokeStyle = color("--chart-grid");
    g.fillStyle = color("--chart-ink");
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const v of [0, msMax / 2, msMax]) {
      hline(g, left, right, yMs(v));
      g.fillText(`${v}`, left - 4, yMs(v));
    }
    for (const v of [0, 1]) {
      hline(g, left, right, yLevel(v));
      g.fillText(`${v}`, left - 4, yLevel(v));
    }
    g.textBaseline = "bottom";
    for (const [seconds, align] of [[60, "left"], [30, "center"], [0, "right"]]) {
      g.textAlign = align;
      g.fillText(seconds ? `-${seconds} s` : "now", x(now - seconds * 1000), height);
    }

    let points = 0;
    g.lineWidth = 1.5;
    g.lineJoin = "round";
    points += series(g, samples, "rtt", x, yMs, color("--chart-rtt"));
    points += series(g, samples, "jitter", x, yMs, color("--chart-jitter"));
    points += series(g, samples, "level", x, yLevel, color("--chart-level"), levelBand.bottom);
    if (!samples.length) {
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.fillText("no call yet", (left + right) / 2, (msBand.top + msBand.bottom) / 2);
    }
    canvas.dataset.points = String(points); // for tests: how many values the last frame drew
  }

  function hline(g, x0, x1, y) {
    g.beginPath();
    g.moveTo(x0, Math.round(y) + 0.5);
    g.lineTo(x1, Math.round(y) + 0.5);
    g.stroke();
  }

  // One line per key, broken where a value is missing; filled down to `fillTo` when given.
  function series(g, points, key, x, y, stroke, fillTo) {
    let drawn = 0;
    let run = [];
    const flush = () => {
      if (!run.length) return;
      g.beginPath();
      run.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
      if (run.length === 1) g.lineTo(run[0][0] + 1, run[0][1]);
      g.strokeStyle = stroke;
      g.stroke();
      if (fillTo !== undefined) {
        g.lineTo(run[run.length - 1][0], fillTo);
        g.lineTo(run[0][0], fillTo);
        g.closePath();
        g.globalAlpha = 0.25;
        g.fillStyle = stroke;
        g.fill();
        g.globalAlpha = 1;
      }
      drawn += run.length;
      run = [];
    };
    for (const p of points) {
      const v = p[key];
      if (typeof v === "number" && Number.isFinite(v)) run.push([x(p.t), y(v)]);
      else flush();
    }
    flush();
    return drawn;
  }

  // The smallest 1, 2 or 5 × 10^n at or above v.
  function niceCeiling(v) {
    const power = 10 ** Math.floor(Math.log10(v));
    for (const step of [1, 2, 5, 10]) if (step * power >= v) return step * power;
    return 10 * power;
  }

  // ---- event log ---------------------------------------------------------------------------

  function logEvent(data) {
    let body;
    let type = "";
    let value = data;
    if (typeof data === "string") {
      try {
        value = JSON.parse(data);
        body = JSON.stringify(value, null, 2);
        if (value && typeof value.type === "string") type = value.type;
      } catch {
        body = data;
      }
    } else {
      body = `<binary, ${data.byteLength} bytes>`;
    }
    const at = new Date();
    events.push({ at: at.toISOString(), data: value });
    if (events.length > MAX_EVENTS) events.shift();
    eventsReceived += 1;

    const item = document.createElement("li");
    const head = document.createElement("div");
    head.className = "event-head";
    const time = document.createElement("time");
    time.dateTime = at.toISOString();
    const millis = String(at.getMilliseconds()).padStart(3, "0");
    time.textContent = `${at.toLocaleTimeString([], { hour12: false })}.${millis}`;
    const name = document.createElement("span");
    name.className = "event-type";
    name.textContent = type || `#${eventsReceived}`;
    head.append(time, name);
    const pre = document.createElement("pre");
    pre.textContent = body;
    item.append(head, pre);
    ui.events.prepend(item);
    while (ui.events.childElementCount > MAX_EVENTS) ui.events.lastElementChild.remove();
    ui.eventCount.textContent = String(eventsReceived);
  }

  // ---- page --------------------------------------------------------------------------------

  function setState(state) {
    ui.state.textContent = state;
    ui.state.dataset.state = state;
    const active = call !== null;
    const moveFocus = document.activeElement === (active ? ui.connect : ui.hangup);
    ui.connect.disabled = active;
    ui.hangup.disabled = !active;
    if (moveFocus) (active ? ui.hangup : ui.connect).focus();
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.textContent = "";
    ui.error.hidden = true;
  }

  ui.connect.addEventListener("click", () => connect().catch(() => {})); // shown on the page
  ui.hangup.addEventListener("click", () => hangup());
  // Leaving the page ends the call on the server now rather than at the consent timeout.
  window.addEventListener("pagehide", () => {
    if (call && call.location) deleteCall(call.location, true);
  });
  new ResizeObserver(() => drawChart()).observe(ui.chart);
  drawChart();

  window.voicewire = Object.freeze({
    connect,
    hangup,
    get pc() {
      return call && call.pc ? call.pc : lastPc;
    },
    get stats() {
      return latestStats;
    },
    events,
    get setupMs() {
      return setupMs;
    },
  });
})();
