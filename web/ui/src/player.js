// Recording detail with the asciinema player (loaded on demand); RDP recordings get an
// image player over GET /api/v1/recordings/{id}/frame?at=SECONDS (PNG frames rendered
// by the server, which keeps a decoder per user and recording so playing forward is cheap).
// Routes (issue 5): GET /api/v1/recordings/{id} (catalog entry, verification,
// markers) and GET /api/v1/recordings/{id}/cast (plain asciicast v2, fetched by
// the player with the session cookie).
import './csp-shim.js';
import 'asciinema-player/dist/bundle/asciinema-player.css';
import * as AsciinemaPlayer from 'asciinema-player';
import { useEffect, useRef, useState } from 'preact/hooks';
import { html, Page, Link, useApi, ErrorBox, Table, NotOffered, fmt } from './ui.js';

const SPEEDS = [0.5, 1, 2, 4, 8];

export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

// Seconds between two RFC 3339 times (0 when unknown).
function span(from, to) {
  const a = Date.parse(from || '');
  const b = Date.parse(to || '');
  return Number.isFinite(a) && Number.isFinite(b) && b > a ? (b - a) / 1000 : 0;
}

// The RDP player: play/pause, a seek bar and the time; frames are fetched one after the
// other (the next request leaves once the previous frame is shown).
export function RdpPlayer({ id, duration, start, speed, seekRef }) {
  const [t, setT] = useState(Math.min(start || 0, duration || 0));
  const [playing, setPlaying] = useState(true);
  const [shown, setShown] = useState(0);
  const [error, setError] = useState(null);
  const canvas = useRef(null);
  const state = useRef({ t: start || 0, playing: true, busy: false, wall: 0, alive: true, frames: 0 });
  const frameUrl = (at) => `/api/v1/recordings/${encodeURIComponent(id)}/frame?at=${at.toFixed(3)}`;

  const show = async (at) => {
    const st = state.current;
    st.busy = true;
    try {
      const r = await fetch(frameUrl(at), { credentials: 'same-origin' });
      if (!r.ok) throw new Error(`frame: HTTP ${r.status}`);
      // Drawn on a canvas (the CSP allows images from 'self' only, not blob: URLs).
      const bmp = await createImageBitmap(await r.blob());
      const c = canvas.current;
      if (!st.alive || !c) return bmp.close();
      c.width = bmp.width;
      c.height = bmp.height;
      c.getContext('2d').drawImage(bmp, 0, 0);
      bmp.close();
      st.frames += 1;
      setShown(st.frames);
      setError(null);
    } catch (e) {
      setError(String(e.message || e));
      st.playing = false;
      setPlaying(false);
    } finally {
      st.busy = false;
    }
  };

  useEffect(() => {
    const st = state.current;
    st.alive = true;
    st.wall = performance.now();
    let timer = null;
    const tick = async () => {
      if (!st.alive) return;
      const now = performance.now();
      if (st.playing && !st.busy) {
        st.t = Math.min(duration, st.t + ((now - st.wall) / 1000) * speed);
        setT(st.t);
        await show(st.t);
        if (st.t >= duration) {
          st.playing = false;
          setPlaying(false);
        }
      }
      st.wall = now;
      timer = setTimeout(tick, 200);
    };
    show(st.t).then(() => { timer = setTimeout(tick, 200); });
    return () => {
      st.alive = false;
      clearTimeout(timer);
    };
  }, [id, duration, speed]);

  const seek = (at) => {
    const st = state.current;
    st.t = Math.max(0, Math.min(duration, at));
    st.wall = performance.now();
    setT(st.t);
    if (!st.busy) show(st.t);
  };
  if (seekRef) seekRef.current = seek;
  const toggle = () => {
    const st = state.current;
    if (!st.playing && st.t >= duration) st.t = 0;
    st.playing = !st.playing;
    st.wall = performance.now();
    setPlaying(st.playing);
  };
  return html`<div class="rdp-player" data-testid="rdp-player">
    <div class="player-bar">
      <button onClick=${toggle} data-testid="rdp-play">${playing ? 'Pause' : 'Play'}</button>
      <input type="range" min="0" max=${duration} step="0.1" value=${t} aria-label="Seek" data-testid="rdp-seek"
        onInput=${(e) => seek(Number(e.currentTarget.value))} class="rdp-seek" />
      <span data-testid="rdp-time">${clock(t)} / ${clock(duration)}</span>
    </div>
    ${error && html`<p class="error">${error}</p>`}
    <canvas ref=${canvas} class="rdp-frame" data-testid="rdp-frame" data-frames=${shown} width="0" height="0"
      aria-label="Recorded desktop"></canvas>
  </div>`;
}

export function RecordingDetail({ id }) {
  const rec = useApi(`/api/v1/recordings/${encodeURIComponent(id)}`);
  const start = Number(new URLSearchParams(location.search).get('t') || 0);
  const [speed, setSpeed] = useState(1);
  const el = useRef(null);
  const player = useRef(null);
  const castUrl = `/api/v1/recordings/${encodeURIComponent(id)}/cast`;
  const markers = rec.data?.markers || [];
  const rdp = rec.data?.recording?.protocol === 'rdp';
  const rdpSeek = useRef(null);

  useEffect(() => {
    if (!rec.data || !el.current || rdp) return undefined;
    const p = AsciinemaPlayer.create(castUrl, el.current, {
      startAt: Math.max(0, start - 1),
      speed,
      autoPlay: true,
      preload: true,
      fit: 'width',
      idleTimeLimit: 2,
      markers: markers.map((m) => [m.offset, `${m.kind}: ${m.detail}`]),
    });
    player.current = p;
    window.__posternPlayer = p; // read by the browser tests
    return () => {
      p.dispose();
      if (window.__posternPlayer === p) window.__posternPlayer = null;
    };
  }, [rec.data, speed]);

  const seek = (t) => {
    if (rdp) return rdpSeek.current && rdpSeek.current(t);
    const p = player.current;
    if (p) p.seek(t).then(() => p.play());
  };

  if (rec.missing) return html`<${Page} title="Recording"><${NotOffered} what="recordings" /><//>`;
  if (rec.error) return html`<${Page} title="Recording"><${ErrorBox} error=${rec.error} /><//>`;
  if (!rec.data) return html`<${Page} title="Recording"><p class="muted">Loading…</p><//>`;
  const info = rec.data.recording || {};
  const v = rec.data.verification || {};
  const verdict = v.ok ? (v.truncated ? 'intact prefix verified (recording was cut)' : 'verified: chain and signature intact') : `NOT verified: ${v.error || 'unknown error'}`;
  return html`<${Page} title=${`Recording: ${info.user} → ${info.target}`} actions=${html`
      <a class="button" href=${castUrl} download=${`${id}.cast`} data-testid="cast-download">Download .cast</a>
      <${Link} href="/recordings">Back<//>`}>
    <dl class="facts">
      <dt>Started</dt><dd>${info.started_at}</dd>
      <dt>Ended</dt><dd>${info.ended_at || '(live or cut)'}</dd>
      <dt>Protocol</dt><dd>${info.protocol}</dd>
      <dt>Client</dt><dd>${info.client || ''}</dd>
      <dt>Status</dt><dd>${fmt(info.status)}${info.exit_info ? ` (${info.exit_info})` : ''}</dd>
      <dt>Verification</dt><dd class=${v.ok ? 'ok' : 'error'} data-testid="verification">${verdict}</dd>
      <dt>Final hash</dt><dd><code>${v.final_hash || info.final_hash || ''}</code></dd>
    </dl>
    <div class="player-bar">
      <label>Speed <select value=${speed} onChange=${(e) => setSpeed(Number(e.currentTarget.value))} aria-label="Speed">
        ${SPEEDS.map((s) => html`<option value=${s}>${s}×</option>`)}
      </select></label>
    </div>
    ${rdp
      ? html`<${RdpPlayer} id=${id} start=${start} speed=${speed} seekRef=${rdpSeek}
          duration=${span(info.started_at, info.ended_at || new Date().toISOString()) || 1} />`
      : html`<div class="player" ref=${el} data-testid="player"></div>`}
    <h2>Markers (commands, file transfers, exits)</h2>
    <${Table} testid="markers" rowKey=${(m) => `${m.offset}-${m.detail}`} rows=${markers} empty="No markers." columns=${[
      { label: 'At', render: (m) => html`<button onClick=${() => seek(m.offset)}>${clock(m.offset)}</button>` },
      { key: 'kind', label: 'Kind' },
      { key: 'detail', label: 'Detail' },
    ]} />
  <//>`;
}
