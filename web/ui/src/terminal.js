// Browser terminals (xterm.js): one-click logon to an account
// (GET /api/v1/accounts/{id}/terminal, wired) and read-only watching of a
// live session (GET /api/v1/sessions/{id}/watch, coded from the issue text;
// works once that route exists). Both are WebSockets authenticated by the
// session cookie; the account's password never reaches the browser.
import './csp-shim.js';
import '@xterm/xterm/css/xterm.css';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { useEffect, useRef, useState } from 'preact/hooks';
import { html, Page, Link } from './ui.js';

function wsUrl(path) {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${path}`;
}

function useTerminal(ref, { readOnly, url }) {
  const [status, setStatus] = useState('connecting');
  useEffect(() => {
    const term = new Terminal({
      cursorBlink: !readOnly,
      disableStdin: readOnly,
      convertEol: false,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
      fontSize: 14,
      scrollback: 5000,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(ref.current);
    fit.fit();
    window.__posternTerminal = term; // read by the browser tests
    const sep = url.includes('?') ? '&' : '?';
    const ws = new WebSocket(wsUrl(`${url}${readOnly ? '' : `${sep}cols=${term.cols}&rows=${term.rows}`}`));
    ws.binaryType = 'arraybuffer';
    const enc = new TextEncoder();
    ws.onopen = () => {
      setStatus('connected');
      if (!readOnly) term.focus();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        try {
          const msg = JSON.parse(ev.data);
          if (msg.type === 'exit') term.write(`\r\n[exit status ${msg.status}]\r\n`);
        } catch {
          /* ignore */
        }
      } else {
        term.write(new Uint8Array(ev.data));
      }
    };
    ws.onclose = (ev) => {
      setStatus(ev.code === 1000 ? 'ended' : `closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`);
      term.write(`\r\n[${ev.reason || 'connection closed'}]\r\n`);
    };
    ws.onerror = () => setStatus('failed');
    const subs = [];
    if (!readOnly) {
      subs.push(term.onData((d) => ws.readyState === 1 && ws.send(enc.encode(d))));
      subs.push(term.onResize(({ cols, rows }) => ws.readyState === 1 && ws.send(JSON.stringify({ type: 'resize', cols, rows }))));
    }
    const onWin = () => fit.fit();
    window.addEventListener('resize', onWin);
    return () => {
      window.removeEventListener('resize', onWin);
      subs.forEach((s) => s.dispose());
      ws.close();
      term.dispose();
      if (window.__posternTerminal === term) window.__posternTerminal = null;
    };
  }, [url, readOnly]);
  return status;
}

export function AccountTerminal({ id }) {
  const ref = useRef(null);
  const status = useTerminal(ref, { readOnly: false, url: `/api/v1/accounts/${encodeURIComponent(id)}/terminal` });
  return html`<${Page} title="Terminal" actions=${html`<span class="muted" data-testid="terminal-status">${status}</span>`}>
    <div class="terminal" ref=${ref} data-testid="terminal"></div>
    <p class="muted">This session goes through the gateway like <code>ssh</code>: it is authorized, recorded and
      can be watched and ended by an administrator.</p>
  <//>`;
}

// A live RDP session: the watch WebSocket sends one PNG of the whole desktop per message.
function RdpWatch({ id }) {
  const [frames, setFrames] = useState(0);
  const [status, setStatus] = useState('connecting');
  const canvas = useRef(null);
  useEffect(() => {
    let alive = true;
    let count = 0;
    let chain = Promise.resolve();
    const ws = new WebSocket(wsUrl(`/api/v1/sessions/${encodeURIComponent(id)}/watch`));
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => setStatus('connected');
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') return;
      const blob = new Blob([ev.data], { type: 'image/png' });
      // Drawn in order on a canvas (the CSP allows images from 'self' only, not blob: URLs).
      chain = chain.then(async () => {
        const bmp = await createImageBitmap(blob);
        const c = canvas.current;
        if (alive && c) {
          c.width = bmp.width;
          c.height = bmp.height;
          c.getContext('2d').drawImage(bmp, 0, 0);
          count += 1;
          setFrames(count);
        }
        bmp.close();
      }).catch(() => {});
    };
    ws.onclose = (ev) => setStatus(ev.code === 1000 ? 'ended' : `closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`);
    ws.onerror = () => setStatus('failed');
    return () => {
      alive = false;
      ws.close();
    };
  }, [id]);
  return html`<${Page} title="Watching a live RDP session" actions=${html`<span class="muted" data-testid="terminal-status">${status}</span>
      <${Link} href="/sessions">Back<//>`}>
    ${frames === 0 && html`<p class="muted">Waiting for the first frame…</p>`}
    <canvas ref=${canvas} class="rdp-frame" data-testid="rdp-live" data-frames=${frames} width="0" height="0"
      aria-label="Live desktop"></canvas>
  <//>`;
}

export function WatchSession({ id }) {
  if (new URLSearchParams(location.search).get('protocol') === 'rdp') return html`<${RdpWatch} id=${id} />`;
  return html`<${TerminalWatch} id=${id} />`;
}

function TerminalWatch({ id }) {
  const ref = useRef(null);
  const status = useTerminal(ref, { readOnly: true, url: `/api/v1/sessions/${encodeURIComponent(id)}/watch` });
  return html`<${Page} title="Watching a live session" actions=${html`<span class="muted" data-testid="terminal-status">${status}</span>
      <${Link} href="/sessions">Back<//>`}>
    <div class="terminal" ref=${ref} data-testid="terminal"></div>
  <//>`;
}
