// Switchboard softphone: microphone → JSON API websocket → agent voice, live transcript and turn latency.
"use strict";

const RATE = 16000; // PCM16 mono both ways (the pipeline's bus rate: no resampling on the server)
const FRAME_MS = 20;
const JITTER_S = 0.06; // agent audio is scheduled this far ahead when playback (re)starts

const $ = (id) => document.getElementById(id);
// The page's own URL carries the API key (?token=…, printed by `switchboard up`): it authorises the call start.
const TOKEN = new URLSearchParams(location.search).get("token") || "";
const state = { ws: null, ctx: null, mic: null, node: null, playHead: 0, sources: new Set(), playedMs: 0, turns: new Map(), labels: new Map() };

function setStatus(text) { $("status").textContent = text; }

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

function fromBase64(text) {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Int16Array(bytes.buffer);
}

// -- transcript ---------------------------------------------------------------
function row(turn, who) {
  const key = `${turn}:${who}`;
  let li = state.turns.get(key);
  if (!li) {
    li = document.createElement("li");
    li.className = who;
    li.dataset.turn = turn;
    li.innerHTML = `<span class="who">${who === "caller" ? "You" : "Agent"}:</span><span class="text"></span>`;
    $("transcript").appendChild(li);
    state.turns.set(key, li);
  }
  return li;
}

function onTranscript(msg) {
  const li = row(msg.turn, "caller");
  li.querySelector(".text").textContent = msg.text;
  li.classList.toggle("partial", !msg.final);
}

function onAgentResponse(msg) {
  const text = row(msg.turn, "agent").querySelector(".text");
  text.textContent = text.textContent ? `${text.textContent} ${msg.text}` : msg.text;
}

function turnLabel(turn) { // turn numbers on the bus are sequence numbers: show "greeting", 1, 2, …
  if (turn === 0) return "greeting";
  if (!state.labels.has(turn)) state.labels.set(turn, state.labels.size + 1);
  return String(state.labels.get(turn));
}

const ms = (v) => (v === null || v === undefined ? "–" : Math.round(v).toString());

function onLatency(msg) {
  const tr = document.createElement("tr");
  tr.dataset.turn = msg.turn;
  for (const v of [turnLabel(msg.turn), ms(msg.response_ms), ms(msg.processing_ms), ms(msg.stt_ms), ms(msg.agent_ms), ms(msg.tts_ms)]) {
    const td = document.createElement("td");
    td.textContent = v;
    tr.appendChild(td);
  }
  $("latency").tBodies[0].appendChild(tr);
  if (msg.response_ms === null || msg.response_ms === undefined) return; // the greeting answers no speech
  const lat = document.createElement("span");
  lat.className = "lat";
  lat.textContent = `responded in ${ms(msg.response_ms)} ms (processing ${ms(msg.processing_ms)} ms)`;
  row(msg.turn, "agent").appendChild(lat);
}

// -- agent audio --------------------------------------------------------------
function playAgent(msg) {
  const pcm = fromBase64(msg.data);
  const buffer = state.ctx.createBuffer(1, pcm.length, msg.sample_rate);
  const samples = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
  const src = state.ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(state.ctx.destination);
  const now = state.ctx.currentTime;
  if (state.playHead < now) state.playHead = now + JITTER_S;
  src.start(state.playHead);
  state.playHead += buffer.duration;
  state.sources.add(src);
  src.onended = () => {
    state.sources.delete(src);
    if (src.cleared) return;
    state.playedMs += buffer.duration * 1000;
    const out = $("played-ms");
    out.value = Math.round(state.playedMs);
    out.dataset.ms = out.value;
  };
}

function clearPlayback() { // barge-in: the caller spoke over the agent
  for (const src of state.sources) {
    src.cleared = true;
    try { src.stop(); } catch { /* not started yet */ }
  }
  state.sources.clear();
  state.playHead = 0;
}

// -- call ---------------------------------------------------------------------
async function startCall() {
  const button = $("call");
  button.disabled = true;
  setStatus("Starting…");
  try {
    if (state.ctx) state.ctx.close();
    state.ctx = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
    await state.ctx.audioWorklet.addModule("/softphone/capture-worklet.js");
    state.mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const res = await fetch("/api/v1/calls/start", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}) },
      body: JSON.stringify({ agent_type: "clinic-receptionist", caller_number: "softphone", language: "en-US",
        sample_rate: state.ctx.sampleRate, client: "softphone" }),
    });
    const session = await res.json();
    if (!res.ok) throw new Error(`could not start a call: ${JSON.stringify(session.detail)}`);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // the session's own short-lived token: browsers cannot set headers on a websocket
    const query = session.token ? `?token=${encodeURIComponent(session.token)}` : "";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/call/${session.session_id}${query}`);
    state.ws = ws;
    ws.onopen = () => connectMic(ws);
    ws.onmessage = (e) => onMessage(JSON.parse(e.data));
    ws.onclose = (e) => endCall(e.code === 1000 ? `Call ended: ${e.reason || "hung up"}.` : `Call closed (${e.code}): ${e.reason || "connection lost"}.`);
    button.setAttribute("aria-pressed", "true");
    button.textContent = "Hang up";
    setStatus("Connecting…");
  } catch (err) {
    endCall(`Could not call: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

function connectMic(ws) {
  const ctx = state.ctx;
  const source = ctx.createMediaStreamSource(state.mic);
  const node = new AudioWorkletNode(ctx, "capture", { processorOptions: { frameSamples: ctx.sampleRate * FRAME_MS / 1000 } });
  node.port.onmessage = (e) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ type: "audio_chunk", data: toBase64(e.data), timestamp: Date.now() / 1000 }));
    const pcm = new Int16Array(e.data);
    let sum = 0;
    for (let i = 0; i < pcm.length; i++) sum += (pcm[i] / 32768) ** 2;
    $("mic-level").value = Math.min(1, Math.sqrt(sum / pcm.length) * 4);
  };
  const mute = ctx.createGain(); // keeps the capture node pulled by the graph without echoing the mic
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(ctx.destination);
  state.node = node;
}

function onMessage(msg) {
  switch (msg.type) {
    case "session_started": setStatus("Connected: speak to the agent."); break;
    case "transcript": onTranscript(msg); break;
    case "agent_response": onAgentResponse(msg); break;
    case "agent_audio": playAgent(msg); break;
    case "clear": clearPlayback(); break;
    case "latency": onLatency(msg); break;
    default: break; // reply_end and future messages need nothing here
  }
}

function endCall(status) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ type: "hangup" }));
    state.ws.close(1000, "caller hung up");
  }
  state.ws = null;
  if (state.node) state.node.port.onmessage = null;
  if (state.mic) for (const track of state.mic.getTracks()) track.stop();
  state.mic = null;
  const button = $("call");
  button.setAttribute("aria-pressed", "false");
  button.textContent = "Call the agent";
  setStatus(status);
}

$("call").addEventListener("click", () => {
  if (state.ws) endCall("You hung up.");
  else startCall();
});
