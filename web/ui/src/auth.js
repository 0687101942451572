// Login (password + TOTP), the forced password change, TOTP enrolment.
import { useState } from 'preact/hooks';
import { encode } from 'uqr';
import { api, setCsrf } from './api.js';
import { html, useForm, useAction, Field, ErrorBox, Page, navigate } from './ui.js';

export async function webLogin(username, password, totp) {
  const body = { username, password };
  if (totp) body.totp = totp;
  const s = await api('POST', '/api/v1/auth/web-login', body, { noRedirect: true });
  setCsrf(s.csrf_token);
  return s;
}

export function Login({ onLogin, notice }) {
  const f = useForm({ username: '', password: '', totp: '' });
  const [needTotp, setNeedTotp] = useState(false);
  const a = useAction();
  const submit = (e) => {
    e.preventDefault();
    a.run(async () => {
      try {
        const s = await webLogin(f.values.username, f.values.password, needTotp ? f.values.totp.trim() : undefined);
        onLogin(s, f.values.password);
      } catch (err) {
        if (err.slug === 'totp-required') {
          setNeedTotp(true);
          return;
        }
        throw err;
      }
    });
  };
  return html`<main class="login">
    <form class="card" onSubmit=${submit} data-testid="login-form">
      <h1>Postern</h1>
      ${notice && html`<p class="notice">${notice}</p>`}
      <${Field} label="User name"><input ...${f.bind('username')} autocomplete="username" required autofocus /><//>
      <${Field} label="Password"><input ...${f.bind('password', 'password')} autocomplete="current-password" required /><//>
      ${needTotp &&
      html`<${Field} label="Authenticator code" hint="Six digits from your authenticator app">
        <input ...${f.bind('totp')} inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" required autofocus />
      <//>`}
      <${ErrorBox} error=${a.error} />
      <button type="submit" disabled=${a.busy}>Log in</button>
    </form>
  </main>`;
}

// Shown instead of everything else while the server says the password must change.
export function ForcedPasswordChange({ session, knownPassword, onDone }) {
  const f = useForm({ current_password: knownPassword || '', new_password: '', confirm: '' });
  const a = useAction();
  const submit = (e) => {
    e.preventDefault();
    a.run(async () => {
      if (f.values.new_password !== f.values.confirm) {
        throw new Error('The two new passwords differ.');
      }
      await api('POST', '/api/v1/me/password', {
        current_password: f.values.current_password,
        new_password: f.values.new_password,
      });
      // Every session of the user ended with the change: log in again.
      const s = await webLogin(session.user.username, f.values.new_password);
      onDone(s);
    });
  };
  return html`<main class="login">
    <form class="card" onSubmit=${submit} data-testid="password-change-form">
      <h1>Choose a new password</h1>
      <p>You must change the password of <b>${session.user.username}</b> before going on.</p>
      <${Field} label="Current password"><input ...${f.bind('current_password', 'password')} autocomplete="current-password" required /><//>
      <${Field} label="New password" hint="At least 12 characters"><input ...${f.bind('new_password', 'password')} autocomplete="new-password" required /><//>
      <${Field} label="New password again"><input ...${f.bind('confirm', 'password')} autocomplete="new-password" required /><//>
      <${ErrorBox} error=${a.error} />
      <button type="submit" disabled=${a.busy}>Change password</button>
    </form>
  </main>`;
}

// QR code drawn from the otpauth URI in the browser (the secret never goes to a third party).
export function QrCode({ text }) {
  const qr = encode(text, { ecc: 'M', border: 2 });
  const n = qr.data.length;
  let d = '';
  qr.data.forEach((row, y) =>
    row.forEach((on, x) => {
      if (on) d += `M${x} ${y}h1v1h-1z`;
    }),
  );
  return html`<svg class="qr" data-testid="totp-qr" viewBox="0 0 ${n} ${n}" width="220" height="220" role="img" aria-label="TOTP QR code">
    <rect width=${n} height=${n} fill="#fff" />
    <path d=${d} fill="#000" />
  </svg>`;
}

export function MyAccount({ session, onChanged }) {
  const user = session.user;
  const [enrol, setEnrol] = useState(null);
  const [done, setDone] = useState(false);
  const f = useForm({ code: '' });
  const a = useAction();
  const pw = useForm({ current_password: '', new_password: '' });
  const pa = useAction();
  const begin = () => a.run(async () => setEnrol(await api('POST', '/api/v1/me/totp')));
  const confirm = (e) => {
    e.preventDefault();
    a.run(async () => {
      await api('POST', '/api/v1/me/totp/confirm', { code: f.values.code.trim() });
      setEnrol(null);
      setDone(true);
      onChanged();
    });
  };
  const changePw = (e) => {
    e.preventDefault();
    pa.run(async () => {
      await api('POST', '/api/v1/me/password', pw.values);
      const s = await webLogin(user.username, pw.values.new_password);
      onChanged(s);
      pw.reset();
    });
  };
  return html`<${Page} title="My account">
    <dl class="facts">
      <dt>User</dt><dd>${user.username}</dd>
      <dt>Role</dt><dd>${user.role}${user.super_admin ? ' (super admin)' : ''}</dd>
      <dt>Two-factor</dt><dd data-testid="totp-status">${user.totp_enabled || done ? 'enabled' : 'not enabled'}</dd>
    </dl>
    <h2>Two-factor authentication (TOTP)</h2>
    ${done && html`<p class="ok" data-testid="totp-enabled">TOTP is enabled. From now on, logging in asks for a code.</p>`}
    ${!user.totp_enabled && !done && !enrol && html`<button onClick=${begin} disabled=${a.busy} data-testid="totp-begin">Set up an authenticator</button>`}
    ${enrol &&
    html`<div class="card">
      <p>Scan this code with an authenticator app (or type the key), then enter the code it shows.</p>
      <${QrCode} text=${enrol.otpauth_uri} />
      <p>Key: <code data-testid="totp-secret">${enrol.secret}</code></p>
      <form onSubmit=${confirm}>
        <${Field} label="Code"><input ...${f.bind('code')} inputmode="numeric" autocomplete="one-time-code" required /><//>
        <button type="submit" disabled=${a.busy}>Confirm</button>
      </form>
    </div>`}
    <${ErrorBox} error=${a.error} />
    <h2>Password</h2>
    <form class="inline-form" onSubmit=${changePw}>
      <${Field} label="Current password"><input ...${pw.bind('current_password', 'password')} autocomplete="current-password" required /><//>
      <${Field} label="New password"><input ...${pw.bind('new_password', 'password')} autocomplete="new-password" required /><//>
      <button type="submit" disabled=${pa.busy}>Change</button>
    </form>
    <${ErrorBox} error=${pa.error} />
  <//>`;
}

export function goHome() {
  navigate('/');
}
