// Small shared pieces: the htm binding, a router, form helpers, tables.
import { h } from 'preact';
import { useEffect, useState, useCallback } from 'preact/hooks';
import htm from 'htm';
import { api, ApiError, isMissingRoute } from './api.js';

export const html = htm.bind(h);

// ---- router (History API; the server answers every path with index.html)
let listeners = [];
export function navigate(path) {
  if (path !== location.pathname + location.search) history.pushState(null, '', path);
  listeners.forEach((l) => l());
}
window.addEventListener('popstate', () => listeners.forEach((l) => l()));
export function usePath() {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const l = () => setPath(location.pathname);
    listeners.push(l);
    return () => {
      listeners = listeners.filter((x) => x !== l);
    };
  }, []);
  return path;
}
export function Link({ href, children, ...rest }) {
  const click = (e) => {
    if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    navigate(href);
  };
  return html`<a href=${href} onClick=${click} ...${rest}>${children}</a>`;
}

// ---- which routes this server offers (from its public OpenAPI document),
// so actions whose routes are not there yet are not shown.
let offered = null;
export async function loadOfferedRoutes() {
  try {
    const doc = await api('GET', '/api/v1/openapi.json', undefined, { noRedirect: true });
    offered = new Set(Object.entries(doc.paths || {}).flatMap(([p, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${p}`)));
  } catch {
    offered = null;
  }
}
// offers('POST /api/v1/accounts/{id}/reset'); true when unknown.
export function offers(route) {
  return offered === null || offered.has(route);
}

// ---- errors
export function ErrorBox({ error }) {
  if (!error) return null;
  const field = error instanceof ApiError && error.problem.field ? ` (${error.problem.field})` : '';
  const errs = error instanceof ApiError && Array.isArray(error.problem.errors) ? error.problem.errors : [];
  return html`<div class="error" role="alert">
    ${error.message}${field}
    ${errs.length > 1 && html`<ul>${errs.map((e) => html`<li>${e.field}: ${e.message}</li>`)}</ul>`}
  </div>`;
}

// ---- data loading: {data, error, loading, reload, missing}
export function useApi(path, deps = []) {
  const [state, setState] = useState({ data: null, error: null, loading: true, missing: false });
  // `load(true)`: a background refresh (polling), which does not count as activity.
  const load = useCallback((background) => {
    if (!path) return;
    setState((s) => ({ ...s, loading: true }));
    api('GET', path, undefined, { background: background === true })
      .then((data) => setState({ data, error: null, loading: false, missing: false }))
      .catch((error) => setState({ data: null, error, loading: false, missing: isMissingRoute(error) }));
  }, [path, ...deps]);
  useEffect(load, [load]);
  return { ...state, reload: load };
}

// ---- forms: values in a state object, inputs bound by name
export function useForm(initial) {
  const [values, setValues] = useState(initial);
  const bind = (name, type = 'text') => {
    if (type === 'checkbox') {
      return { name, id: name, type, checked: !!values[name], onChange: (e) => setValues((v) => ({ ...v, [name]: e.currentTarget.checked })) };
    }
    return { name, id: name, type, value: values[name] ?? '', onInput: (e) => setValues((v) => ({ ...v, [name]: e.currentTarget.value })) };
  };
  return { values, setValues, bind, reset: () => setValues(initial) };
}

export function Field({ label, children, hint }) {
  // The hint stays outside the <label> so that it is not part of the input's accessible name.
  return html`<div class="field"><label><span>${label}</span>${children}</label>${hint && html`<small>${hint}</small>`}</div>`;
}

// Submits with busy/error state; `action` returns a promise.
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (action) => {
    setBusy(true);
    setError(null);
    try {
      return await action();
    } catch (e) {
      setError(e);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, setError, run };
}

// ---- tables
export function Table({ rows, columns, empty = 'Nothing here yet.', rowKey = (r) => r.id, testid }) {
  if (!rows || rows.length === 0) return html`<p class="muted" data-testid=${testid}>${empty}</p>`;
  return html`<table data-testid=${testid}>
    <thead><tr>${columns.map((c) => html`<th>${c.label}</th>`)}</tr></thead>
    <tbody>
      ${rows.map((r) => html`<tr key=${rowKey(r)}>${columns.map((c) => html`<td>${c.render ? c.render(r) : fmt(r[c.key])}</td>`)}</tr>`)}
    </tbody>
  </table>`;
}

export function fmt(v) {
  if (v === null || v === undefined) return '';
  if (Array.isArray(v)) return v.join(', ');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// A table of whatever objects a route returns (for screens whose routes
// other issues are still building).
export function AutoTable({ rows, actions, testid }) {
  if (!rows || rows.length === 0) return html`<p class="muted" data-testid=${testid}>Nothing here yet.</p>`;
  const keys = Object.keys(rows[0]).filter((k) => typeof rows[0][k] !== 'object' || rows[0][k] === null).slice(0, 8);
  const columns = keys.map((k) => ({ key: k, label: k.replace(/_/g, ' ') }));
  if (actions) columns.push({ label: '', render: actions });
  return html`<${Table} rows=${rows} columns=${columns} testid=${testid} />`;
}

export function NotOffered({ what }) {
  return html`<p class="notice">This server does not offer ${what} yet.</p>`;
}

export function Page({ title, children, actions }) {
  useEffect(() => {
    document.title = `${title} · Postern`;
  }, [title]);
  return html`<section class="page">
    <header class="page-head"><h1>${title}</h1><div class="actions">${actions}</div></header>
    ${children}
  </section>`;
}

// ---- CSV (RFC 4180 subset: quotes, doubled quotes, CRLF)
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
    } else cell += c;
  }
  if (cell !== '' || row.length) {
    row.push(cell);
    rows.push(row);
  }
  return rows.filter((r) => r.some((c) => c.trim() !== ''));
}

export function toCsv(rows, columns) {
  const esc = (v) => {
    const s = fmt(v);
    // Neutralize spreadsheet formulas.
    const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
    return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
  };
  return [columns.join(','), ...rows.map((r) => columns.map((c) => esc(r[c])).join(','))].join('\r\n') + '\r\n';
}

export function download(name, text, type = 'text/csv') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
