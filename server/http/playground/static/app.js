// F5-TTS playground: plays /v1/stream audio as it arrives, manages voices, shows the server's status.
// Plain JS, no build step, no external resources. Protocol: docs/protocol.md.
"use strict";

(() => {
  const DEFAULT_RATE = 24000;
  const LEAD_S = 0.08;        // scheduling head room for a stream's first frame (and after an underrun)
  const IDLE_FLUSH_MS = 900;  // type-as-you-go: a pause this long speaks what has been typed so far
  const MAX_ROWS = 20;
  const MAX_RECORD_S = 12;
  const $ = (id) => document.getElementById(id);

  // Counters for people and tests alike (the browser tests read these).
  const pg = {
    samplesScheduled: 0, framesReceived: 0, firstScheduledAt: null, audioEndAt: null, lastAudioEnd: null,
    lastAudioStart: null, underruns: 0, errors: [], authFailed: false, requests: {}, status: null,
    voices: [], lastMessage: "",
  };
  window.playground = pg;

  let socket = null;         // open WebSocket, or null
  let connecting = null;     // Promise<WebSocket> while a handshake is under way
  let audioCtx = null;
  let counter = 0;
  const byStream = new Map();  // stream number (from audio_start) -> request
  const live = { req: null, sent: 0, chain: Promise.resolve(), timer: 0, editNoted: false };

  // -- small helpers --------------------------------------------------------------------------------

  const apiKey = () => $("api-key").value.trim();
  const authHeaders = () => (apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {});

  let messageTimer = 0;
  function showMessage(text, kind = "error") {
    const box = $("message");
    box.textContent = text;
    box.className = `message ${kind}`;
    box.hidden = false;
    pg.lastMessage = text;
    clearTimeout(messageTimer);
    if (kind === "info") messageTimer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  function recordError(code, message, id = null) {
    pg.errors.push({ code, message, id, at: performance.now() });
  }

  function keyProblemText() {
    return apiKey()
      ? "The server rejected the API key (401 unauthorized). Enter the key the server was started with (--api-key)."
      : "This server needs an API key (401 unauthorized): enter it in the API key field above.";
  }

  function authFailed() {
    pg.authFailed = true;
    showMessage(keyProblemText());
    setPill("API key needed", "bad");
  }

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
    if (response.ok) {
      pg.authFailed = false;
      return response.status === 204 ? null : response.json();
    }
    let code = "http_" + response.status;
    let message = response.statusText;
    try {
      const body = await response.json();
      code = body.error?.code || code;
      message = body.error?.message || message;
    } catch { /* not JSON */ }
    if (response.status === 401) authFailed();
    throw new ApiError(response.status, code, message);
  }

  function setPill(text, kind) {
    const pill = $("ready");
    pill.textContent = text;
    pill.className = `pill ${kind}`;
  }

  // -- audio ----------------------------------------------------------------------------------------

  function audio() {
    if (!audioCtx) audioCtx = new AudioContext();
    if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
    return audioCtx;
  }

  function pcmFrom(buffer) {
    // Bytes 8.. are PCM s16le; DataView keeps this right whatever the platform's byte order.
    const view = new DataView(buffer, 8);
    const pcm = new Int16Array(view.byteLength >> 1);
    for (let i = 0; i < pcm.length; i++) pcm[i] = view.getInt16(2 * i, true);
    return pcm;
  }

  // Each frame starts exactly where the previous one of its stream ends, so chunks play without gaps;
  // only when the network falls behind playback does a stream restart a little ahead of "now".
  function schedule(req, pcm) {
    if (pcm.length === 0) return;
    const ctx = audio();
    const buffer = ctx.createBuffer(1, pcm.length, req.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    const now = ctx.currentTime;
    if (req.nextTime === null) {
      req.nextTime = now + LEAD_S;
    } else if (req.nextTime < now) {
      req.underruns++;
      pg.underruns++;
      req.nextTime = now + LEAD_S;
    }
    source.start(req.nextTime);
    req.nextTime += pcm.length / req.sampleRate;
    req.sources.add(source);
    source.onended = () => req.sources.delete(source);
    req.samplesScheduled += pcm.length;
    pg.samplesScheduled += pcm.length;
    if (req.firstScheduledAt === null) {
      req.firstScheduledAt = performance.now();
      pg.firstScheduledAt = req.firstScheduledAt;
      req.clientTtfaMs = req.firstScheduledAt - req.startedAt;
    }
  }

  function wavBlob(chunks, rate) {
    const samples = chunks.reduce((n, c) => n + c.length, 0);
    const out = new DataView(new ArrayBuffer(44 + 2 * samples));
    const text = (offset, s) => { for (let i = 0; i < s.length; i++) out.setUint8(offset + i, s.charCodeAt(i)); };
    text(0, "RIFF"); out.setUint32(4, 36 + 2 * samples, true); text(8, "WAVE");
    text(12, "fmt "); out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
    out.setUint32(24, rate, true); out.setUint32(28, 2 * rate, true); out.setUint16(32, 2, true);
    out.setUint16(34, 16, true); text(36, "data"); out.setUint32(40, 2 * samples, true);
    let offset = 44;
    for (const chunk of chunks) {
      for (let i = 0; i < chunk.length; i++, offset += 2) out.setInt16(offset, chunk[i], true);
    }
    return new Blob([out.buffer], { type: "audio/wav" });
  }

  // -- requests and their table rows -----------------------------------------------------------------

  function newRequest(text, incremental) {
    const id = `r${++counter}-${Date.now().toString(36)}`;
    const req = {
      id, text, incremental, stream: null, sampleRate: DEFAULT_RATE, state: "waiting", startedAt: performance.now(),
      samplesScheduled: 0, framesReceived: 0, firstScheduledAt: null, audioEndAt: null, audioEnd: null,
      clientTtfaMs: null, nextTime: null, underruns: 0, pcm: [], sources: new Set(), wavUrl: null, row: null,
    };
    pg.requests[id] = req;
    addRow(req);
    updateButtons();
    return req;
  }

  function addRow(req) {
    const body = $("requests").tBodies[0];
    const row = body.insertRow(0);
    for (let i = 0; i < 7; i++) row.insertCell();
    const name = document.createElement("span");
    name.textContent = req.incremental ? `${req.id} (typed)` : req.id;
    name.title = req.text;
    row.cells[0].append(name);
    req.row = row;
    while (body.rows.length > MAX_ROWS) {
      const old = body.rows[body.rows.length - 1];
      const gone = Object.values(pg.requests).find((r) => r.row === old);
      if (gone?.wavUrl) URL.revokeObjectURL(gone.wavUrl);
      if (gone) { gone.pcm = []; gone.row = null; }
      old.remove();
    }
    renderRow(req);
  }

  function renderRow(req) {
    if (!req.row) return;
    const cells = req.row.cells;
    cells[1].textContent = req.state;
    cells[1].className = `state-${req.state}`;
    cells[2].textContent = `${(req.samplesScheduled / req.sampleRate).toFixed(2)} s`;
    const end = req.audioEnd;
    cells[3].textContent = end ? `${Math.round(end.ttfa_ms)} ms` : "–";
    cells[4].textContent = end ? `${Math.round(end.latency_ms)} ms` : "–";
    cells[5].textContent = end && end.rtf != null ? end.rtf.toFixed(3) : "–";
    if (req.clientTtfaMs !== null) cells[3].title = `first audio scheduled in this page after ${Math.round(req.clientTtfaMs)} ms`;
    if (req.wavUrl && !cells[6].firstChild) {
      const link = document.createElement("a");
      link.href = req.wavUrl;
      link.download = `${req.id}.wav`;
      link.textContent = "WAV";
      link.setAttribute("aria-label", `Download ${req.id} as WAV`);
      cells[6].append(link);
    }
  }

  function setState(req, state) {
    req.state = state;
    renderRow(req);
    updateButtons();
  }

  const active = () => Object.values(pg.requests).filter((r) => ["waiting", "streaming", "ending"].includes(r.state));
  const lastDone = () => Object.values(pg.requests).filter((r) => r.state === "done" && r.wavUrl).pop();

  function updateButtons() {
    $("cancel").disabled = active().length === 0;
    $("download").disabled = !lastDone();
    $("speak").textContent = $("live-mode").checked ? "End stream" : "Speak";
  }

  function stopRequest(req, state) {
    for (const source of req.sources) { try { source.stop(); } catch { /* not started */ } }
    req.sources.clear();
    if (req.stream !== null) byStream.delete(req.stream);
    if (live.req === req) live.req = null;
    setState(req, state);
  }

  // -- WebSocket ------------------------------------------------------------------------------------

  function streamUrl() {
    const url = new URL("/v1/stream", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (apiKey()) url.searchParams.set("api_key", apiKey());
    return url.toString();
  }

  function connect() {
    if (socket && socket.readyState === WebSocket.OPEN) return Promise.resolve(socket);
    if (connecting) return connecting;
    connecting = new Promise((resolve, reject) => {
      const ws = new WebSocket(streamUrl());
      ws.binaryType = "arraybuffer";
      let opened = false;
      ws.onopen = () => { opened = true; socket = ws; connecting = null; resolve(ws); };
      ws.onmessage = (event) => (typeof event.data === "string" ? onText(event.data) : onAudio(event.data));
      ws.onclose = (event) => {
        if (socket === ws) socket = null;
        if (!opened) { connecting = null; reject(new Error("handshake failed")); return; }
        for (const req of active()) {
          recordError("closed", `connection closed (${event.code})`, req.id);
          stopRequest(req, "failed");
        }
        if (event.code !== 1000 && event.code !== 1005) {
          showMessage(`The connection closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""}).`);
        }
      };
    });
    return connecting;
  }

  // A refused handshake is invisible to page code (no status, no body): ask over HTTP why.
  async function explainConnectFailure() {
    try {
      await api("/v1/status");
      showMessage("Could not open the WebSocket /v1/stream (the server answers HTTP, so a proxy may block WebSockets).");
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        showMessage(`Could not reach the server: ${error.message}`);
      }
    }
  }

  async function send(message) {
    const ws = await connect();
    ws.send(JSON.stringify(message));
  }

  async function open(req, message) {
    try {
      audio();
      await send(message);
    } catch {
      recordError("connect", "could not connect", req.id);
      stopRequest(req, "failed");
      await explainConnectFailure();
      throw new Error("not connected");
    }
  }

  function onText(data) {
    const msg = JSON.parse(data);
    const req = msg.id != null ? pg.requests[msg.id] : null;
    if (msg.type === "audio_start" && req) {
      req.stream = msg.stream;
      req.sampleRate = msg.sample_rate || DEFAULT_RATE;
      byStream.set(msg.stream, req);
      pg.lastAudioStart = msg;
      if (req.state === "waiting") setState(req, "streaming");
    } else if (msg.type === "audio_end" && req) {
      onEnd(req, msg);
    } else if (msg.type === "error") {
      onError(req, msg);
    }
  }

  function onAudio(buffer) {
    const view = new DataView(buffer);
    const req = byStream.get(view.getUint32(0, true));
    if (!req || !["streaming", "ending"].includes(req.state)) return;
    const pcm = pcmFrom(buffer);
    req.pcm.push(pcm);
    req.framesReceived++;
    pg.framesReceived++;
    schedule(req, pcm);
    renderRow(req);
  }

  function onEnd(req, msg) {
    req.audioEnd = msg;
    req.audioEndAt = performance.now();
    pg.audioEndAt = req.audioEndAt;
    pg.lastAudioEnd = msg;
    byStream.delete(req.stream);
    if (live.req === req) live.req = null;
    if (req.pcm.length) req.wavUrl = URL.createObjectURL(wavBlob(req.pcm, req.sampleRate));
    setState(req, "done");
  }

  const ERROR_TEXT = {
    unknown_voice: "That voice does not exist (any more): pick another one.",
    text_too_long: "The text is too long for one request.",
    too_many_streams: "Too many requests open on this page at once: wait for one to finish.",
    queue_full: "The server is busy (queue full): try again in a moment.",
    timeout: "The server is overloaded: the request timed out in the queue.",
    shutting_down: "The server is shutting down.",
  };

  function onError(req, msg) {
    recordError(msg.code, msg.message, msg.id ?? null);
    const hint = ERROR_TEXT[msg.code];
    showMessage(`${hint || "Request refused"} (${msg.code}: ${msg.message})`);
    if (req && active().includes(req)) stopRequest(req, "failed");
  }

  // -- Speak, cancel, download ------------------------------------------------------------------------

  function readParams() {
    const speed = parseFloat($("speed").value);
    const steps = parseInt($("steps").value, 10);
    const seedText = $("seed").value.trim();
    const seed = parseInt(seedText, 10);
    if (!(speed >= 0.25 && speed <= 4)) throw new Error("Speed must be between 0.25 and 4.");
    if (!(steps >= 1 && steps <= 128)) throw new Error("Steps must be a whole number from 1 to 128.");
    if (seedText && !(seed >= 0 && seed <= 2147483647)) throw new Error("Seed must be a whole number from 0 to 2147483647, or empty.");
    const params = { voice: $("voice").value || "default", speed, nfe_steps: steps };
    if (seedText) params.seed = seed;
    return params;
  }

  async function speak() {
    const text = $("text").value;
    if (!text.trim()) { showMessage("Type some text to speak first."); $("text").focus(); return; }
    let params;
    try { params = readParams(); } catch (error) { showMessage(error.message); return; }
    const req = newRequest(text, false);
    try { await open(req, { type: "synthesize", id: req.id, text, ...params, final: true }); } catch { /* shown */ }
  }

  function cancelAll() {
    for (const req of active()) {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "cancel", id: req.id }));
      stopRequest(req, "cancelled");
    }
    clearTimeout(live.timer);
  }

  function download() {
    const req = lastDone();
    if (!req) return;
    const link = document.createElement("a");
    link.href = req.wavUrl;
    link.download = `${req.id}.wav`;
    document.body.append(link);
    link.click();
    link.remove();
  }

  // -- type as you go ---------------------------------------------------------------------------------
  // Whole words are sent with `append` as they are typed (text after the last space stays editable);
  // a pause sends the rest and `flush`es; "End stream" sends `end`. Text already sent cannot be taken
  // back, so edits before that point are not spoken.

  function queueLive(message) {
    live.chain = live.chain.then(() => send(message)).catch(() => {});
  }

  function liveSend(everything) {
    const value = $("text").value;
    const boundary = everything ? value.length : Math.max(value.lastIndexOf(" "), value.lastIndexOf("\n")) + 1;
    if (value.length < live.sent && !live.editNoted) {
      live.editNoted = true;
      showMessage("Text that was already sent is spoken as it was sent; only new text at the end is added.", "info");
    }
    if (boundary <= live.sent) return false;
    const piece = value.slice(live.sent, boundary);
    live.sent = boundary;
    if (!live.req) {
      let params;
      try { params = readParams(); } catch (error) { showMessage(error.message); return false; }
      const req = newRequest(piece, true);
      live.req = req;
      live.chain = live.chain.then(() => open(req, { type: "synthesize", id: req.id, text: piece, ...params, final: false }))
        .catch(() => {});
    } else {
      live.req.text += piece;
      if (live.req.row) live.req.row.cells[0].firstChild.title = live.req.text;
      queueLive({ type: "append", id: live.req.id, text: piece });
    }
    return true;
  }

  function onLiveInput() {
    clearTimeout(live.timer);
    liveSend(false);
    live.timer = setTimeout(() => {
      liveSend(true);
      if (live.req) queueLive({ type: "flush", id: live.req.id });
    }, IDLE_FLUSH_MS);
  }

  function liveEnd() {
    clearTimeout(live.timer);
    liveSend(true);
    const req = live.req;
    if (!req) { showMessage("Nothing new to speak: type some text first.", "info"); return; }
    queueLive({ type: "end", id: req.id });
    live.req = null;
    if (req.state === "streaming" || req.state === "waiting") setState(req, "ending");
  }

  function setLiveMode(on) {
    $("live-help").hidden = !on;
    if (on) {
      const text = $("text");
      text.value = "";
      live.sent = 0;
      live.editNoted = false;
      text.placeholder = "Start typing: each finished sentence is spoken while you write the next.";
      text.focus();
    } else if (live.req) {
      liveEnd();
    }
    updateButtons();
  }

  // -- voices -------------------------------------------------------------------------------------------

  let recorded = null;  // WAV Blob from the microphone
  let recorder = null;

  async function loadVoices(select) {
    let body;
    try { body = await api("/v1/voices"); } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) showMessage(`Could not load voices: ${error.message}`);
      return;
    }
    pg.voices = body.voices.map((v) => v.id);
    const picker = $("voice");
    const keep = select || picker.value || "default";
    picker.replaceChildren(...body.voices.map((v) => new Option(v.id, v.id)));
    picker.value = pg.voices.includes(keep) ? keep : "default";
    const list = $("voice-list");
    list.replaceChildren(...body.voices.map(voiceItem));
  }

  function voiceItem(voice) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "voice-name";
    name.textContent = voice.id;
    const detail = document.createElement("span");
    detail.className = "hint";
    detail.textContent = `${voice.seconds.toFixed(1)} s · “${voice.transcript}”`;
    item.append(name, detail);
    if (!voice.builtin) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", `Delete voice ${voice.id}`);
      remove.addEventListener("click", () => deleteVoice(voice.id));
      item.append(remove);
    }
    return item;
  }

  async function deleteVoice(id) {
    try {
      await api(`/v1/voices/${encodeURIComponent(id)}`, { method: "DELETE" });
      showMessage(`Voice “${id}” deleted.`, "info");
    } catch (error) {
      if (error.status !== 401) showMessage(`Could not delete “${id}”: ${error.message}`);
    }
    await loadVoices();
  }

  async function uploadVoice() {
    const file = $("voice-file").files[0];
    const audioBlob = file || recorded;
    const transcript = $("voice-transcript").value.trim();
    const id = $("voice-id").value.trim();
    if (!audioBlob) { showMessage("Choose an audio file or record one first."); return; }
    if (!transcript) { showMessage("Type the transcript: exactly what the recording says."); $("voice-transcript").focus(); return; }
    const form = new FormData();
    form.append("audio", audioBlob, file ? file.name : "recording.wav");
    form.append("transcript", transcript);
    if (id) form.append("id", id);
    const button = $("voice-upload");
    button.disabled = true;
    button.textContent = "Uploading…";
    try {
      const voice = await api("/v1/voices", { method: "POST", body: form });
      showMessage(`Voice “${voice.id}” added and selected.`, "info");
      $("voice-form").reset();
      recorded = null;
      $("record-preview").hidden = true;
      $("record-state").textContent = "";
      await loadVoices(voice.id);
    } catch (error) {
      if (error.status !== 401) showMessage(`Upload failed: ${error.message}`);
    } finally {
      button.disabled = false;
      button.textContent = "Upload voice";
    }
  }

  // MediaRecorder gives webm/opus, which the server does not read: decode it here and send 24 kHz WAV.
  async function toWav(blob) {
    const decoded = await audio().decodeAudioData(await blob.arrayBuffer());
    const offline = new OfflineAudioContext(1, Math.max(1, Math.ceil(decoded.duration * DEFAULT_RATE)), DEFAULT_RATE);
    const source = offline.createBufferSource();
    source.buffer = decoded;
    source.connect(offline.destination);
    source.start();
    const rendered = (await offline.startRendering()).getChannelData(0);
    const pcm = Int16Array.from(rendered, (x) => Math.max(-32768, Math.min(32767, Math.round(x * 32767))));
    return wavBlob([pcm], DEFAULT_RATE);
  }

  async function toggleRecord() {
    const button = $("record");
    const state = $("record-state");
    if (recorder && recorder.state === "recording") { recorder.stop(); return; }
    if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
      showMessage("Recording needs a browser with microphone access on https:// or localhost.");
      return;
    }
    let stream;
    try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch (error) {
      showMessage(`No microphone: ${error.message}`);
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (event) => chunks.push(event.data);
    recorder.onstop = async () => {
      stream.getTracks().forEach((track) => track.stop());
      clearTimeout(recorder.limit);
      button.textContent = "Record from microphone";
      button.setAttribute("aria-pressed", "false");
      try {
        recorded = await toWav(new Blob(chunks, { type: recorder.mimeType }));
        $("voice-file").value = "";
        const preview = $("record-preview");
        preview.src = URL.createObjectURL(recorded);
        preview.hidden = false;
        state.textContent = "Recorded: this will be uploaded.";
      } catch (error) {
        state.textContent = "";
        showMessage(`Could not read the recording: ${error.message}`);
      }
    };
    recorder.start();
    recorder.limit = setTimeout(() => recorder.state === "recording" && recorder.stop(), MAX_RECORD_S * 1000);
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
    state.textContent = `Recording… (up to ${MAX_RECORD_S} s)`;
  }

  // -- live status panel ------------------------------------------------------------------------------

  function bars(element, values, unit) {
    const top = Math.max(...values, 1) * 1.1;  // relative to the largest shown; the numbers are below
    element.replaceChildren(...values.map((v) => {
      const bar = document.createElement("span");
      bar.style.height = `${Math.max(4, (100 * v) / top)}%`;
      bar.title = `${v}${unit}`;
      return bar;
    }));
  }

  let polling = false;
  async function poll() {
    if (polling || document.hidden) return;
    polling = true;
    try {
      const s = await api("/v1/status");
      pg.status = s;
      setPill(s.ready ? `ready · ${s.model}` : s.shutting_down ? "shutting down" : "starting", s.ready ? "ok" : "bad");
      $("st-queue").textContent = `${s.queue.depth} chunks`;
      $("st-running").textContent = `${s.queue.running} chunks`;
      $("st-inflight").textContent = `${s.inflight.ws ?? 0} / ${s.inflight.http ?? 0} / ${s.inflight.runpod ?? 0}`;
      $("st-streams").textContent = `${s.streams} / ${s.sockets}`;
      $("st-batches").textContent = `${s.batches.total} (max size ${s.batches.max_size})`;
      const sizes = s.batches.recent_sizes;
      const ttfa = s.ttfa_ms.recent;
      bars($("bs-bars"), sizes, " chunks per batch");
      bars($("ttfa-bars"), ttfa, " ms");
      $("bs-text").textContent = sizes.length ? `latest: ${sizes.slice(-8).join(", ")}` : "none yet";
      $("ttfa-text").textContent = ttfa.length ? `latest: ${ttfa.slice(-6).map(Math.round).join(", ")} ms` : "none yet";
    } catch (error) {
      if (!(error instanceof ApiError)) setPill("server unreachable", "bad");
    } finally {
      polling = false;
    }
  }

  // -- wiring ---------------------------------------------------------------------------------------

  function init() {
    $("api-key").value = sessionStorage.getItem("tts-api-key") || "";
    $("api-key").addEventListener("change", () => {
      sessionStorage.setItem("tts-api-key", apiKey());
      pg.authFailed = false;
      $("message").hidden = true;
      if (socket) socket.close(1000);
      socket = null;
      loadVoices();
      poll();
    });
    $("speak-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if ($("live-mode").checked) liveEnd(); else speak();
    });
    $("text").addEventListener("input", () => { if ($("live-mode").checked) onLiveInput(); });
    $("text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); $("speak").click(); }
      if (event.key === "Escape" && active().length) { event.preventDefault(); cancelAll(); }
    });
    $("live-mode").addEventListener("change", (event) => setLiveMode(event.target.checked));
    $("cancel").addEventListener("click", cancelAll);
    $("download").addEventListener("click", download);
    $("voice-form").addEventListener("submit", (event) => { event.preventDefault(); uploadVoice(); });
    $("voice-file").addEventListener("change", () => {
      recorded = null;
      $("record-preview").hidden = true;
      $("record-state").textContent = "";
    });
    $("record").addEventListener("click", toggleRecord);
    updateButtons();
    loadVoices();
    poll();
    setInterval(poll, 1000);
  }

  init();
})();
