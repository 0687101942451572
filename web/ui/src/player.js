// Recording detail with the asciinema player (loaded on demand).
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

export function RecordingDetail({ id }) {
  const rec = useApi(`/api/v1/recordings/${encodeURIComponent(id)}`);
  const start = Number(new URLSearchParams(location.search).get('t') || 0);
  const [speed, setSpeed] = useState(1);
  const el = useRef(null);
  const player = useRef(null);
  const castUrl = `/api/v1/recordings/${encodeURIComponent(id)}/cast`;
  const markers = rec.data?.markers || [];

  useEffect(() => {
    if (!rec.data || !el.current) return undefined;
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
    <div class="player" ref=${el} data-testid="player"></div>
    <h2>Markers (commands, file transfers, exits)</h2>
    <${Table} testid="markers" rowKey=${(m) => `${m.offset}-${m.detail}`} rows=${markers} empty="No markers." columns=${[
      { label: 'At', render: (m) => html`<button onClick=${() => seek(m.offset)}>${clock(m.offset)}</button>` },
      { key: 'kind', label: 'Kind' },
      { key: 'detail', label: 'Detail' },
    ]} />
  <//>`;
}
