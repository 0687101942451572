// The console's screens.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from './api.js';
import {
  html, useApi, useForm, useAction, Field, ErrorBox, Table, AutoTable, NotOffered, Page, Link, navigate,
  parseCsv, toCsv, download, fmt, offers,
} from './ui.js';

const RESOURCE_TYPES = ['linux', 'unix', 'windows', 'windows_domain', 'network_device', 'database', 'web_site'];
const ROLES = ['administrator', 'password_administrator', 'privileged_administrator', 'password_user', 'password_auditor'];
const enc = encodeURIComponent;

// ---------------------------------------------------------------- dashboard
export function Dashboard() {
  const live = useApi('/api/v1/sessions');
  const reqs = useApi('/api/v1/access-requests');
  const due = useApi('/api/v1/passwords/due');
  useEffect(() => {
    const t = setInterval(() => live.reload(true), 5000);
    return () => clearInterval(t);
  }, [live.reload]);
  const pending = Array.isArray(reqs.data) ? reqs.data.filter((r) => (r.state || r.status) === 'requested') : [];
  return html`<${Page} title="Dashboard">
    <div class="tiles">
      <div class="tile"><b data-testid="live-count">${live.data ? live.data.length : '–'}</b><span>live sessions</span></div>
      <div class="tile"><b>${reqs.missing ? '–' : pending.length}</b><span>pending approvals</span></div>
      <div class="tile"><b data-testid="due-count">${Array.isArray(due.data) ? due.data.length : '–'}</b><span>passwords due for rotation</span></div>
    </div>
    <h2>Live sessions</h2>
    ${live.error && !live.missing ? html`<${ErrorBox} error=${live.error} />` : html`<${SessionsTable} rows=${live.data} onChange=${live.reload} />`}
    <h2>Pending approvals</h2>
    ${reqs.missing ? html`<${NotOffered} what="access requests" />` : html`<${AutoTable} rows=${pending} />`}
    <h2>Passwords due for rotation</h2>
    ${due.missing ? html`<${NotOffered} what="password rotation" />` : due.error ? html`<${ErrorBox} error=${due.error} />` : html`
      <${Table} testid="due" rows=${due.data} empty="No password is due within 7 days." columns=${[
        { key: 'resource', label: 'Resource' },
        { key: 'login', label: 'Account' },
        { key: 'max_age_days', label: 'Max age (days)' },
        { label: 'Due', render: (d) => d.due_at ? fmt(d.due_at) : 'now (never changed)' },
        { label: 'State', render: (d) => d.overdue ? html`<b class="danger">overdue</b>` : 'due soon' },
        { key: 'last_reset', label: 'Last reset' },
      ]} />`}
  <//>`;
}

// ------------------------------------------------------------ live sessions
function SessionsTable({ rows, onChange }) {
  const a = useAction();
  const terminate = (s) => {
    const reason = prompt(`Reason for ending ${s.user} → ${s.target} (shown to the user):`);
    if (!reason) return;
    a.run(async () => {
      await api('DELETE', `/api/v1/sessions/${enc(s.id)}`, { reason });
      onChange();
    });
  };
  return html`<${ErrorBox} error=${a.error} />
    <${Table} testid="sessions" rows=${rows} empty="No live sessions." columns=${[
      { key: 'user', label: 'User' },
      { key: 'target', label: 'Target' },
      { key: 'protocol', label: 'Protocol' },
      { key: 'client', label: 'Client' },
      { key: 'started_at', label: 'Started' },
      { label: '', render: (s) => html`<div class="row-actions">
          <button onClick=${() => navigate(`/sessions/${s.id}/watch`)}>Watch</button>
          <button class="danger" onClick=${() => terminate(s)}>Terminate</button></div>` },
    ]} />`;
}

export function Sessions() {
  const live = useApi('/api/v1/sessions');
  useEffect(() => {
    const t = setInterval(() => live.reload(true), 3000);
    return () => clearInterval(t);
  }, [live.reload]);
  return html`<${Page} title="Live sessions" actions=${html`<button onClick=${live.reload}>Refresh</button>`}>
    <${ErrorBox} error=${live.error} />
    <${SessionsTable} rows=${live.data} onChange=${live.reload} />
  <//>`;
}

// ---------------------------------------------------------------- resources
function resourceBody(v) {
  const body = { name: v.name.trim(), type: v.type, host: v.host.trim() };
  if (String(v.port).trim() !== '') body.port = Number(v.port);
  if (v.description.trim() !== '') body.description = v.description.trim();
  return body;
}

export function Resources() {
  const list = useApi('/api/v1/resources');
  const [adding, setAdding] = useState(false);
  const f = useForm({ name: '', type: 'linux', host: '', port: '', description: '' });
  const a = useAction();
  const add = (e) => {
    e.preventDefault();
    a.run(async () => {
      const r = await api('POST', '/api/v1/resources', resourceBody(f.values));
      f.reset();
      setAdding(false);
      navigate(`/resources/${r.id}`);
    });
  };
  return html`<${Page} title="Resources" actions=${html`
      <button onClick=${() => setAdding(!adding)} data-testid="add-resource">Add resource</button>
      <${Link} class="button" href="/import">Import CSV<//>`}>
    ${adding &&
    html`<form class="card" onSubmit=${add} data-testid="resource-form">
      <${Field} label="Name"><input ...${f.bind('name')} required /><//>
      <${Field} label="Type"><select ...${f.bind('type')}>${RESOURCE_TYPES.map((t) => html`<option value=${t}>${t}</option>`)}</select><//>
      <${Field} label="Host"><input ...${f.bind('host')} required /><//>
      <${Field} label="Port" hint="Default for the type when empty"><input ...${f.bind('port', 'number')} min="1" max="65535" /><//>
      <${Field} label="Description"><input ...${f.bind('description')} /><//>
      <${ErrorBox} error=${a.error} />
      <button type="submit" disabled=${a.busy}>Save resource</button>
    </form>`}
    <${ErrorBox} error=${list.error} />
    <${Table} testid="resources" rows=${list.data} columns=${[
      { label: 'Name', render: (r) => html`<${Link} href=${`/resources/${r.id}`}>${r.name}<//>` },
      { key: 'type', label: 'Type' },
      { key: 'host', label: 'Host' },
      { key: 'port', label: 'Port' },
      { key: 'description', label: 'Description' },
    ]} />
  <//>`;
}

export function ResourceDetail({ id }) {
  const res = useApi(`/api/v1/resources/${enc(id)}`);
  const accounts = useApi(`/api/v1/resources/${enc(id)}/accounts`);
  const [editing, setEditing] = useState(false);
  const f = useForm({ name: '', type: 'linux', host: '', port: '', description: '' });
  const a = useAction();
  const acc = useForm({ login: '', password: '', notes: '' });
  const aa = useAction();
  useEffect(() => {
    if (res.data) f.setValues({ ...res.data, port: res.data.port, description: res.data.description || '' });
  }, [res.data]);
  const save = (e) => {
    e.preventDefault();
    a.run(async () => {
      await api('PATCH', `/api/v1/resources/${enc(id)}`, resourceBody(f.values));
      setEditing(false);
      res.reload();
    });
  };
  const remove = () => {
    if (!confirm('Delete this resource and its accounts?')) return;
    a.run(async () => {
      await api('DELETE', `/api/v1/resources/${enc(id)}`);
      navigate('/resources');
    });
  };
  const addAccount = (e) => {
    e.preventDefault();
    aa.run(async () => {
      const body = { login: acc.values.login.trim() };
      if (acc.values.password) body.password = acc.values.password;
      if (acc.values.notes.trim()) body.notes = acc.values.notes.trim();
      await api('POST', `/api/v1/resources/${enc(id)}/accounts`, body);
      acc.reset();
      accounts.reload();
    });
  };
  if (res.error) return html`<${Page} title="Resource"><${ErrorBox} error=${res.error} /><//>`;
  if (!res.data) return html`<${Page} title="Resource"><p class="muted">Loading…</p><//>`;
  const r = res.data;
  return html`<${Page} title=${r.name} actions=${html`
      <button onClick=${() => setEditing(!editing)}>Edit</button>
      <button class="danger" onClick=${remove}>Delete</button>`}>
    <dl class="facts">
      <dt>Type</dt><dd>${r.type}</dd><dt>Host</dt><dd>${r.host}:${r.port}</dd>
      <dt>Description</dt><dd>${r.description || ''}</dd>
      <dt>Landing chain</dt><dd>${fmt(r.landing_chain)}</dd>
    </dl>
    ${editing &&
    html`<form class="card" onSubmit=${save}>
      <${Field} label="Name"><input ...${f.bind('name')} required /><//>
      <${Field} label="Type"><select ...${f.bind('type')}>${RESOURCE_TYPES.map((t) => html`<option value=${t}>${t}</option>`)}</select><//>
      <${Field} label="Host"><input ...${f.bind('host')} required /><//>
      <${Field} label="Port"><input ...${f.bind('port', 'number')} min="1" max="65535" /><//>
      <${Field} label="Description"><input ...${f.bind('description')} /><//>
      <button type="submit" disabled=${a.busy}>Save</button>
    </form>`}
    <${ErrorBox} error=${a.error} />
    ${offers('PUT /api/v1/resources/{id}/access-policy') && html`<${AccessPolicyForm} id=${id} />`}
    <h2>Accounts</h2>
    <${ErrorBox} error=${accounts.error} />
    <${Table} testid="accounts" rows=${accounts.data} columns=${[
      { key: 'login', label: 'Login' },
      { label: 'Credential', render: (x) => [x.has_password && 'password', x.has_private_key && 'key'].filter(Boolean).join(', ') },
      { key: 'password_changed_at', label: 'Password changed' },
      { key: 'notes', label: 'Notes' },
      { label: '', render: (x) => html`<${AccountActions} account=${x} onChange=${accounts.reload} />` },
    ]} />
    <form class="card" onSubmit=${addAccount} data-testid="account-form">
      <h3>Add an account</h3>
      <${Field} label="Login"><input ...${acc.bind('login')} required /><//>
      <${Field} label="Password"><input ...${acc.bind('password', 'password')} autocomplete="new-password" /><//>
      <${Field} label="Notes"><input ...${acc.bind('notes')} /><//>
      <${ErrorBox} error=${aa.error} />
      <button type="submit" disabled=${aa.busy}>Save account</button>
    </form>
  <//>`;
}

// Access control of a resource's accounts (issue 6 route).
function AccessPolicyForm({ id }) {
  const pol = useApi(`/api/v1/resources/${enc(id)}/access-policy`);
  const f = useForm({ require_request: false, dual_approval: false, exclusive: false, exclusive_mode: 'refuse', max_window_minutes: 480, reset_on_checkin: true });
  const a = useAction();
  const [saved, setSaved] = useState(false);
  useEffect(() => {
    if (pol.data) f.setValues({ ...f.values, ...pol.data });
  }, [pol.data]);
  if (pol.missing) return null;
  const save = (e) => {
    e.preventDefault();
    setSaved(false);
    a.run(async () => {
      await api('PUT', `/api/v1/resources/${enc(id)}/access-policy`, { ...f.values, max_window_minutes: Number(f.values.max_window_minutes) });
      setSaved(true);
      pol.reload();
    });
  };
  return html`<h2>Access policy</h2>
    <form class="inline-form" onSubmit=${save} data-testid="access-policy">
      <label class="check"><input ...${f.bind('require_request', 'checkbox')} /> sessions and retrievals need an approved request</label>
      <label class="check"><input ...${f.bind('dual_approval', 'checkbox')} /> two approvers</label>
      <label class="check"><input ...${f.bind('exclusive', 'checkbox')} /> exclusive checkout</label>
      <select ...${f.bind('exclusive_mode')} aria-label="When taken"><option value="refuse">refuse when taken</option><option value="queue">queue when taken</option></select>
      <label class="check">max window <input ...${f.bind('max_window_minutes', 'number')} min="1" size="5" /> min</label>
      <label class="check"><input ...${f.bind('reset_on_checkin', 'checkbox')} /> reset the password at check-in</label>
      <button type="submit" disabled=${a.busy}>Save policy</button>
      ${saved && html`<small class="ok">saved</small>`}
    </form>
    <${ErrorBox} error=${a.error || (pol.missing ? null : pol.error)} />`;
}

// Retrieve (with a reason; copy; hidden again after 30 s), edit, delete.
const REVEAL_SECONDS = 30;
function AccountActions({ account, onChange }) {
  const [secret, setSecret] = useState(null);
  const [left, setLeft] = useState(0);
  const [editing, setEditing] = useState(false);
  const f = useForm({ login: account.login, password: '', notes: account.notes || '' });
  const a = useAction();
  const timer = useRef(null);
  const hide = () => {
    clearInterval(timer.current);
    setSecret(null);
  };
  useEffect(() => hide, []);
  const retrieve = () => {
    const reason = prompt(`Why do you need the password of ${account.login}? (recorded in the audit trail)`);
    if (!reason) return;
    a.run(async () => {
      const s = await api('POST', `/api/v1/accounts/${enc(account.id)}/retrieve`, { reason });
      setSecret(s.password ?? s.private_key ?? '');
      setLeft(REVEAL_SECONDS);
      clearInterval(timer.current);
      timer.current = setInterval(() => setLeft((n) => {
        if (n <= 1) {
          hide();
          return 0;
        }
        return n - 1;
      }), 1000);
    });
  };
  const copy = () => navigator.clipboard.writeText(secret).catch(() => {});
  // A one-time RDP ticket: the .rdp file is downloaded, its one-time password shown this once.
  const [ticket, setTicket] = useState(null);
  const rdpTicket = () => a.run(async () => {
    const t = await api('POST', `/api/v1/accounts/${enc(account.id)}/rdp-ticket`);
    download(`${account.login}.rdp`, t.rdp_file, 'application/x-rdp');
    setTicket(t);
  });
  const [resetDone, setResetDone] = useState(null);
  const reset = () => {
    if (!confirm(`Generate a new password for ${account.login} and set it on the target now?`)) return;
    setResetDone('resetting on the target…');
    a.run(async () => {
      try {
        await api('POST', `/api/v1/accounts/${enc(account.id)}/reset`);
        setResetDone('password reset and vaulted');
        onChange();
      } catch (e) {
        setResetDone(null);
        throw e;
      }
    });
  };
  const save = (e) => {
    e.preventDefault();
    a.run(async () => {
      const body = { login: f.values.login.trim(), notes: f.values.notes };
      if (f.values.password) body.password = f.values.password;
      await api('PATCH', `/api/v1/accounts/${enc(account.id)}`, body);
      setEditing(false);
      onChange();
    });
  };
  const remove = () => {
    if (!confirm(`Delete the account ${account.login}?`)) return;
    a.run(async () => {
      await api('DELETE', `/api/v1/accounts/${enc(account.id)}`);
      onChange();
    });
  };
  return html`<div class="row-actions">
    ${secret === null
      ? html`<button onClick=${retrieve} disabled=${a.busy}>Retrieve</button>`
      : html`<span class="secret"><code data-testid="secret">${secret}</code>
          <button onClick=${copy}>Copy</button><button onClick=${hide}>Hide</button>
          <small>hides in ${left}s</small></span>`}
    ${offers('GET /api/v1/accounts/{id}/terminal') && html`<button onClick=${() => navigate(`/terminal/${account.id}`)}>Connect</button>`}
    ${offers('POST /api/v1/accounts/{id}/rdp-ticket') && (ticket === null
      ? html`<button onClick=${rdpTicket} disabled=${a.busy} title="A .rdp file for one RDP connection within a few minutes (NLA; also for two-factor users)">Download .rdp</button>`
      : html`<span class="secret" data-testid="rdp-ticket">RDP user <code>${ticket.username}</code>,${' '}
          one-time password <code data-testid="rdp-ticket-password">${ticket.password}</code>${' '}
          <small>(shown once; one connection, until ${ticket.expires_at})</small> <button onClick=${() => navigator.clipboard.writeText(ticket.password).catch(() => {})}>Copy</button>
          <button onClick=${() => setTicket(null)}>Hide</button></span>`)}
    ${offers('POST /api/v1/access-requests') && html`<button onClick=${() => navigate(`/access-requests?account=${account.id}`)}>Request access</button>`}
    ${offers('POST /api/v1/accounts/{id}/reset') && html`<button onClick=${reset} disabled=${a.busy}>Reset password</button>`}
    ${resetDone && html`<small class="ok">${resetDone}</small>`}
    <button onClick=${() => setEditing(!editing)}>Edit</button>
    <button class="danger" onClick=${remove}>Delete</button>
    ${editing &&
    html`<form class="inline-form" onSubmit=${save}>
      <input ...${f.bind('login')} aria-label="Login" required />
      <input ...${f.bind('password', 'password')} aria-label="New password" placeholder="new password (optional)" autocomplete="new-password" />
      <input ...${f.bind('notes')} aria-label="Notes" placeholder="notes" />
      <button type="submit">Save</button>
    </form>`}
    <${ErrorBox} error=${a.error} />
  </div>`;
}

// ------------------------------------------------------------------- import
const KNOWN_COLUMNS = ['name', 'resource_name', 'resource', 'type', 'resource_type', 'host', 'dns_name', 'ip', 'ip_address',
  'dns_name/ip', 'port', 'account', 'login', 'user_account', 'account_name', 'password', 'private_key', 'key', 'description', 'notes'];

export function Import() {
  const [text, setText] = useState('');
  const [report, setReport] = useState(null);
  const a = useAction();
  const rows = text ? parseCsv(text) : [];
  const header = rows[0] || [];
  const norm = header.map((h) => h.trim().toLowerCase().replace(/\s+/g, '_'));
  const unknown = norm.filter((h) => h && !KNOWN_COLUMNS.includes(h));
  const rowProblems = (r) => {
    const p = [];
    const get = (...names) => {
      const i = norm.findIndex((h) => names.includes(h));
      return i >= 0 ? (r[i] || '').trim() : '';
    };
    if (!get('name', 'resource_name', 'resource')) p.push('name is empty');
    if (!get('host', 'dns_name', 'ip', 'ip_address', 'dns_name/ip')) p.push('host is empty');
    const port = get('port');
    if (port && !(Number(port) >= 1 && Number(port) <= 65535)) p.push('port is not 1–65535');
    if (r.length !== header.length) p.push(`${r.length} cells, header has ${header.length}`);
    return p;
  };
  const onFile = (e) => {
    const file = e.currentTarget.files[0];
    if (file) file.text().then((t) => { setText(t); setReport(null); });
  };
  const submit = () => a.run(async () => setReport(await api('POST', '/api/v1/import/resources', text, { contentType: 'text/csv' })));
  const serverErrors = new Map((report?.errors || []).map((e) => [e.line, e]));
  const secretCols = new Set(norm.map((h, i) => (['password', 'private_key', 'key'].includes(h) ? i : -1)));
  return html`<${Page} title="Import resources and accounts (CSV)">
    <p>Columns: name, type, host, port, account, password, private_key, description, notes (the first line is the header).</p>
    <input type="file" accept=".csv,text/csv" onChange=${onFile} aria-label="CSV file" />
    <textarea rows="6" value=${text} onInput=${(e) => { setText(e.currentTarget.value); setReport(null); }}
      placeholder="name,type,host,account,password" aria-label="CSV text"></textarea>
    ${unknown.length > 0 && html`<p class="error">Unknown columns: ${unknown.join(', ')}</p>`}
    ${rows.length > 1 &&
    html`<h2>Preview (${rows.length - 1} rows)</h2>
      <table data-testid="import-preview">
        <thead><tr><th>line</th>${header.map((h) => html`<th>${h}</th>`)}<th>check</th></tr></thead>
        <tbody>${rows.slice(1, 201).map((r, i) => {
          const line = i + 2;
          const probs = rowProblems(r);
          const srv = serverErrors.get(line);
          return html`<tr class=${probs.length || srv ? 'bad' : ''}>
            <td>${line}</td>${r.map((c, j) => html`<td>${secretCols.has(j) && c ? '••••' : c}</td>`)}
            <td>${srv ? `${srv.field ? srv.field + ': ' : ''}${srv.message}` : probs.join('; ') || 'ok'}</td></tr>`;
        })}</tbody>
      </table>
      <button onClick=${submit} disabled=${a.busy} data-testid="import-submit">Import</button>`}
    <${ErrorBox} error=${a.error} />
    ${report &&
    html`<p class=${report.errors.length ? 'error' : 'ok'} data-testid="import-report">
      ${`${report.rows} rows: ${report.resources_created} resources and ${report.accounts_created} accounts created, ${report.errors.length} rows refused (marked above).`}</p>`}
  <//>`;
}

// -------------------------------------------------------------------- users
export function Users() {
  const list = useApi('/api/v1/users');
  const [adding, setAdding] = useState(false);
  const f = useForm({ username: '', role: 'password_user', email: '', password: '' });
  const a = useAction();
  const add = (e) => {
    e.preventDefault();
    a.run(async () => {
      const body = { username: f.values.username.trim(), role: f.values.role };
      if (f.values.email.trim()) body.email = f.values.email.trim();
      if (f.values.password) body.password = f.values.password;
      await api('POST', '/api/v1/users', body);
      f.reset();
      setAdding(false);
      list.reload();
    });
  };
  const patch = (u, body) => a.run(async () => {
    await api('PATCH', `/api/v1/users/${enc(u.id)}`, body);
    list.reload();
  });
  const remove = (u) => {
    if (!confirm(`Delete the user ${u.username}?`)) return;
    a.run(async () => {
      await api('DELETE', `/api/v1/users/${enc(u.id)}`);
      list.reload();
    });
  };
  return html`<${Page} title="Users" actions=${html`<button onClick=${() => setAdding(!adding)}>Add user</button>`}>
    ${adding &&
    html`<form class="card" onSubmit=${add}>
      <${Field} label="User name"><input ...${f.bind('username')} required /><//>
      <${Field} label="Role"><select ...${f.bind('role')}>${ROLES.map((r) => html`<option value=${r}>${r.replace(/_/g, ' ')}</option>`)}</select><//>
      <${Field} label="E-mail"><input ...${f.bind('email', 'email')} /><//>
      <${Field} label="Initial password" hint="The user must change it at first login"><input ...${f.bind('password', 'password')} autocomplete="new-password" /><//>
      <button type="submit" disabled=${a.busy}>Create user</button>
    </form>`}
    <${ErrorBox} error=${a.error || list.error} />
    <${Table} testid="users" rows=${list.data} columns=${[
      { key: 'username', label: 'User' },
      { key: 'role', label: 'Role' },
      { key: 'email', label: 'E-mail' },
      { label: 'State', render: (u) => [u.enabled ? 'enabled' : 'disabled', u.locked_until && 'locked', u.totp_enabled && 'TOTP'].filter(Boolean).join(', ') },
      { label: '', render: (u) => html`<div class="row-actions">
          <button onClick=${() => patch(u, { enabled: !u.enabled })}>${u.enabled ? 'Disable' : 'Enable'}</button>
          ${u.locked_until && html`<button onClick=${() => patch(u, { unlock: true })}>Unlock</button>`}
          <button class="danger" onClick=${() => remove(u)}>Delete</button></div>` },
    ]} />
  <//>`;
}

// -------------------------------------------------------------------- audit
const AUDIT_COLUMNS = ['seq', 'at', 'actor_name', 'action', 'object_type', 'object_name', 'object_id', 'client_ip', 'reason', 'outcome', 'detail'];
export function Audit() {
  const f = useForm({ actor: '', action: '', outcome: '', since: '', until: '', limit: '200' });
  const [query, setQuery] = useState('limit=200');
  const list = useApi(`/api/v1/audit?${query}`, [query]);
  const [verify, setVerify] = useState(null);
  const a = useAction();
  const search = (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(f.values)) {
      if (!String(v).trim()) continue;
      if (k === 'since' || k === 'until') q.set(k, new Date(v).toISOString().replace(/\.\d{3}Z$/, 'Z'));
      else q.set(k, String(v).trim());
    }
    setQuery(q.toString());
  };
  const exportCsv = () => download(`postern-audit-${new Date().toISOString().slice(0, 19)}.csv`, toCsv(list.data || [], AUDIT_COLUMNS));
  const check = () => a.run(async () => setVerify(await api('GET', '/api/v1/audit/verify')));
  return html`<${Page} title="Audit trail" actions=${html`
      <button onClick=${exportCsv} disabled=${!list.data} data-testid="audit-export">Export CSV</button>
      <button onClick=${check}>Verify chain</button>`}>
    <form class="filters" onSubmit=${search}>
      <${Field} label="Actor"><input ...${f.bind('actor')} /><//>
      <${Field} label="Action" hint="e.g. account. for a prefix"><input ...${f.bind('action')} /><//>
      <${Field} label="Outcome"><select ...${f.bind('outcome')}><option value="">any</option><option>success</option><option>denied</option><option>failure</option></select><//>
      <${Field} label="Since"><input ...${f.bind('since', 'datetime-local')} /><//>
      <${Field} label="Until"><input ...${f.bind('until', 'datetime-local')} /><//>
      <${Field} label="Max"><input ...${f.bind('limit', 'number')} min="1" max="1000" /><//>
      <button type="submit">Search</button>
    </form>
    ${verify && html`<p class="ok" data-testid="audit-verify">Chain verified: ${fmt(verify)}</p>`}
    <${ErrorBox} error=${a.error || list.error} />
    <${Table} testid="audit" rowKey=${(e) => e.seq} rows=${list.data} columns=${[
      { key: 'seq', label: '#' }, { key: 'at', label: 'When' }, { key: 'actor_name', label: 'Actor' },
      { key: 'action', label: 'Action' }, { label: 'Object', render: (e) => e.object_name || e.object_id || e.object_type },
      { key: 'outcome', label: 'Outcome' }, { key: 'reason', label: 'Reason' }, { key: 'client_ip', label: 'Client' },
      { key: 'detail', label: 'Detail' },
    ]} />
  <//>`;
}

// ----------------------------------------------- sharing, groups, requests
// Routes of issue 6 (shares, user/resource groups, access requests). Each
// screen shows a notice while its route is not on the server.

// Resources with their accounts, for pickers: [{resource, accounts}]
function useAccountsCatalog() {
  const [cat, setCat] = useState([]);
  useEffect(() => {
    let live = true;
    api('GET', '/api/v1/resources')
      .then((rs) => Promise.all(rs.map((r) => api('GET', `/api/v1/resources/${enc(r.id)}/accounts`)
        .then((accounts) => ({ resource: r, accounts }))
        .catch(() => ({ resource: r, accounts: [] })))))
      .then((c) => live && setCat(c))
      .catch(() => {});
    return () => { live = false; };
  }, []);
  return cat;
}

function accountLabel(cat, id) {
  for (const { resource, accounts } of cat) {
    const a = accounts.find((x) => x.id === id);
    if (a) return `${a.login}@${resource.name}`;
  }
  return id;
}

function AccountPicker({ cat, value, onChange, name = 'account_id' }) {
  return html`<select name=${name} id=${name} value=${value} onChange=${(e) => onChange(e.currentTarget.value)} required>
    <option value="">— choose an account —</option>
    ${cat.map(({ resource, accounts }) => html`<optgroup label=${resource.name}>
      ${accounts.map((a) => html`<option value=${a.id}>${a.login}@${resource.name}</option>`)}</optgroup>`)}
  </select>`;
}

export function Shares() {
  const list = useApi('/api/v1/shares');
  const users = useApi('/api/v1/users');
  const ugroups = useApi('/api/v1/user-groups');
  const rgroups = useApi('/api/v1/resource-groups');
  const cat = useAccountsCatalog();
  const f = useForm({ who: 'user', principal: '', what: 'account', object: '', level: 'connect' });
  const a = useAction();
  if (list.missing) return html`<${Page} title="Shares"><${NotOffered} what="sharing" /><//>`;
  const userName = (id) => (users.data || []).find((u) => u.id === id)?.username || id;
  const groupName = (list2, id) => (list2 || []).find((g) => g.id === id)?.name || id;
  const resourceName = (id) => cat.find((c) => c.resource.id === id)?.resource.name || id;
  const add = (e) => {
    e.preventDefault();
    const v = f.values;
    const body = { level: v.level };
    body[v.who === 'user' ? 'user_id' : 'group_id'] = v.principal;
    body[{ account: 'account_id', resource: 'resource_id', group: 'resource_group_id' }[v.what]] = v.object;
    a.run(async () => {
      await api('POST', '/api/v1/shares', body);
      f.setValues({ ...v, object: '' });
      list.reload();
    });
  };
  const revoke = (sh) => {
    if (!confirm('Revoke this share?')) return;
    a.run(async () => {
      await api('DELETE', `/api/v1/shares/${enc(sh.id)}`);
      list.reload();
    });
  };
  const principals = f.values.who === 'user'
    ? (users.data || []).map((u) => [u.id, u.username])
    : (ugroups.data || []).map((g) => [g.id, g.name]);
  const objects = f.values.what === 'resource'
    ? cat.map((c) => [c.resource.id, c.resource.name])
    : (rgroups.data || []).map((g) => [g.id, g.name]);
  const bindPick = (name) => ({ name, id: name, value: f.values[name], onChange: (e) => f.setValues({ ...f.values, [name]: e.currentTarget.value }) });
  return html`<${Page} title="Shares" actions=${html`<${Link} class="button" href="/groups">Groups<//>`}>
    <p class="muted">Levels: <b>connect</b> (sessions through the gateway only, the password is never shown),
      <b>view</b>, <b>modify</b>, <b>full</b> (may re-share).</p>
    <form class="filters" onSubmit=${add} data-testid="share-form">
      <${Field} label="With"><select ...${bindPick('who')}><option value="user">user</option><option value="group">user group</option></select><//>
      <${Field} label="Who"><select ...${bindPick('principal')} required>
        <option value="">—</option>${principals.map(([id, n]) => html`<option value=${id}>${n}</option>`)}</select><//>
      <${Field} label="Share"><select ...${bindPick('what')}>
        <option value="account">account</option><option value="resource">resource</option><option value="group">resource group</option></select><//>
      <${Field} label="What">${f.values.what === 'account'
        ? html`<${AccountPicker} cat=${cat} name="object" value=${f.values.object} onChange=${(v) => f.setValues({ ...f.values, object: v })} />`
        : html`<select ...${bindPick('object')} required><option value="">—</option>${objects.map(([id, n]) => html`<option value=${id}>${n}</option>`)}</select>`}<//>
      <${Field} label="Level"><select ...${bindPick('level')}>${['connect', 'view', 'modify', 'full'].map((l) => html`<option>${l}</option>`)}</select><//>
      <button type="submit" disabled=${a.busy}>Share</button>
    </form>
    <${ErrorBox} error=${a.error || list.error} />
    <${Table} testid="shares" rows=${list.data} columns=${[
      { label: 'With', render: (x) => (x.user_id ? userName(x.user_id) : `group ${groupName(ugroups.data, x.group_id)}`) },
      { label: 'What', render: (x) => (x.account_id ? accountLabel(cat, x.account_id) : x.resource_id ? `resource ${resourceName(x.resource_id)}` : `resource group ${groupName(rgroups.data, x.resource_group_id)}`) },
      { key: 'level', label: 'Level' },
      { key: 'created_at', label: 'Since' },
      { label: '', render: (x) => html`<button class="danger" onClick=${() => revoke(x)}>Revoke</button>` },
    ]} />
  <//>`;
}

function GroupList({ title, path, candidates, testid, canRandomize }) {
  const list = useApi(path);
  const [results, setResults] = useState(null);
  const f = useForm({ name: '', description: '' });
  const [pick, setPick] = useState({});
  const a = useAction();
  if (list.missing) return html`<h2>${title}</h2><${NotOffered} what=${title.toLowerCase()} />`;
  const name = (id) => candidates.find(([cid]) => cid === id)?.[1] || id;
  const add = (e) => {
    e.preventDefault();
    a.run(async () => {
      const body = { name: f.values.name.trim() };
      if (f.values.description.trim()) body.description = f.values.description.trim();
      await api('POST', path, body);
      f.reset();
      list.reload();
    });
  };
  const member = (g, id, method) => a.run(async () => {
    await api(method, `${path}/${enc(g.id)}/members/${enc(id)}`);
    list.reload();
  });
  const randomize = canRandomize ? (g) => {
    if (!confirm(`Generate new passwords for every account of ${g.name} and set them on the targets now?`)) return;
    setResults({ group: g.name, running: true });
    a.run(async () => {
      try {
        // The server answers with a job (202); follow its progress until every account is done.
        let job = await api('POST', `${path}/${enc(g.id)}/randomize`);
        while (job && !Array.isArray(job) && job.id && !job.finished) {
          setResults({ group: g.name, running: true, done: job.done, total: job.total });
          await new Promise((r) => setTimeout(r, 1000));
          job = await api('GET', `/api/v1/jobs/${enc(job.id)}`);
        }
        setResults({ group: g.name, rows: Array.isArray(job) ? job : job.results });
      } catch (e) {
        setResults(null);
        throw e;
      }
    });
  } : null;
  const remove = (g) => {
    if (!confirm(`Delete the group ${g.name}?`)) return;
    a.run(async () => {
      await api('DELETE', `${path}/${enc(g.id)}`);
      list.reload();
    });
  };
  return html`<h2>${title}</h2>
    <form class="inline-form" onSubmit=${add}>
      <input ...${f.bind('name')} placeholder="name" aria-label=${`${title} name`} required />
      <input ...${f.bind('description')} placeholder="description" aria-label=${`${title} description`} />
      <button type="submit">Create</button>
    </form>
    <${ErrorBox} error=${a.error || list.error} />
    <${Table} testid=${testid} rows=${list.data} columns=${[
      { key: 'name', label: 'Name' },
      { key: 'description', label: 'Description' },
      { label: 'Members', render: (g) => html`<div class="chips">${(g.members || []).map((m) => html`<span class="chip">${name(m)}
          <button class="link" title="Remove" onClick=${() => member(g, m, 'DELETE')}>×</button></span>`)}</div>` },
      { label: 'Add', render: (g) => html`<span class="inline-form">
          <select value=${pick[g.id] || ''} onChange=${(e) => setPick({ ...pick, [g.id]: e.currentTarget.value })} aria-label="Member to add">
            <option value="">—</option>${candidates.filter(([id]) => !(g.members || []).includes(id)).map(([id, n]) => html`<option value=${id}>${n}</option>`)}</select>
          <button disabled=${!pick[g.id]} onClick=${() => member(g, pick[g.id], 'POST')}>Add</button></span>` },
      { label: '', render: (g) => html`<div class="row-actions">
          ${randomize && offers('POST /api/v1/resource-groups/{id}/randomize') && html`<button onClick=${() => randomize(g)} disabled=${a.busy}>Randomize now</button>`}
          <button class="danger" onClick=${() => remove(g)}>Delete</button></div>` },
    ]} />
    ${results && html`<h3>Randomize: ${results.group}</h3>
      ${results.running ? html`<p class="muted" data-testid="randomize-progress">Resetting every account of the group on its target…${results.total ? ` ${results.done}/${results.total}` : ''}</p>`
        : html`<${AutoTable} rows=${results.rows} testid="randomize-results" />`}`}`;
}

export function Groups() {
  const users = useApi('/api/v1/users');
  const resources = useApi('/api/v1/resources');
  return html`<${Page} title="Groups">
    <${GroupList} title="User groups" path="/api/v1/user-groups" testid="user-groups"
      candidates=${(users.data || []).map((u) => [u.id, u.username])} />
    <${GroupList} title="Resource groups" path="/api/v1/resource-groups" testid="resource-groups" canRandomize=${true}
      candidates=${(resources.data || []).map((r) => [r.id, r.name])} />
  <//>`;
}

function Countdown({ until }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  const left = Math.max(0, Math.floor((Date.parse(until) - now) / 1000));
  const text = `${Math.floor(left / 3600)}:${String(Math.floor((left % 3600) / 60)).padStart(2, '0')}:${String(left % 60).padStart(2, '0')}`;
  return html`<span class=${left < 300 ? 'error' : ''} data-testid="countdown">${left ? `${text} left` : 'window ended'}</span>`;
}

export function AccessRequests({ me }) {
  const list = useApi('/api/v1/access-requests');
  const users = useApi('/api/v1/users');
  const cat = useAccountsCatalog();
  const preset = new URLSearchParams(location.search).get('account') || '';
  const f = useForm({ account_id: preset, reason: '', ticket_id: '', window_minutes: '60' });
  const a = useAction();
  useEffect(() => {
    const t = setInterval(() => list.reload(true), 15000);
    return () => clearInterval(t);
  }, [list.reload]);
  if (list.missing) return html`<${Page} title="Access requests"><${NotOffered} what="access requests" /><//>`;
  const userName = (id) => (users.data || []).find((u) => u.id === id)?.username || (id === me?.id ? me.username : id);
  const act = (r, step) => a.run(async () => {
    await api('POST', `/api/v1/access-requests/${enc(r.id)}/${step}`);
    list.reload();
  });
  const add = (e) => {
    e.preventDefault();
    a.run(async () => {
      const body = { account_id: f.values.account_id, reason: f.values.reason.trim() };
      if (f.values.ticket_id.trim()) body.ticket_id = f.values.ticket_id.trim();
      if (String(f.values.window_minutes).trim()) body.window_minutes = Number(f.values.window_minutes);
      await api('POST', '/api/v1/access-requests', body);
      f.setValues({ ...f.values, reason: '', ticket_id: '' });
      list.reload();
    });
  };
  const mine = (r) => me && r.requester_id === me.id;
  const actions = (r) => {
    const b = [];
    if (r.state === 'requested' && !mine(r)) b.push(['approve', 'Approve'], ['deny', 'Deny']);
    if (r.state === 'approved' && mine(r)) b.push(['checkout', 'Check out']);
    if (r.state === 'checked_out') b.push(['checkin', 'Check in']);
    return html`<div class="row-actions">${b.map(([step, label]) => html`<button onClick=${() => act(r, step)}>${label}</button>`)}
      ${r.state === 'checked_out' && mine(r) && html`<button onClick=${() => navigate(`/terminal/${r.account_id}`)}>Connect</button>`}</div>`;
  };
  return html`<${Page} title="Access requests">
    <form class="filters" onSubmit=${add} data-testid="request-form">
      <${Field} label="Account"><${AccountPicker} cat=${cat} value=${f.values.account_id} onChange=${(v) => f.setValues({ ...f.values, account_id: v })} /><//>
      <${Field} label="Reason"><input ...${f.bind('reason')} required size="30" /><//>
      <${Field} label="Ticket"><input ...${f.bind('ticket_id')} size="10" /><//>
      <${Field} label="Minutes"><input ...${f.bind('window_minutes', 'number')} min="1" /><//>
      <button type="submit" disabled=${a.busy}>Request access</button>
    </form>
    <${ErrorBox} error=${a.error || list.error} />
    <${Table} testid="access-requests" rows=${list.data} columns=${[
      { key: 'created_at', label: 'Asked' },
      { label: 'By', render: (r) => userName(r.requester_id) },
      { label: 'Account', render: (r) => accountLabel(cat, r.account_id) },
      { key: 'reason', label: 'Reason' },
      { key: 'ticket_id', label: 'Ticket' },
      { label: 'State', render: (r) => html`${r.state.replace(/_/g, ' ')}${r.state === 'requested' ? ` (${r.approvals.length}/${r.needed})` : ''}
          ${r.state === 'checked_out' && r.window_end ? html`<br /><${Countdown} until=${r.window_end} />` : ''}
          ${r.reset_outcome ? html`<br /><small>${r.reset_outcome}</small>` : ''}` },
      { label: '', render: actions },
    ]} />
  <//>`;
}

// Custom roles (issue 6): a proposal or an edit is in force only once a
// second administrator approves it (the author cannot).
export function Roles({ me }) {
  const list = useApi('/api/v1/roles');
  const cat = useApi('/api/v1/roles/catalogue');
  const users = useApi('/api/v1/users');
  const [adding, setAdding] = useState(false);
  const f = useForm({ name: '', description: '' });
  const [ops, setOps] = useState([]);
  const [assign, setAssign] = useState({});
  const a = useAction();
  if (list.missing) return html`<${Page} title="Roles"><${NotOffered} what="custom roles" /><//>`;
  const userName = (id) => (users.data || []).find((u) => u.id === id)?.username || id;
  const toggle = (id) => setOps(ops.includes(id) ? ops.filter((x) => x !== id) : [...ops, id]);
  const propose = (e) => {
    e.preventDefault();
    a.run(async () => {
      const body = { name: f.values.name.trim(), operations: ops };
      if (f.values.description.trim()) body.description = f.values.description.trim();
      await api('POST', '/api/v1/roles', body);
      f.reset();
      setOps([]);
      setAdding(false);
      list.reload();
    });
  };
  const approve = (r) => a.run(async () => {
    await api('POST', `/api/v1/roles/${enc(r.id)}/approve`);
    list.reload();
  });
  const doAssign = (r) => a.run(async () => {
    await api('POST', `/api/v1/roles/${enc(r.id)}/assign`, { user_ids: [assign[r.id]] });
    list.reload();
    users.reload();
  });
  const remove = (r) => {
    if (!confirm(`Delete the role ${r.name}? Its users move to the default role.`)) return;
    a.run(async () => {
      await api('DELETE', `/api/v1/roles/${enc(r.id)}`);
      list.reload();
    });
  };
  const byCategory = {};
  for (const c of cat.data || []) (byCategory[c.category] ||= []).push(c);
  return html`<${Page} title="Roles" actions=${html`<button onClick=${() => setAdding(!adding)}>Propose a role</button>`}>
    ${adding &&
    html`<form class="card wide" onSubmit=${propose}>
      <${Field} label="Name"><input ...${f.bind('name')} required /><//>
      <${Field} label="Description"><input ...${f.bind('description')} /><//>
      ${Object.entries(byCategory).map(([category, entries]) => html`<fieldset><legend>${category}</legend>
        ${entries.map((c) => html`<label class="check"><input type="checkbox" checked=${ops.includes(c.id)} onChange=${() => toggle(c.id)} /> ${c.name || c.id}</label>`)}
      </fieldset>`)}
      <p class="muted">The role takes effect only after another administrator approves it.</p>
      <button type="submit" disabled=${a.busy}>Propose</button>
    </form>`}
    <${ErrorBox} error=${a.error || list.error} />
    <${Table} testid="roles" rows=${list.data} columns=${[
      { key: 'name', label: 'Role' },
      { label: 'Kind', render: (r) => (r.builtin ? 'predefined' : 'custom') },
      { label: 'Operations', render: (r) => `${(r.operations || []).length}` },
      { label: 'Pending change', render: (r) => (r.pending ? `${r.pending.length} operations, by ${userName(r.pending_author)}` : '') },
      { key: 'users', label: 'Users' },
      { label: '', render: (r) => html`<div class="row-actions">
          ${r.pending && r.pending_author !== me?.id && html`<button onClick=${() => approve(r)}>Approve</button>`}
          ${!r.builtin && html`<select value=${assign[r.id] || ''} onChange=${(e) => setAssign({ ...assign, [r.id]: e.currentTarget.value })} aria-label="User to assign">
              <option value="">—</option>${(users.data || []).map((u) => html`<option value=${u.id}>${u.username}</option>`)}</select>
            <button disabled=${!assign[r.id]} onClick=${() => doAssign(r)}>Assign</button>
            <button class="danger" onClick=${() => remove(r)}>Delete</button>`}</div>` },
    ]} />
  <//>`;
}

function clock(seconds) {
  const t = Math.max(0, Math.floor(seconds || 0));
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, '0')}`;
}

export function Recordings() {
  const f = useForm({ user: '', target: '', protocol: '', from: '', to: '' });
  const [filter, setFilter] = useState('limit=100');
  const [q, setQ] = useState('');
  const [search, setSearch] = useState('');
  const list = useApi(`/api/v1/recordings?${filter}`, [filter]);
  const hits = useApi(search ? `/api/v1/recordings/search?q=${enc(search)}` : null, [search]);
  const applyFilter = (e) => {
    e.preventDefault();
    const p = new URLSearchParams({ limit: '100' });
    for (const [k, v] of Object.entries(f.values)) {
      if (!String(v).trim()) continue;
      p.set(k, k === 'from' || k === 'to' ? new Date(v).toISOString().replace(/\.\d{3}Z$/, 'Z') : String(v).trim());
    }
    setFilter(p.toString());
  };
  if (list.missing) return html`<${Page} title="Recordings"><${NotOffered} what="recordings" /><//>`;
  return html`<${Page} title="Recordings">
    <form class="inline-form" onSubmit=${(e) => { e.preventDefault(); setSearch(q.trim()); }}>
      <input value=${q} onInput=${(e) => setQ(e.currentTarget.value)} placeholder="a word typed or shown in a session"
        aria-label="Search recordings" size="40" />
      <button type="submit">Search</button>
      ${search && html`<button type="button" onClick=${() => { setQ(''); setSearch(''); }}>Clear</button>`}
    </form>
    ${search &&
    html`<h2>Sessions containing “${search}”</h2>
      <${ErrorBox} error=${hits.error} />
      ${hits.data && hits.data.length === 0 && html`<p class="muted" data-testid="search-empty">No recording contains it (recent sessions may still be indexing).</p>`}
      <ul class="hits" data-testid="search-results">
        ${(hits.data || []).map((r) => html`<li>
          <b>${r.recording.user} → ${r.recording.target}</b> <span class="muted">${r.recording.started_at}</span>
          <ul>${r.hits.map((h) => html`<li>
            <${Link} href=${`/recordings/${r.recording.id}?t=${h.offset}`}>${clock(h.offset)}<//>
            <span class="muted"> ${h.kind} </span><code>${h.snippet}</code></li>`)}</ul>
        </li>`)}
      </ul>`}
    <h2>All recordings</h2>
    <form class="filters" onSubmit=${applyFilter}>
      <${Field} label="User"><input ...${f.bind('user')} /><//>
      <${Field} label="Target" hint="ACCOUNT@RESOURCE"><input ...${f.bind('target')} /><//>
      <${Field} label="Protocol"><input ...${f.bind('protocol')} placeholder="ssh" /><//>
      <${Field} label="From"><input ...${f.bind('from', 'datetime-local')} /><//>
      <${Field} label="To"><input ...${f.bind('to', 'datetime-local')} /><//>
      <button type="submit">Filter</button>
    </form>
    <${ErrorBox} error=${list.error} />
    <${Table} testid="recordings" rows=${list.data} columns=${[
      { label: 'Started', render: (r) => html`<${Link} href=${`/recordings/${r.id}`}>${r.started_at}<//>` },
      { key: 'user', label: 'User' },
      { key: 'target', label: 'Target' },
      { key: 'protocol', label: 'Protocol' },
      { label: 'Status', render: (r) => fmt(r.status) },
      { label: 'Size', render: (r) => (r.size == null ? '' : `${Math.ceil(r.size / 1024)} KiB`) },
      { label: '', render: (r) => html`<a href=${`/api/v1/recordings/${r.id}/cast`} download=${`${r.id}.cast`}>.cast</a>` },
    ]} />
  <//>`;
}

// ----------------------------------------------------------------- settings
export function Settings() {
  const st = useApi('/api/v1/settings');
  return html`<${Page} title="Settings">
    <p class="muted">The effective configuration (file, environment and command line; credentials in URLs are hidden).
      Change it in the configuration file and restart; <code>postern check</code> validates a file first.</p>
    ${st.missing ? html`<${NotOffered} what="settings" />` : st.error ? html`<${ErrorBox} error=${st.error} />` : html`
      <${Table} testid="settings" rows=${st.data} columns=${[
        { key: 'key', label: 'Key' },
        { label: 'Value', render: (e) => html`<code>${e.value}</code>` },
      ]} />`}
  <//>`;
}

export function NotFoundPage() {
  return html`<${Page} title="Not found"><p>No such page. <${Link} href="/">Back to the dashboard<//></p><//>`;
}
