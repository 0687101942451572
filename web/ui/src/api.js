// The console's only way to the server: fetch with the session cookie
// (sent by the browser, never readable here) and the CSRF token on every
// request that changes state.

let csrfToken = null;
let onSessionLost = null;
let lastActivity = Date.now();

// When the server last saw a request from this page (its idle clock restarts then).
export function lastApiActivity() {
  return lastActivity;
}

export function setCsrf(token) {
  csrfToken = token;
}

export function onUnauthorized(fn) {
  onSessionLost = fn;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }

  // The problem's slug, e.g. "totp-required".
  get slug() {
    const t = this.problem.type || '';
    return t.startsWith('urn:postern:problem:') ? t.slice('urn:postern:problem:'.length) : '';
  }
}

// api('GET', '/api/v1/resources'), api('POST', path, {json}),
// api('POST', path, csvText, {contentType: 'text/csv'}).
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  let payload;
  if (body !== undefined) {
    if (opts.contentType) {
      headers['Content-Type'] = opts.contentType;
      payload = body;
    } else {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
  }
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  // Polling: the server checks the session but does not restart its idle clock.
  if (opts.background) headers['X-Postern-Background'] = '1';
  const r = await fetch(path, { method, headers, body: payload, credentials: 'same-origin', cache: 'no-store' });
  if (r.ok && !opts.background) lastActivity = Date.now();
  if (r.status === 204) return null;
  const ct = r.headers.get('content-type') || '';
  const data = ct.includes('json') ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) {
    const err = new ApiError(r.status, typeof data === 'object' ? data : { detail: String(data || '') });
    if (r.status === 401 && !opts.noRedirect && onSessionLost) onSessionLost(err);
    throw err;
  }
  return data;
}

// True when a route is simply not offered by this server (yet).
export function isMissingRoute(e) {
  return e instanceof ApiError && (e.status === 404 || e.status === 405) && !e.problem.field;
}
