// Postern web console: session handling, layout and routes.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, setCsrf, onUnauthorized, lastApiActivity } from './api.js';
import { html, usePath, Link, navigate, loadOfferedRoutes } from './ui.js';
import { Login, ForcedPasswordChange, MyAccount } from './auth.js';
import {
  Dashboard, Sessions, Resources, ResourceDetail, Import, Users, Audit, Shares, Groups, Roles, AccessRequests, Recordings,
  NotFoundPage,
} from './pages.js';

const NAV = [
  ['/', 'Dashboard'],
  ['/resources', 'Resources'],
  ['/import', 'Import'],
  ['/users', 'Users'],
  ['/shares', 'Shares'],
  ['/groups', 'Groups'],
  ['/roles', 'Roles'],
  ['/access-requests', 'Access requests'],
  ['/sessions', 'Live sessions'],
  ['/recordings', 'Recordings'],
  ['/audit', 'Audit'],
  ['/account', 'My account'],
];

// The terminal screens (xterm.js) are a separate chunk, loaded when used.
const CHUNKS = { terminal: () => import('./terminal.js'), player: () => import('./player.js') };
function Lazy({ chunk = 'terminal', name, ...props }) {
  const [C, setC] = useState(null);
  useEffect(() => {
    CHUNKS[chunk]().then((m) => setC(() => m[name]));
  }, [chunk, name]);
  return C ? html`<${C} ...${props} />` : html`<p class="muted">Loading…</p>`;
}

const UUID = '([0-9a-fA-F-]{36})';
function route(path, session, setSession) {
  let m = path.match(new RegExp(`^/resources/${UUID}$`));
  if (m) return html`<${ResourceDetail} id=${m[1]} />`;
  m = path.match(new RegExp(`^/terminal/${UUID}$`));
  if (m) return html`<${Lazy} key=${m[1]} name="AccountTerminal" id=${m[1]} />`;
  m = path.match(new RegExp(`^/recordings/${UUID}$`));
  if (m) return html`<${Lazy} key=${m[1]} chunk="player" name="RecordingDetail" id=${m[1]} />`;
  m = path.match(new RegExp(`^/sessions/${UUID}/watch$`));
  if (m) return html`<${Lazy} key=${m[1]} name="WatchSession" id=${m[1]} />`;
  switch (path) {
    case '/': return html`<${Dashboard} />`;
    case '/resources': return html`<${Resources} />`;
    case '/import': return html`<${Import} />`;
    case '/users': return html`<${Users} />`;
    case '/shares': return html`<${Shares} />`;
    case '/groups': return html`<${Groups} />`;
    case '/roles': return html`<${Roles} me=${session.user} />`;
    case '/access-requests': return html`<${AccessRequests} me=${session.user} />`;
    case '/sessions': return html`<${Sessions} />`;
    case '/recordings': return html`<${Recordings} />`;
    case '/audit': return html`<${Audit} />`;
    case '/account':
      return html`<${MyAccount} session=${session} onChanged=${async (s) => {
        if (s) setSession(s);
        else setSession(await api('GET', '/api/v1/auth/session'));
      }} />`;
    default: return html`<${NotFoundPage} />`;
  }
}

// Warns a minute before the server ends an idle browser session.
function IdleWarning({ seconds, onExpired }) {
  const [left, setLeft] = useState(seconds);
  useEffect(() => {
    const t = setInterval(() => {
      const l = Math.round(seconds - (Date.now() - lastApiActivity()) / 1000);
      setLeft(l);
      if (l <= 0) onExpired();
    }, 1000);
    return () => clearInterval(t);
  }, [seconds]);
  if (left > 60) return null;
  return html`<div class="notice idle" role="alert" data-testid="idle-warning">
    Your session ends in ${Math.max(0, left)} s for inactivity.
    <button onClick=${() => api('GET', '/api/v1/auth/session').catch(() => {})}>Stay logged in</button>
  </div>`;
}

function App() {
  const [session, setSession] = useState(undefined); // undefined: checking; null: logged out
  const [notice, setNotice] = useState(null);
  const [knownPassword, setKnownPassword] = useState(null);
  const path = usePath();

  useEffect(() => {
    onUnauthorized(() => {
      setCsrf(null);
      setSession(null);
      setNotice('Your session ended. Log in again.');
    });
    loadOfferedRoutes()
      .then(() => api('GET', '/api/v1/auth/session', undefined, { noRedirect: true }))
      .then((s) => {
        setCsrf(s.csrf_token);
        setSession(s);
      })
      .catch(() => setSession(null));
  }, []);

  if (session === undefined) return html`<p class="muted center">Loading…</p>`;
  if (session === null) {
    return html`<${Login} notice=${notice} onLogin=${(s, pw) => {
      setNotice(null);
      setKnownPassword(pw);
      setSession(s);
    }} />`;
  }
  if (session.must_change_password) {
    return html`<${ForcedPasswordChange} session=${session} knownPassword=${knownPassword} onDone=${(s) => {
      setKnownPassword(null);
      setSession(s);
      navigate(s.user.totp_enabled ? '/' : '/account');
    }} />`;
  }
  const logout = async () => {
    try {
      await api('DELETE', '/api/v1/auth/session', undefined, { noRedirect: true });
    } finally {
      setCsrf(null);
      setSession(null);
      navigate('/');
    }
  };
  return html`<div class="shell">
    <nav>
      <div class="brand">Postern</div>
      ${NAV.map(([href, label]) => html`<${Link} href=${href} class=${path === href ? 'active' : ''}>${label}<//>`)}
    </nav>
    <div class="main">
      <header class="top">
        ${!session.user.totp_enabled && html`<${Link} class="warn" href="/account">Set up two-factor authentication<//>`}
        <span data-testid="whoami">${session.user.username}</span>
        <button onClick=${logout} data-testid="logout">Log out</button>
      </header>
      <${IdleWarning} seconds=${session.idle_timeout_seconds || 900} onExpired=${() => {
        setCsrf(null);
        setSession(null);
        setNotice('Your session ended after inactivity. Log in again.');
      }} />
      ${route(path, session, setSession)}
    </div>
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
