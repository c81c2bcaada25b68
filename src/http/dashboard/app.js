// devicehub dashboard: plain ES2020 (loaded as a module, so strict and
// scoped), no dependencies. Talks to the tenant API with the access token
// the user pasted (kept in sessionStorage only).
//
// Built for big fleets: the list shows one page at a time (newest first by
// default), searching, filtering and counting all happen on the server, and
// the filters live in the address bar's query string.

const TOKEN_KEY = 'devicehub.token';
const PAGE_SIZE = 50;
// How long search waits after a keystroke before it asks the server: long
// enough that fast typing sends one request, short enough not to be felt.
// A newer search aborts the request of an older one (`load`), and a search
// by name reads the server's compact name index, so an extra request is cheap.
const SEARCH_DELAY_MS = 60;
const MAX_TAGS = 100;
const TAG_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const TAG_RULE = '1-64 characters of A-Z a-z 0-9 _ - . :';
const ID_RE = /^dev_[0-9A-HJKMNP-TV-Z]{26}$/;
const CONTROL_RE = /\p{Cc}/u;
const ONLINE_MS = 15 * 60000;
const STALE_MS = 24 * 3600000;
const EXPIRY_WARNING_MS = 10 * 60000;
const STATUSES = ['active', 'inactive', 'revoked'];
const NOT_A_TOKEN =
  'That does not look like an access token: expected a JWT (three base64url parts separated by dots).';

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};
// A name set apart from the text around it, so that right-to-left or
// direction-changing characters in it cannot reorder the sentence.
const bdi = (text) => el('bdi', null, text);
// Builds a text node list from strings and nodes: msg('Revoke ', bdi(name), '?').
const msg = (...parts) => {
  const frag = document.createDocumentFragment();
  for (const p of parts) frag.append(typeof p === 'string' ? document.createTextNode(p) : p);
  return frag;
};
const quoted = (name) => msg('“', bdi(name), '”');
const numberFormat = new Intl.NumberFormat();
const fmt = (n) => numberFormat.format(n);

// --- state

const S = {
  token: null,
  claims: null,
  scopes: [],
  admin: false,
  session: 0, // bumped on sign in / sign out; stale responses are dropped
  gen: 0, // bumped on every list load; stale pages are dropped
  controller: null, // aborts the list request in flight
  page: [], // the devices shown, in display order
  byId: new Map(),
  rows: new Map(), // id -> <tr>
  knownLocations: new Set(),
  filters: { q: '', status: '', location: '', stale: false, order: 'desc' },
  cursor: null, // null (first page), { after: id } or { before: id }
  offset: 0, // index of the page's first device, when known (else null)
  hasNext: false,
  hasPrev: false,
  loading: false,
  loaded: false,
  stats: null,
  statsError: false,
  registerAttempt: null, // { body, key }: the Idempotency-Key of the form as sent
  editing: null, // { id, etag, name }
  highlight: null, // id of a device just registered
  pendingToken: null, // a #token= link waiting for the user's answer
  view: 'devices', // the page shown: 'devices' or 'webhooks' (?view=webhooks)
};

const ui = {};

// --- token

function storeToken(token) {
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch (_) {
    // Storage blocked: the token lives in memory for this page only.
  }
}

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch (_) {
    return null;
  }
}

function forgetToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    // nothing stored
  }
}

function cleanToken(text) {
  return String(text || '').trim().replace(/^Bearer\s+/i, '').replace(/\s+/g, '');
}

// Takes `#token=<jwt>` from the address bar and removes it at once.
function takeFragmentToken() {
  const hash = window.location.hash;
  if (!hash || hash.length < 2) return null;
  const params = new URLSearchParams(hash.slice(1));
  if (!params.has('token')) return null;
  const token = cleanToken(params.get('token'));
  history.replaceState(history.state, '', window.location.pathname + window.location.search);
  return token || null;
}

// Display only: the server verifies the token on every call.
function decodeClaims(token) {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[0] || !parts[1]) return null;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    b64 += '='.repeat((4 - (b64.length % 4)) % 4);
    const binary = atob(b64);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' && !Array.isArray(claims) ? claims : null;
  } catch (_) {
    return null;
  }
}

function scopeWords(claims) {
  let value = claims.scope;
  if (value === undefined || value === null) value = claims.scp;
  if (typeof value === 'string') return value.split(/\s+/).filter(Boolean);
  if (Array.isArray(value)) return value.filter((w) => typeof w === 'string' && w);
  return [];
}

function tenantOf(claims) {
  return claims && claims.tenant_id !== undefined && claims.tenant_id !== null ? String(claims.tenant_id) : '';
}

function expiryOf(claims) {
  const exp = claims ? claims.exp : undefined;
  if (typeof exp !== 'number' || !Number.isFinite(exp) || Math.abs(exp) > 8.64e12) return null;
  return exp * 1000;
}

// --- time

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });

function formatDay(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? String(iso) : dayFormat.format(t);
}

function formatDate(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? String(iso) : dateFormat.format(t);
}

function plural(n, word) {
  return `${fmt(n)} ${word}${n === 1 ? '' : 's'}`;
}

function span(ms) {
  const min = Math.floor(ms / 60000);
  if (min < 1) return 'less than a minute';
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  if (h < 48) return plural(h, 'hour');
  return plural(Math.floor(h / 24), 'day');
}

function relTime(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  const ms = Date.now() - t;
  if (ms < -60000) return formatDate(iso);
  if (ms < 60000) return 'just now';
  if (ms > 30 * 86400000) return formatDate(iso);
  return `${span(ms)} ago`;
}

// online: seen in the last 15 min; quiet: in the last 24 h; stale: longer
// ago; never: not seen since it was registered.
function activity(d) {
  if (!d.lastSeenAt) return { kind: 'never', label: 'Never seen' };
  const t = Date.parse(d.lastSeenAt);
  if (Number.isNaN(t)) return { kind: 'never', label: 'Unknown' };
  const ms = Date.now() - t;
  if (ms <= ONLINE_MS) return { kind: 'online', label: 'Online' };
  if (ms <= STALE_MS) return { kind: 'quiet', label: 'Quiet' };
  return { kind: 'stale', label: 'Stale' };
}

// --- toasts
// Errors go to an alert region and stay until dismissed or until the
// problem is gone (the same key is cleared by a later success); successes go
// to a polite status region and leave after a few seconds.

function sentence(text) {
  const s = String(text || '').trim();
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

function toast(content, { kind = 'error', key = '' } = {}) {
  const region = kind === 'error' ? ui.toastAlerts : ui.toastStatus;
  if (key) dismissToast(key);
  const item = el('div', `toast-item toast-${kind}`);
  if (key) item.dataset.key = key;
  const text = el('p', 'toast-text');
  text.append(typeof content === 'string' ? document.createTextNode(content) : content);
  const close = el('button', 'toast-close', 'Dismiss');
  close.type = 'button';
  close.addEventListener('click', () => item.remove());
  item.append(text, close);
  region.append(item);
  while (region.children.length > 3) region.firstElementChild.remove();
  if (kind !== 'error') setTimeout(() => item.remove(), 6000);
}

function dismissToast(key) {
  for (const item of document.querySelectorAll('.toast-item[data-key]')) {
    if (item.dataset.key === key) item.remove();
  }
}

function describe(err) {
  if (err instanceof ApiError) {
    const tail = err.status && err.status !== 400 ? ` (${err.code})` : '';
    return sentence(err.message) + tail;
  }
  return sentence((err && err.message) || String(err));
}

// --- API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.handled = false;
  }
}

// Fallbacks for error answers without our JSON envelope (e.g. a proxy's).
const STATUS_TEXT = {
  413: 'the request is too large',
  500: 'the server had an internal error',
  502: 'the server is unreachable (bad gateway)',
  503: 'the service is unavailable just now',
  504: 'the server did not answer in time',
};

async function api(method, path, options = {}) {
  const session = S.session;
  const headers = { Accept: 'application/json', Authorization: `Bearer ${S.token}` };
  let body;
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.body);
  }
  if (options.ifMatch) headers['If-Match'] = options.ifMatch;
  if (options.idempotencyKey) headers['Idempotency-Key'] = options.idempotencyKey;
  let res;
  let text = '';
  try {
    res = await fetch(path, {
      method, headers, body, cache: 'no-store', credentials: 'same-origin', signal: options.signal,
    });
    text = await res.text();
  } catch (_) {
    const aborted = options.signal && options.signal.aborted;
    const e = new ApiError(0, aborted ? 'aborted' : 'network_error',
      'the server could not be reached. Check the network connection and try again');
    if (aborted || session !== S.session) e.handled = true;
    throw e;
  }
  if (session !== S.session) {
    const stale = new ApiError(0, 'stale', 'signed out');
    stale.handled = true;
    throw stale;
  }
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (!res.ok) {
    const envelope = data && data.error && typeof data.error === 'object' ? data.error : {};
    const code = typeof envelope.code === 'string' && envelope.code ? envelope.code : `http_${res.status}`;
    const message =
      typeof envelope.message === 'string' && envelope.message
        ? envelope.message
        : STATUS_TEXT[res.status] || `the server answered HTTP ${res.status}`;
    const e = new ApiError(res.status, code, message);
    if (res.status === 401) {
      e.handled = true;
      signOut(`You were signed out: ${sentence(message)} Paste a valid token to continue.`);
    }
    throw e;
  }
  if (!data || typeof data !== 'object') {
    throw new ApiError(res.status, 'bad_response', `the server sent an unexpected response (HTTP ${res.status})`);
  }
  return { data, etag: res.headers.get('ETag') };
}

const devicePath = (id) => `/api/tenant/devices/${encodeURIComponent(id)}`;

function normalize(d) {
  if (!d || typeof d !== 'object' || typeof d.id !== 'string') return null;
  const list = (v) => (Array.isArray(v) ? v.filter((x) => typeof x === 'string') : []);
  const time = (v) => (typeof v === 'string' && v ? v : null);
  return {
    ...d,
    name: typeof d.name === 'string' ? d.name : '',
    status: typeof d.status === 'string' ? d.status : 'unknown',
    locationIds: list(d.locationIds),
    pimEnabled: d.pimEnabled === true,
    pimSegmentIds: list(d.pimSegmentIds),
    createdAt: time(d.createdAt),
    updatedAt: time(d.updatedAt),
    lastSeenAt: time(d.lastSeenAt),
  };
}

function deviceFrom(data) {
  const d = normalize(data && data.data);
  if (!d) throw new ApiError(200, 'bad_response', 'the server sent no device');
  return d;
}

// --- the address bar: filters and the page cursor live in the query string

function readUrl() {
  const p = new URLSearchParams(window.location.search);
  const f = { q: '', status: '', location: '', stale: false, order: 'desc' };
  const q = (p.get('q') || '').trim();
  if (q && [...q].length <= 200) f.q = q;
  if (STATUSES.includes(p.get('status'))) f.status = p.get('status');
  const loc = p.get('location') || '';
  if (TAG_RE.test(loc)) f.location = loc;
  f.stale = p.get('seen') === 'stale';
  if (p.get('order') === 'asc') f.order = 'asc';
  let cursor = null;
  if (ID_RE.test(p.get('after') || '')) cursor = { after: p.get('after') };
  else if (ID_RE.test(p.get('before') || '')) cursor = { before: p.get('before') };
  const view = p.get('view') === 'webhooks' ? 'webhooks' : 'devices';
  return { filters: f, cursor, view };
}

function writeUrl() {
  if (S.view !== 'devices') return;
  const url = devicesUrl();
  if (url !== window.location.pathname + window.location.search) history.replaceState(history.state, '', url);
}

// The address of the devices page with the current filters and cursor.
function devicesUrl() {
  const f = S.filters;
  const p = new URLSearchParams();
  if (f.q) p.set('q', f.q);
  if (f.status) p.set('status', f.status);
  if (f.location) p.set('location', f.location);
  if (f.stale) p.set('seen', 'stale');
  if (f.order !== 'desc') p.set('order', f.order);
  if (S.cursor && S.cursor.after) p.set('after', S.cursor.after);
  if (S.cursor && S.cursor.before) p.set('before', S.cursor.before);
  const query = p.toString();
  return window.location.pathname + (query ? `?${query}` : '');
}

function filtersToForm() {
  const f = S.filters;
  ui.search.value = f.q;
  ui.statusFilter.value = f.status;
  ui.locationFilter.value = f.location;
  ui.locationError.textContent = '';
  ui.locationFilter.removeAttribute('aria-invalid');
  ui.staleFilter.checked = f.stale;
  ui.order.value = f.order;
}

function filtering() {
  const f = S.filters;
  return Boolean(f.q || f.status || f.location || f.stale);
}

// --- session

function showSignin(message) {
  ui.session.hidden = true;
  ui.nav.hidden = true;
  ui.devices.hidden = true;
  ui.webhooks.hidden = true;
  ui.signin.hidden = false;
  ui.signinError.textContent = message || '';
  ui.tokenInput.value = '';
  renderExpiry();
  ui.tokenInput.focus();
}

function renderExpiry() {
  const at = expiryOf(S.claims);
  ui.expiry.classList.remove('is-expired', 'is-soon');
  let warning = '';
  if (!S.token) {
    ui.expiry.textContent = '';
  } else if (at === null) {
    ui.expiry.textContent = 'no expiry given';
    ui.expiry.removeAttribute('title');
  } else {
    const left = at - Date.now();
    ui.expiry.title = `${new Date(at).toISOString()} (${dateFormat.format(at)})`;
    if (left <= 0) {
      ui.expiry.textContent = `expired ${span(-left)} ago`;
      ui.expiry.classList.add('is-expired');
      warning = 'Your access token has expired. Sign in with a new token to go on.';
    } else {
      ui.expiry.textContent = `in ${span(left)}`;
      if (left < EXPIRY_WARNING_MS) {
        ui.expiry.classList.add('is-soon');
        warning = `Your access token expires in ${span(left)}. Sign in with a new token before then to keep working.`;
      }
    }
  }
  if (ui.expiryWarningText.textContent !== warning) ui.expiryWarningText.textContent = warning;
  ui.expiryWarning.classList.toggle('is-shown', Boolean(warning));
  ui.expiryRenew.hidden = !warning;
}

let expiryTimer = 0;

function scheduleExpiry() {
  clearTimeout(expiryTimer);
  const at = expiryOf(S.claims);
  if (at === null || !S.token) return;
  // Wake at the warning threshold and at expiry; the 30 s tick does the rest.
  const next = [at - EXPIRY_WARNING_MS, at].map((t) => t - Date.now()).filter((ms) => ms > 0);
  if (next.length) {
    expiryTimer = setTimeout(() => {
      renderExpiry();
      scheduleExpiry();
    }, Math.min(Math.min(...next) + 50, 2 ** 31 - 1));
  }
}

// `keepCursor`: stay on the page the address bar names (a reload); any other
// sign-in starts at the first page.
function startSession(token, keepCursor = false) {
  const claims = decodeClaims(token);
  if (!claims) {
    forgetToken();
    showSignin(NOT_A_TOKEN);
    return;
  }
  closeAllDialogs();
  S.session += 1;
  S.token = token;
  S.claims = claims;
  S.scopes = scopeWords(claims);
  S.admin = S.scopes.includes('admin');
  S.stats = null;
  S.statsError = false;
  if (!keepCursor) {
    S.cursor = null;
    S.offset = 0;
  }
  storeToken(token);

  ui.tenant.textContent = tenantOf(claims);
  ui.scopes.textContent = S.scopes.join(' ');
  ui.role.textContent = S.admin ? 'Admin' : 'Read-only';
  ui.role.classList.toggle('is-admin', S.admin);
  if (typeof claims.sub === 'string' && claims.sub) ui.role.title = `Signed in as ${claims.sub}`;
  else ui.role.removeAttribute('title');
  renderExpiry();
  scheduleExpiry();

  ui.registerOpen.hidden = !S.admin;
  document.body.classList.toggle('is-admin', S.admin);
  S.knownLocations.clear();
  ui.locationOptions.replaceChildren();

  ui.signinError.textContent = '';
  ui.tokenInput.value = '';
  ui.signin.hidden = true;
  ui.session.hidden = false;
  ui.nav.hidden = false;
  clearPage();
  clearWebhooks();
  renderStats();
  setView(S.view);
}

function signOut(message) {
  S.session += 1;
  S.gen += 1;
  if (S.controller) S.controller.abort();
  S.controller = null;
  S.token = null;
  S.claims = null;
  S.scopes = [];
  S.admin = false;
  S.loading = false;
  S.editing = null;
  S.stats = null;
  clearTimeout(expiryTimer);
  forgetToken();
  closeMenu(false);
  closeAllDialogs();
  clearPage();
  clearWebhooks();
  ui.toastAlerts.replaceChildren();
  ui.toastStatus.replaceChildren();
  ui.registerOpen.hidden = true;
  document.body.classList.remove('is-admin');
  showSignin(message);
}

function onSignin(event) {
  event.preventDefault();
  const token = cleanToken(ui.tokenInput.value);
  let problem = '';
  if (!token) problem = 'Paste an access token first.';
  else if (!decodeClaims(token)) problem = NOT_A_TOKEN;
  if (problem) {
    ui.signinError.textContent = problem;
    ui.tokenInput.focus();
    return;
  }
  startSession(token);
}

// A `#token=` link: signs in at once when no session is open; otherwise asks
// first, naming both tenants, and never replaces the session silently.
function offerToken(token) {
  if (!token) return;
  if (!S.token) {
    startSession(token);
    return;
  }
  if (token === S.token) return;
  const claims = decodeClaims(token);
  if (!claims) {
    toast(msg('The link did not carry a valid access token; you are still signed in to tenant ', bdi(tenantOf(S.claims)), '.'), { key: 'link' });
    return;
  }
  S.pendingToken = token;
  const next = tenantOf(claims);
  const current = tenantOf(S.claims);
  const scopes = scopeWords(claims).join(' ') || 'no scopes';
  const same = next === current ? ' (the same tenant, another token)' : '';
  ui.switchMessage.replaceChildren(msg(
    'The link you opened signs in to tenant ', bdi(next), ` with ${scopes}${same}. `,
    'You are signed in to tenant ', bdi(current), '. Switch to the new session?',
  ));
  ui.switchOk.replaceChildren(msg('Switch to ', bdi(next)));
  ui.switchDialog.returnValue = '';
  openDialog(ui.switchDialog, ui.switchKeep, { el: document.activeElement });
}

function onSwitchClosed() {
  const token = S.pendingToken;
  S.pendingToken = null;
  if (token && ui.switchDialog.returnValue === 'switch') startSession(token);
}

// --- stats

async function loadStats() {
  const session = S.session;
  try {
    const { data } = await api('GET', '/api/tenant/stats');
    if (session !== S.session) return;
    const s = data && data.data;
    if (!s || typeof s !== 'object') throw new ApiError(200, 'bad_response', 'the server sent no counts');
    S.stats = {};
    for (const k of ['total', 'active', 'inactive', 'revoked']) {
      S.stats[k] = Number.isSafeInteger(s[k]) ? s[k] : null;
    }
    S.statsError = false;
  } catch (err) {
    if (err && err.handled) return;
    // Said next to the counts, not in a toast: when the server is down the
    // list says so already, and one message is enough.
    S.stats = null;
    S.statsError = true;
  }
  renderStats();
  renderPager();
}

function renderStats() {
  for (const node of ui.stats.querySelectorAll('[data-stat]')) {
    const v = S.stats ? S.stats[node.dataset.stat] : null;
    node.textContent = v === null || v === undefined ? '–' : fmt(v);
  }
  for (const button of ui.stats.querySelectorAll('button[data-status]')) {
    button.setAttribute('aria-pressed', String(button.dataset.status === S.filters.status));
  }
  const total = S.stats ? S.stats.total : null;
  if (S.statsError) ui.count.textContent = 'counts unavailable';
  else ui.count.textContent = total === null || total === undefined ? '' : plural(total, 'device');
}

// --- list

function clearPage() {
  S.page = [];
  S.byId.clear();
  S.rows.clear();
  S.hasNext = false;
  S.hasPrev = false;
  S.loaded = false;
  ui.tbody.replaceChildren();
  setListError('');
  renderPager();
}

function setListError(text) {
  ui.listErrorText.textContent = text;
  ui.listError.hidden = !text;
}

function listParams(limit, after, order) {
  const f = S.filters;
  const params = new URLSearchParams();
  params.set('limit', String(limit));
  params.set('order', order);
  if (after) params.set('startingAfter', after);
  if (f.q) params.set('q', f.q);
  if (f.status) params.set('status', f.status);
  if (f.location) params.set('locationId', f.location);
  if (f.stale) params.set('lastSeenBefore', new Date(Date.now() - STALE_MS).toISOString());
  return `/api/tenant/devices?${params}`;
}

async function fetchPage(limit, after, order, signal) {
  const { data } = await api('GET', listParams(limit, after, order), { signal });
  const list = [];
  if (Array.isArray(data.data)) {
    for (const raw of data.data) {
      const d = normalize(raw);
      if (d) list.push(d);
    }
  }
  return { list, hasMore: data.hasMore === true };
}

const flip = (order) => (order === 'desc' ? 'asc' : 'desc');

// Loads the page at S.cursor: the first page, the page after a device, or
// the page before one (read in the opposite order, then reversed).
async function load({ focus = null, withStats = true } = {}) {
  if (!S.token) return;
  const gen = ++S.gen;
  if (S.controller) S.controller.abort();
  const controller = new AbortController();
  S.controller = controller;
  S.loading = true;
  writeUrl();
  renderPager();
  if (withStats) loadStats();
  const order = S.filters.order;
  try {
    let page;
    let hasPrev;
    let hasNext;
    if (S.cursor && S.cursor.before) {
      page = await fetchPage(PAGE_SIZE, S.cursor.before, flip(order), controller.signal);
      if (gen !== S.gen) return;
      if (!page.hasMore) {
        // Back at the start: show a whole first page.
        S.cursor = null;
        S.offset = 0;
        writeUrl();
        page = await fetchPage(PAGE_SIZE, null, order, controller.signal);
        if (gen !== S.gen) return;
        hasPrev = false;
        hasNext = page.hasMore;
      } else {
        page.list.reverse();
        hasPrev = true;
        hasNext = true;
      }
    } else {
      const after = S.cursor ? S.cursor.after : null;
      page = await fetchPage(PAGE_SIZE, after, order, controller.signal);
      if (gen !== S.gen) return;
      hasPrev = Boolean(after);
      hasNext = page.hasMore;
      if (!after) S.offset = 0;
    }
    S.loading = false;
    S.loaded = true;
    S.hasPrev = hasPrev;
    S.hasNext = hasNext;
    setListError('');
    showPage(page.list);
    if (focus) focus();
  } catch (err) {
    if (gen !== S.gen) return;
    S.loading = false;
    if (!(err && err.handled)) setListError(`Could not load devices: ${describe(err)}`);
    renderPager();
  }
}

const FOCUSABLE = 'button, a[href], input, select, textarea';

// Which device's row holds the focus, and which of its controls.
function focusInRow() {
  const active = document.activeElement;
  const row = active && ui.tbody.contains(active) ? active.closest('tr') : null;
  if (!row || !row.dataset.id) return null;
  const at = [...row.querySelectorAll(FOCUSABLE)].indexOf(active);
  return at < 0 ? null : { id: row.dataset.id, at };
}

function showPage(list) {
  // Rows are drawn anew, so the keyboard focus on a row's control would
  // fall to <body>: it goes to the same control of the same device.
  const focused = focusInRow();
  const previous = S.rows;
  S.page = list;
  S.byId = new Map();
  S.rows = new Map();
  const frag = document.createDocumentFragment();
  for (const d of list) {
    S.byId.set(d.id, d);
    const row = renderRow(d, previous.get(d.id));
    row.classList.toggle('is-new', d.id === S.highlight);
    S.rows.set(d.id, row);
    frag.append(row);
    rememberLocations(d);
  }
  ui.tbody.replaceChildren(frag);
  if (focused && !ui.tbody.contains(document.activeElement)) {
    const row = S.rows.get(focused.id);
    const again = row && row.querySelectorAll(FOCUSABLE)[focused.at];
    if (again) again.focus({ preventScroll: true });
  }
  renderPager();
  // For measurements (Performance API): when a list became visible, and for
  // which search. The first one is the dashboard's first usable paint.
  performance.mark('devicehub:list-shown', { detail: { q: S.filters.q, rows: list.length } });
}

function rememberLocations(device) {
  for (const loc of device.locationIds) {
    if (S.knownLocations.has(loc) || S.knownLocations.size >= 500) continue;
    S.knownLocations.add(loc);
    const option = el('option');
    option.value = loc;
    ui.locationOptions.append(option);
  }
}

// The number of devices the current filters match, when the counts say so.
function matchingTotal() {
  const f = S.filters;
  if (!S.stats || f.q || f.location || f.stale) return null;
  const v = f.status ? S.stats[f.status] : S.stats.total;
  return typeof v === 'number' ? v : null;
}

function renderPager() {
  const n = S.page.length;
  // Not disabled while a page loads, so that the focus stays on the button.
  ui.pagePrev.disabled = !S.hasPrev;
  ui.pageNext.disabled = !S.hasNext;
  ui.pageFirst.hidden = !S.hasPrev;
  ui.pageFirst.textContent = S.filters.order === 'desc' ? 'Newest' : 'Oldest';
  ui.tableWrap.setAttribute('aria-busy', S.loading ? 'true' : 'false');
  ui.tableWrap.classList.toggle('is-loading', S.loading);
  ui.clearFilters.hidden = !filtering();
  const f = S.filters;
  const more = [f.status, f.location, f.stale, f.order !== 'desc'].filter(Boolean).length;
  ui.filtersToggle.textContent = more ? `Filters (${more})` : 'Filters';

  let info = '';
  if (S.loading && !S.loaded) info = 'Loading devices…';
  else if (n > 0) {
    const total = matchingTotal();
    if (S.offset !== null && S.offset !== undefined) {
      info = `${fmt(S.offset + 1)}–${fmt(S.offset + n)}`;
      info += total !== null ? ` of ${fmt(total)}` : ` (${filtering() ? 'matching' : 'listed'})`;
    } else {
      info = `${plural(n, 'device')} on this page`;
    }
  }
  ui.pageInfo.textContent = info;

  let empty = '';
  if (S.loaded && n === 0 && ui.listError.hidden) {
    if (filtering()) empty = 'No devices match these filters.';
    else if (S.hasPrev) empty = 'No more devices.';
    else {
      empty = S.admin
        ? 'No devices registered yet. Use “Register device” to add the first one.'
        : 'No devices registered yet.';
    }
  }
  ui.emptyMessage.textContent = empty;
  ui.empty.hidden = !empty;
  ui.tableWrap.hidden = S.loaded && n === 0;
}

function goNext() {
  if (S.loading || !S.hasNext || !S.page.length) return;
  if (S.offset !== null) S.offset += S.page.length;
  S.cursor = { after: S.page[S.page.length - 1].id };
  load({ focus: focusPageTop(ui.pageNext) });
}

function goPrev() {
  if (S.loading || !S.hasPrev || !S.page.length) return;
  if (S.offset !== null) S.offset = Math.max(0, S.offset - PAGE_SIZE);
  S.cursor = { before: S.page[0].id };
  load({ focus: focusPageTop(ui.pagePrev) });
}

function goFirst() {
  S.cursor = null;
  S.offset = 0;
  load({ focus: focusPageTop(ui.pageFirst) });
}

// After paging, the focus stays on the button pressed when it can still be
// pressed; otherwise it goes to the table.
function focusPageTop(button) {
  return () => {
    const active = document.activeElement;
    if (active !== button && active && active !== document.body && active.isConnected) return;
    if (visible(button)) button.focus();
    else ui.tableWrap.focus();
  };
}

// Filters start again from the first page.
function applyFilters(change) {
  Object.assign(S.filters, change);
  S.cursor = null;
  S.offset = 0;
  renderStats();
  load({ withStats: false });
}

// --- rows

function tagList(tags, max) {
  const wrap = el('span', 'tags');
  tags.slice(0, max).forEach((t) => wrap.append(el('span', 'tag', t)));
  if (tags.length > max) {
    wrap.append(el('span', 'tag tag-more', `+${tags.length - max} more`));
  }
  return wrap;
}

function statusBadge(status) {
  const known = STATUSES.includes(status);
  return el('span', `badge badge-${known ? status : 'unknown'}`, status);
}

function activityNode(d, withTime) {
  const a = activity(d);
  const wrap = el('span', `seen seen-${a.kind}`);
  wrap.append(el('span', 'seen-dot'), el('span', 'seen-label', a.label));
  if (withTime && d.lastSeenAt) {
    const time = el('time', 'seen-time', relTime(d.lastSeenAt));
    time.dateTime = d.lastSeenAt;
    time.title = formatDate(d.lastSeenAt);
    time.dataset.rel = '1';
    wrap.append(' ', time);
  }
  return wrap;
}

// A button whose accessible name is its visible text followed by the
// device's name (visually hidden), e.g. "Rotate key for “Kiosk 3”".
function actionButton(action, label, d, cls = '') {
  const b = el('button', `btn btn-small ${cls}`.trim());
  b.type = 'button';
  b.dataset.action = action;
  const hidden = el('span', 'vh');
  hidden.append(' for ', quoted(d.name));
  b.append(label, hidden);
  return b;
}

// Builds a device's row, or rebuilds `existing` in place so that the <tr>
// of a device stays the same element across updates.
function renderRow(d, existing) {
  const tr = existing || el('tr');
  tr.replaceChildren();
  tr.dataset.id = d.id;
  tr.dataset.status = d.status;
  const revoked = d.status === 'revoked';
  tr.classList.toggle('is-revoked', revoked);

  const name = el('td', 'cell-name');
  const open = el('button', 'open-details');
  open.type = 'button';
  open.dataset.action = 'details';
  open.append(bdi(d.name || d.id));
  name.append(open);

  const status = el('td', 'cell-status');
  status.append(statusBadge(d.status));

  const seen = el('td', 'cell-seen');
  seen.append(activityNode(d, true));

  const locations = el('td', 'cell-locations');
  if (d.locationIds.length) locations.append(tagList(d.locationIds, 3));
  else locations.append(el('span', 'muted', 'no location'));

  const pim = el('td', 'cell-pim');
  pim.append(el('span', `badge ${d.pimEnabled ? 'badge-on' : 'badge-off'}`, d.pimEnabled ? 'PIM on' : 'PIM off'));
  if (d.pimSegmentIds.length) pim.append(' ', tagList(d.pimSegmentIds, 2));

  const created = el('td', 'cell-created');
  if (d.createdAt) {
    const time = el('time', null, formatDay(d.createdAt));
    time.dateTime = d.createdAt;
    time.title = formatDate(d.createdAt);
    created.append(time);
  }

  const actions = el('td', 'cell-actions');
  if (S.admin && !revoked) {
    const inline = el('span', 'row-actions');
    inline.append(
      actionButton('edit', 'Edit', d),
      actionButton('rotate', 'Rotate key', d),
      actionButton('revoke', 'Revoke', d, 'btn-danger-outline'),
    );
    actions.append(inline);
  } else if (S.admin && revoked) {
    actions.append(el('span', 'muted final row-actions', 'Revoked (final)'));
  }
  const menu = el('button', 'btn btn-small row-menu-button');
  menu.type = 'button';
  menu.dataset.action = 'menu';
  menu.setAttribute('aria-haspopup', 'menu');
  menu.setAttribute('aria-expanded', 'false');
  const hidden = el('span', 'vh');
  hidden.append(' for ', quoted(d.name));
  menu.append('Actions', hidden);
  actions.append(menu);

  tr.append(name, status, seen, locations, pim, created, actions);
  return tr;
}

// Replaces a shown device with a fresh copy from the server.
function updateDevice(raw) {
  const d = normalize(raw);
  if (!d) return;
  if (S.byId.has(d.id)) {
    const old = S.byId.get(d.id);
    if (JSON.stringify(old) !== JSON.stringify(d)) {
      S.byId.set(d.id, d);
      const i = S.page.findIndex((x) => x.id === d.id);
      if (i >= 0) S.page[i] = d;
      renderRow(d, S.rows.get(d.id));
      rememberLocations(d);
    }
  }
  if (ui.drawer.open && ui.drawer.dataset.id === d.id) renderDrawer(d);
}

function refreshRelativeTimes() {
  for (const [id, row] of S.rows) {
    const d = S.byId.get(id);
    const seen = row.querySelector('.cell-seen');
    if (d && seen) seen.replaceChildren(activityNode(d, true));
  }
}

// --- focus
// Where the focus goes back after a dialog or menu: the element that opened
// it when it is still on screen, else the same action on the device's row
// (rows are rebuilt on updates), else the device's name, else the heading.

function visible(node) {
  return Boolean(node && node.isConnected && !node.disabled && node.getClientRects().length > 0);
}

function focusTarget(ret) {
  if (!ret) return null;
  if (visible(ret.el)) return ret.el;
  if (ret.id && ui.drawer.open && ui.drawer.dataset.id === ret.id) {
    const inDrawer = ret.action && ui.drawer.querySelector(`[data-action="${ret.action}"]`);
    return visible(inDrawer) ? inDrawer : ui.drawerClose;
  }
  const card = ret.id && W.cards.get(ret.id);
  if (card && card.isConnected) {
    const again = ret.action && card.querySelector(`.wh-actions [data-action="${ret.action}"]`);
    return visible(again) ? again : card.querySelector('.wh-url');
  }
  const row = ret.id && S.rows.get(ret.id);
  if (row && row.isConnected) {
    const candidates = [
      ret.action && row.querySelector(`.row-actions [data-action="${ret.action}"]`),
      row.querySelector('.row-menu-button'),
      row.querySelector('.open-details'),
    ];
    for (const c of candidates) if (visible(c)) return c;
  }
  return null;
}

function restoreFocus(ret) {
  const open = document.querySelector('dialog[open]');
  const target = focusTarget(ret);
  if (target && (!open || open.contains(target))) target.focus();
  else if (open) {
    if (!open.contains(document.activeElement)) open.focus();
  } else if (visible(ui.devicesTitle)) ui.devicesTitle.focus();
  else if (visible(ui.webhooksTitle)) ui.webhooksTitle.focus();
}

// --- dialogs

function openDialog(dialog, first, ret) {
  dialog.returnTo = ret || { el: document.activeElement };
  if (!dialog.open) dialog.showModal();
  if (first) first.focus();
}

function closeAllDialogs() {
  keyAcknowledged = true;
  for (const d of document.querySelectorAll('dialog')) {
    if (d.open) {
      d.returnTo = null;
      d.close();
    }
  }
}

function onDialogClosed(event) {
  const dialog = event.currentTarget;
  if (dialog === ui.keyDialog && !keyAcknowledged) return; // reopened by onKeyClosed
  const ret = dialog.returnTo;
  dialog.returnTo = null;
  // The browser has already put the focus back on the element that opened
  // the dialog; this event comes later. A row menu opened from there in
  // the meantime keeps the focus the user gave it.
  if (ret && !menuFor) restoreFocus(ret);
}

let confirmResolve = null;

function confirmAction(title, message, okLabel, ret, withGrace = false) {
  if (confirmResolve) confirmResolve(false);
  ui.graceField.hidden = !withGrace;
  ui.grace.value = '0';
  ui.confirmTitle.textContent = title;
  ui.confirmMessage.replaceChildren(message);
  ui.confirmOk.textContent = okLabel;
  ui.confirmDialog.returnValue = '';
  return new Promise((resolve) => {
    confirmResolve = resolve;
    openDialog(ui.confirmDialog, ui.confirmCancel, ret);
  });
}

function onConfirmClosed() {
  const resolve = confirmResolve;
  confirmResolve = null;
  if (resolve) resolve(ui.confirmDialog.returnValue === 'ok');
}

// --- the one-time key

let keyAcknowledged = true;

function showKey(key, device, title, ret, previousUntil = null) {
  showOnce({
    value: key,
    title,
    sub: msg('For ', quoted(device.name), ` (${device.id})`),
    warning: 'This key will not be shown again. Store it now.',
    note: typeof previousUntil === 'string' && previousUntil
      ? `The previous key keeps working until ${formatDate(previousUntil)}; then only this one does.`
      : '',
    confirm: 'Close without keeping the key? It cannot be shown again; you would have to rotate the key to get a new one.',
    back: 'Back to the key',
    discard: 'Close without the key',
  }, ret);
}

// The one-time dialog for a device key or a webhook secret: the value is in
// the page only while the dialog is open (onKeyClosed clears it).
function showOnce(o, ret) {
  ui.keyTitle.textContent = o.title;
  ui.keyFor.replaceChildren(o.sub);
  ui.keyWarning.textContent = o.warning;
  ui.keyGrace.textContent = o.note || '';
  ui.keyConfirmText.textContent = o.confirm;
  ui.keyBack.textContent = o.back;
  ui.keyDiscard.textContent = o.discard;
  ui.keyValue.textContent = o.value;
  ui.keyCopyStatus.textContent = '';
  setKeyConfirm(false);
  keyAcknowledged = false;
  openDialog(ui.keyDialog, ui.keyCopy, ret);
}

function setKeyConfirm(shown) {
  ui.keyConfirm.hidden = !shown;
  ui.keyActions.hidden = shown;
  if (shown) ui.keyBack.focus();
  else if (ui.keyDialog.open) ui.keyCopy.focus();
}

function closeKey() {
  keyAcknowledged = true;
  ui.keyDialog.close();
}

// Escape (or any other close request) asks before the key is thrown away.
function onKeyEscape(event) {
  if (event.type === 'keydown' && event.key !== 'Escape') return;
  event.preventDefault();
  event.stopPropagation();
  if (event.type === 'keydown' && !ui.keyConfirm.hidden) setKeyConfirm(false);
  else setKeyConfirm(true);
}

function onKeyClosed() {
  if (!keyAcknowledged) {
    // Closed by something we did not see coming: bring the key back.
    ui.keyDialog.showModal();
    setKeyConfirm(true);
    return;
  }
  ui.keyValue.textContent = '';
  ui.keyCopyStatus.textContent = '';
  const selection = window.getSelection();
  if (selection) selection.removeAllRanges();
}

function selectText(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  if (!selection) return;
  selection.removeAllRanges();
  selection.addRange(range);
}

async function copyText(node) {
  const text = node.textContent;
  if (!text) return false;
  if (window.isSecureContext && navigator.clipboard && navigator.clipboard.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      // fall back to a selection
    }
  }
  selectText(node);
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch (_) {
    copied = false;
  }
  selectText(node);
  return copied;
}

const COPY_BLOCKED = 'Copying is blocked in this browser. The text is selected: press Ctrl+C (⌘C on a Mac) to copy it.';

async function copyKey() {
  const copied = await copyText(ui.keyValue);
  ui.keyCopyStatus.textContent = copied ? 'Copied to the clipboard.' : COPY_BLOCKED;
}

// --- the detail drawer

function timeLine(iso, empty) {
  const frag = document.createDocumentFragment();
  if (!iso) {
    frag.append(el('span', 'muted', empty));
    return frag;
  }
  const time = el('time', null, formatDate(iso));
  time.dateTime = iso;
  frag.append(time, el('span', 'muted', ` (${relTime(iso)})`));
  return frag;
}

function fullTags(tags, empty) {
  if (!tags.length) return el('span', 'muted', empty);
  const list = el('ul', 'tags tag-list');
  for (const t of tags) list.append(el('li', 'tag', t));
  return list;
}

function renderDrawer(d) {
  ui.drawer.dataset.id = d.id;
  ui.drawerName.textContent = d.name || d.id;
  ui.drawerBadges.replaceChildren(statusBadge(d.status), ' ', activityNode(d, false));
  ui.drawerId.textContent = d.id;
  ui.drawerSeen.replaceChildren(timeLine(d.lastSeenAt, 'never'));
  ui.drawerCreated.replaceChildren(timeLine(d.createdAt, 'unknown'));
  ui.drawerUpdated.replaceChildren(timeLine(d.updatedAt, 'unknown'));
  ui.drawerLocations.replaceChildren(fullTags(d.locationIds, 'none'));
  ui.drawerPim.textContent = d.pimEnabled ? 'enabled' : 'disabled';
  ui.drawerSegments.replaceChildren(fullTags(d.pimSegmentIds, 'none'));
  ui.drawerActions.hidden = !S.admin || d.status === 'revoked';
}

async function openDrawer(id, ret) {
  const known = S.byId.get(id);
  if (known) renderDrawer(known);
  ui.drawerCopyStatus.textContent = '';
  openDialog(ui.drawer, ui.drawerClose, ret);
  loadHistory(id, true);
  try {
    const { data } = await api('GET', devicePath(id));
    const d = deviceFrom(data);
    updateDevice(d);
    if (ui.drawer.open && ui.drawer.dataset.id === id) renderDrawer(d);
    dismissToast(`device:${id}`);
  } catch (err) {
    if (err && err.handled) return;
    if (!known) ui.drawer.close();
    toast(`Could not read the device: ${describe(err)}`, { key: `device:${id}` });
  }
}

// --- the device's history, in the drawer
// The change feed (GET /api/tenant/events?deviceId=…) is oldest first and
// has no newest-first order, so the drawer reads it forward to its end, at
// most HISTORY_PAGE events a request (no single answer is ever larger), and
// keeps only the newest HISTORY_KEEP events in memory: a device changed ten
// thousand times costs a hundred small requests, never one big answer, and
// the page holds at most HISTORY_KEEP of them. The server prunes events after
// `events.retention` (90 days by default), so a history is short in practice.
// The list shows HISTORY_STEP entries, newest first, and "Show older
// changes" adds HISTORY_STEP more each time. After a change made here (edit,
// rotate, revoke) only the events after the newest one read are fetched.

const HISTORY_PAGE = 100;
const HISTORY_KEEP = 500;
const HISTORY_STEP = 20;

const EVENT_LABELS = {
  'device.created': 'Registered',
  'device.updated': 'Updated',
  'device.revoked': 'Revoked',
  'device.key_rotated': 'Key rotated',
};

const FIELD_LABELS = {
  name: 'Name',
  status: 'Status',
  locationIds: 'Locations',
  pimEnabled: 'PIM',
  pimSegmentIds: 'PIM segments',
};

const H = {
  id: null, // the device whose history is held
  gen: 0, // bumped on every load and when the drawer closes
  controller: null,
  events: [], // oldest first, at most HISTORY_KEEP
  dropped: 0, // older events read but not kept
  last: null, // the newest event id read: where a refresh starts
  complete: false, // read to the end without an error
  shown: HISTORY_STEP,
  loading: false,
  error: '',
};

function normalizeEvent(e) {
  if (!e || typeof e !== 'object' || typeof e.id !== 'string') return null;
  const data = e.data && typeof e.data === 'object' ? e.data : {};
  const object = data.object && typeof data.object === 'object' ? data.object : {};
  const previous = data.previousAttributes && typeof data.previousAttributes === 'object'
    && !Array.isArray(data.previousAttributes) ? data.previousAttributes : {};
  return {
    id: e.id,
    type: typeof e.type === 'string' ? e.type : '',
    createdAt: typeof e.createdAt === 'string' ? e.createdAt : null,
    actor: typeof e.actor === 'string' && e.actor ? e.actor : null,
    object,
    previous,
  };
}

function stopHistory() {
  H.gen += 1;
  if (H.controller) H.controller.abort();
  H.controller = null;
  H.loading = false;
}

// Reads the history of device `id`: all of it when `fresh` (or when what is
// held is for another device or incomplete), else only what came since.
async function loadHistory(id, fresh = true) {
  stopHistory();
  if (fresh || H.id !== id || !H.complete) {
    Object.assign(H, { id, events: [], dropped: 0, last: null, complete: false, shown: HISTORY_STEP });
  }
  const gen = H.gen;
  const controller = new AbortController();
  H.controller = controller;
  H.loading = true;
  H.error = '';
  const before = H.events.length + H.dropped;
  renderHistory();
  try {
    for (;;) {
      const params = new URLSearchParams({ deviceId: id, limit: String(HISTORY_PAGE) });
      if (H.last) params.set('startingAfter', H.last);
      const { data } = await api('GET', `/api/tenant/events?${params}`, { signal: controller.signal });
      if (gen !== H.gen) return;
      const raw = Array.isArray(data.data) ? data.data : [];
      const page = raw.map(normalizeEvent).filter(Boolean);
      if (!page.length) break;
      H.events.push(...page);
      if (H.events.length > HISTORY_KEEP) H.dropped += H.events.splice(0, H.events.length - HISTORY_KEEP).length;
      H.last = page[page.length - 1].id;
      if (data.hasMore !== true) break;
      // A long history: say how far the reading got.
      ui.historyStatus.textContent = `Reading the history… ${plural(H.events.length + H.dropped, 'change')} so far.`;
    }
    H.complete = true;
    // Entries that arrived on a refresh are shown on top of those shown.
    if (before > 0) H.shown += H.events.length + H.dropped - before;
  } catch (err) {
    if (gen !== H.gen) return;
    H.complete = false;
    if (!(err && err.handled)) H.error = `Could not load the history: ${describe(err)}`;
  }
  H.controller = null;
  H.loading = false;
  renderHistory();
}

// After a change made in the dashboard: the drawer's history catches up.
function historyChanged(id) {
  if (ui.drawer.open && ui.drawer.dataset.id === id) loadHistory(id, false);
}

function utcTitle(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  return `${new Date(t).toISOString().replace('T', ' ').replace('Z', '')} UTC`;
}

function fieldValue(field, v) {
  if (v === null || v === undefined) return 'none';
  if (typeof v === 'boolean') return v ? 'enabled' : 'disabled';
  if (Array.isArray(v)) return v.length ? v.map(String).join(', ') : 'none';
  if (typeof v === 'object') return JSON.stringify(v);
  return field === 'name' ? `“${v}”` : String(v);
}

// One changed field: "Name “Old” → “New”", read aloud as "Name changed
// from “Old” to “New”".
function changeLine(field, from, to) {
  const li = el('li', 'history-change');
  li.append(
    el('span', 'history-field', FIELD_LABELS[field] || field),
    el('span', 'vh', ' changed from'),
    ' ',
    el('bdi', 'history-from', fieldValue(field, from)),
    ' ',
    el('span', 'history-arrow', '→'),
    el('span', 'vh', ' to'),
    ' ',
    el('bdi', 'history-to', fieldValue(field, to)),
  );
  li.querySelector('.history-arrow').setAttribute('aria-hidden', 'true');
  return li;
}

function historyItem(e) {
  const li = el('li', 'history-item');
  li.tabIndex = -1;
  li.dataset.id = e.id;
  li.dataset.type = e.type;
  li.append(el('h4', 'history-what', EVENT_LABELS[e.type] || e.type || 'Changed'));
  const meta = el('p', 'history-meta');
  if (e.createdAt) {
    const time = el('time', 'history-when', formatDate(e.createdAt));
    time.dateTime = e.createdAt;
    time.title = utcTitle(e.createdAt);
    meta.append(time, ' ');
  }
  meta.append('by ');
  if (e.actor) meta.append(el('bdi', 'history-actor', e.actor));
  else meta.append(el('span', 'history-actor muted', 'unknown'));
  li.append(meta);
  const fields = Object.keys(FIELD_LABELS).filter((f) => f in e.previous);
  for (const f of Object.keys(e.previous)) if (!fields.includes(f)) fields.push(f);
  if (fields.length) {
    const changes = el('ul', 'history-changes');
    for (const f of fields) changes.append(changeLine(f, e.previous[f], e.object[f]));
    li.append(changes);
  }
  return li;
}

function renderHistory() {
  const total = H.events.length + H.dropped;
  let status = '';
  if (H.loading && !total) status = 'Loading the history…';
  else if (!H.loading && !H.error && H.complete) {
    status = total ? `${plural(total, 'change')}, newest first.` : 'No changes recorded.';
  }
  if (ui.historyStatus.textContent !== status) ui.historyStatus.textContent = status;
  ui.historyErrorText.textContent = H.error;
  ui.historyError.hidden = !H.error;
  const shown = H.events.slice(-Math.min(H.shown, H.events.length)).reverse();
  const frag = document.createDocumentFragment();
  for (const e of shown) frag.append(historyItem(e));
  ui.historyList.replaceChildren(frag);
  ui.historyList.hidden = !shown.length;
  ui.historyMore.hidden = shown.length >= H.events.length;
  ui.historyDropped.textContent = H.dropped && ui.historyMore.hidden
    ? `${plural(H.dropped, 'older change')} not shown: the drawer keeps the newest ${fmt(HISTORY_KEEP)}.`
    : '';
}

function showOlderHistory() {
  const from = Math.min(H.shown, H.events.length);
  H.shown += HISTORY_STEP;
  renderHistory();
  // The focus goes to the first entry just shown (the button may be gone).
  const first = ui.historyList.children[from];
  if (first) first.focus();
}

// --- the row action menu

let menuFor = null; // { id, button }

function openMenu(button, id, focusLast = false) {
  const d = S.byId.get(id);
  if (!d) return;
  closeMenu(false);
  menuFor = { id, button };
  const revoked = d.status === 'revoked';
  for (const item of ui.rowMenu.querySelectorAll('[role="menuitem"]')) {
    const writes = item.dataset.action !== 'details';
    item.hidden = writes && (!S.admin || revoked);
  }
  ui.rowMenu.setAttribute('aria-label', `Actions for ${d.name}`);
  ui.rowMenu.hidden = false;
  button.setAttribute('aria-expanded', 'true');
  const r = button.getBoundingClientRect();
  const width = ui.rowMenu.offsetWidth;
  const height = ui.rowMenu.offsetHeight;
  let left = Math.min(r.right - width, window.innerWidth - width - 8);
  left = Math.max(8, left);
  let top = r.bottom + 4;
  if (top + height > window.innerHeight - 8 && r.top - height - 4 > 8) top = r.top - height - 4;
  ui.rowMenu.style.left = `${left + window.scrollX}px`;
  ui.rowMenu.style.top = `${top + window.scrollY}px`;
  const items = menuItems();
  (focusLast ? items[items.length - 1] : items[0]).focus();
}

function menuItems() {
  return [...ui.rowMenu.querySelectorAll('[role="menuitem"]')].filter((i) => !i.hidden);
}

function closeMenu(refocus) {
  if (!menuFor) return;
  const { button } = menuFor;
  menuFor = null;
  ui.rowMenu.hidden = true;
  button.setAttribute('aria-expanded', 'false');
  if (refocus && button.isConnected) button.focus();
}

function onMenuKey(event) {
  const items = menuItems();
  const i = items.indexOf(document.activeElement);
  let next = null;
  if (event.key === 'ArrowDown') next = items[(i + 1) % items.length];
  else if (event.key === 'ArrowUp') next = items[(i - 1 + items.length) % items.length];
  else if (event.key === 'Home') next = items[0];
  else if (event.key === 'End') next = items[items.length - 1];
  else if (event.key === 'Escape') {
    event.preventDefault();
    closeMenu(true);
    return;
  } else if (event.key === 'Tab') {
    closeMenu(true);
    return;
  }
  if (next) {
    event.preventDefault();
    next.focus();
  }
}

function onMenuClick(event) {
  const item = event.target instanceof Element ? event.target.closest('[role="menuitem"]') : null;
  if (!item || !menuFor) return;
  const { id, button } = menuFor;
  closeMenu(true);
  runAction(item.dataset.action, id, { el: button, id, action: item.dataset.action });
}

function runAction(action, id, ret) {
  if (action === 'details') openDrawer(id, ret);
  else if (!S.admin) return;
  else if (action === 'edit') openEdit(id, ret);
  else if (action === 'rotate') rotateKey(id, ret);
  else if (action === 'revoke') revokeDevice(id, ret);
}

// --- forms

const FORM_FIELDS = ['name', 'locations', 'status', 'pim', 'segments'];
const SERVER_FIELDS = {
  name: 'name',
  locationIds: 'locations',
  status: 'status',
  pimEnabled: 'pim',
  pimSegmentIds: 'segments',
};

function clearErrors(prefix) {
  for (const f of FORM_FIELDS) {
    $(`${prefix}-${f}-error`).textContent = '';
    $(`${prefix}-${f}`).removeAttribute('aria-invalid');
  }
  $(`${prefix}-error`).textContent = '';
}

function setFieldError(prefix, field, message) {
  $(`${prefix}-${field}-error`).textContent = message;
  $(`${prefix}-${field}`).setAttribute('aria-invalid', 'true');
}

function shorten(text) {
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

// Comma-separated ids -> { list } or { error }.
function parseTags(text) {
  const entries = text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const list = [];
  for (let i = 0; i < entries.length; i += 1) {
    const entry = entries[i];
    if (!TAG_RE.test(entry)) {
      return { error: `Entry ${i + 1} (“${shorten(entry)}”) must be ${TAG_RULE}` };
    }
    if (!list.includes(entry)) list.push(entry);
  }
  if (list.length > MAX_TAGS) {
    return { error: `Must have at most ${MAX_TAGS} entries (${list.length} given)` };
  }
  return { list };
}

// Reads and checks a form; returns { body } or { errors: {field: message} }.
function readForm(prefix) {
  const errors = {};
  const name = $(`${prefix}-name`).value.trim();
  const chars = [...name].length;
  if (chars === 0) errors.name = 'Enter a name: 1-200 characters after trimming white space';
  else if (chars > 200) errors.name = `Must be 1-200 characters after trimming white space (${chars} given)`;
  else if (CONTROL_RE.test(name)) errors.name = 'Must not contain control characters';
  else if (/[\u202A-\u202E\u2066-\u2069]/.test(name)) errors.name = 'Must not contain bidirectional control characters';

  const locations = parseTags($(`${prefix}-locations`).value);
  if (locations.error) errors.locations = locations.error;
  const segments = parseTags($(`${prefix}-segments`).value);
  if (segments.error) errors.segments = segments.error;

  const status = $(`${prefix}-status`).value;
  if (status !== 'active' && status !== 'inactive') errors.status = 'Choose active or inactive';

  if (Object.keys(errors).length) return { errors };
  return {
    body: {
      name,
      locationIds: locations.list,
      status,
      pimEnabled: $(`${prefix}-pim`).checked,
      pimSegmentIds: segments.list,
    },
  };
}

function showClientErrors(prefix, errors) {
  let first = null;
  for (const f of FORM_FIELDS) {
    if (!errors[f]) continue;
    setFieldError(prefix, f, errors[f]);
    if (!first) first = $(`${prefix}-${f}`);
  }
  if (first) first.focus();
}

// A 400 whose message names a field goes next to that field.
function showServerFieldError(prefix, err) {
  if (!(err instanceof ApiError) || err.status !== 400) return false;
  const m = /^([A-Za-z]+)(\[\d+\])?: /.exec(err.message);
  const field = m && SERVER_FIELDS[m[1]];
  if (!field) return false;
  setFieldError(prefix, field, err.message);
  $(`${prefix}-${field}`).focus();
  return true;
}

function setBusy(button, busy, busyLabel) {
  button.disabled = busy;
  button.textContent = busy ? busyLabel : button.dataset.label;
}

// --- register

function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `dash-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function openRegister() {
  if (!S.admin) return;
  S.registerAttempt = null;
  ui.registerForm.reset();
  clearErrors('reg');
  setBusy(ui.regSubmit, false);
  openDialog(ui.registerDialog, $('reg-name'), { el: ui.registerOpen });
}

async function onRegister(event) {
  event.preventDefault();
  if (ui.regSubmit.disabled) return;
  clearErrors('reg');
  const form = readForm('reg');
  if (form.errors) {
    showClientErrors('reg', form.errors);
    return;
  }
  // The same form sent again (after an answer was lost) carries the same
  // Idempotency-Key, so the server answers it once: no second device.
  const sent = JSON.stringify(form.body);
  if (!S.registerAttempt || S.registerAttempt.body !== sent) {
    S.registerAttempt = { body: sent, key: newIdempotencyKey() };
  }
  setBusy(ui.regSubmit, true, 'Registering…');
  try {
    const { data } = await api('POST', '/api/tenant/devices', {
      body: form.body,
      idempotencyKey: S.registerAttempt.key,
    });
    S.registerAttempt = null;
    const device = deviceFrom(data);
    ui.registerDialog.returnTo = null;
    ui.registerDialog.close();
    if (typeof data.apiKey === 'string' && data.apiKey) {
      showKey(data.apiKey, device, 'Device registered', { el: ui.registerOpen });
    } else {
      toast(msg(quoted(device.name), ' was registered, but the server returned no API key. Rotate its key to get one.'));
    }
    showRegistered(device);
  } catch (err) {
    if (err && err.handled) return;
    if (showServerFieldError('reg', err)) return;
    $('reg-error').textContent = `Could not register the device: ${describe(err)}`;
  } finally {
    setBusy(ui.regSubmit, false);
  }
}

// A new device shows at once: back to the first page (newest first), with the
// device marked; filters that hide it are said so.
function showRegistered(device) {
  S.highlight = device.id;
  S.cursor = null;
  S.offset = 0;
  const gen = S.gen + 1;
  setTimeout(() => {
    if (S.highlight !== device.id) return;
    S.highlight = null;
    const row = S.rows.get(device.id);
    if (row) row.classList.remove('is-new');
  }, 8000);
  load().then(() => {
    if (gen !== S.gen) return;
    const hidden = S.loaded && ui.listError.hidden && !S.byId.has(device.id);
    const note = hidden ? ' It is not on this page: the filters or the order hide it.' : '';
    toast(msg('Registered ', quoted(device.name), `.${note}`), { kind: 'success' });
  });
}

// --- edit

function fillEdit(d) {
  $('edit-name').value = d.name;
  $('edit-locations').value = d.locationIds.join(', ');
  $('edit-status').value = d.status === 'inactive' ? 'inactive' : 'active';
  $('edit-pim').checked = d.pimEnabled;
  $('edit-segments').value = d.pimSegmentIds.join(', ');
  ui.editId.textContent = d.id;
}

function setConflict(shown) {
  ui.editConflict.hidden = !shown;
  ui.editSubmit.disabled = shown;
}

async function openEdit(id, ret) {
  const known = S.byId.get(id);
  const key = `device:${id}`;
  try {
    const { data, etag } = await api('GET', devicePath(id));
    const d = deviceFrom(data);
    updateDevice(d);
    dismissToast(key);
    if (d.status === 'revoked') {
      toast(msg(quoted(d.name), ' has been revoked and can no longer be edited.'), { key });
      restoreFocus(ret);
      return;
    }
    S.editing = { id: d.id, etag, name: d.name };
    ui.editForm.reset();
    clearErrors('edit');
    setBusy(ui.editSubmit, false);
    setConflict(false);
    fillEdit(d);
    openDialog(ui.editDialog, $('edit-name'), ret);
  } catch (err) {
    if (err && err.handled) return;
    toast(msg('Could not open ', known ? quoted(known.name) : 'the device', ` for editing: ${describe(err)}`), { key });
  }
}

async function onEditReload() {
  const editing = S.editing;
  if (!editing) return;
  ui.editReload.disabled = true;
  try {
    const { data, etag } = await api('GET', devicePath(editing.id));
    const d = deviceFrom(data);
    updateDevice(d);
    historyChanged(d.id);
    if (S.editing !== editing) return;
    if (d.status === 'revoked') {
      ui.editDialog.close();
      toast(msg(quoted(d.name), ' has been revoked and can no longer be edited.'), { key: `device:${d.id}` });
      return;
    }
    editing.etag = etag;
    editing.name = d.name;
    clearErrors('edit');
    fillEdit(d);
    setConflict(false);
    setBusy(ui.editSubmit, false);
    $('edit-name').focus();
  } catch (err) {
    if (err && err.handled) return;
    $('edit-error').textContent = `Could not reload the device: ${describe(err)}`;
  } finally {
    ui.editReload.disabled = false;
  }
}

async function onEdit(event) {
  event.preventDefault();
  const editing = S.editing;
  if (!editing || ui.editSubmit.disabled) return;
  clearErrors('edit');
  const form = readForm('edit');
  if (form.errors) {
    showClientErrors('edit', form.errors);
    return;
  }
  setBusy(ui.editSubmit, true, 'Saving…');
  let keepDisabled = false;
  try {
    const options = { body: form.body };
    if (editing.etag) options.ifMatch = editing.etag;
    const { data, etag } = await api('PATCH', devicePath(editing.id), options);
    const d = deviceFrom(data);
    editing.etag = etag;
    updateDevice(d);
    dismissToast(`device:${d.id}`);
    if (S.editing === editing) ui.editDialog.close();
    toast(msg('Saved ', quoted(d.name), '.'), { kind: 'success' });
    historyChanged(d.id);
    loadStats();
  } catch (err) {
    if (err && err.handled) return;
    const stillOpen = ui.editDialog.open && S.editing === editing;
    if (err instanceof ApiError && err.status === 412 && stillOpen) {
      setConflict(true);
      keepDisabled = true;
      ui.editReload.focus();
      return;
    }
    if (err instanceof ApiError && err.status === 409) {
      keepDisabled = stillOpen;
      const text = `This device has been revoked and can no longer be changed.`;
      if (stillOpen) $('edit-error').textContent = text;
      else toast(msg(quoted(editing.name), ' has been revoked and can no longer be changed.'), { key: `device:${editing.id}` });
      refreshDevice(editing.id);
      historyChanged(editing.id);
      return;
    }
    if (stillOpen && showServerFieldError('edit', err)) return;
    if (stillOpen) $('edit-error').textContent = `Could not save the changes: ${describe(err)}`;
    else toast(msg('Could not save ', quoted(editing.name), `: ${describe(err)}`), { key: `device:${editing.id}` });
  } finally {
    setBusy(ui.editSubmit, false);
    if (keepDisabled) ui.editSubmit.disabled = true;
  }
}

// Re-reads one device and updates its row.
async function refreshDevice(id, fallback) {
  try {
    const { data } = await api('GET', devicePath(id));
    updateDevice(deviceFrom(data));
  } catch (err) {
    if (fallback) updateDevice(fallback);
  }
}

// --- rotate / revoke

async function rotateKey(id, ret) {
  const d = S.byId.get(id) || (ui.drawer.dataset.id === id ? { id, name: ui.drawerName.textContent } : null);
  if (!d || !S.admin) return;
  const ok = await confirmAction(
    'Rotate API key',
    msg('Rotate the API key of ', quoted(d.name), '? The new key is shown only once.'),
    'Rotate key',
    ret,
    true,
  );
  if (!ok) return;
  const grace = Number(ui.grace.value) || 0;
  const key = `device:${id}`;
  try {
    const options = grace > 0 ? { body: { gracePeriodSeconds: grace } } : {};
    const { data } = await api('POST', `${devicePath(id)}/api-key`, options);
    const device = deviceFrom(data);
    updateDevice(device);
    historyChanged(id);
    dismissToast(key);
    if (typeof data.apiKey === 'string' && data.apiKey) {
      showKey(data.apiKey, device, 'New API key', ret, data.previousKeyExpiresAt);
    } else {
      toast(msg('The key of ', quoted(device.name), ' was rotated, but the server returned no key. Rotate again to get one.'), { key });
    }
  } catch (err) {
    if (err && err.handled) return;
    toast(msg('Could not rotate the key of ', quoted(d.name), `: ${describe(err)}`), { key });
    if (err instanceof ApiError && (err.status === 409 || err.status === 404)) {
      refreshDevice(id);
      historyChanged(id);
    }
  }
}

async function revokeDevice(id, ret) {
  const d = S.byId.get(id) || (ui.drawer.dataset.id === id ? { id, name: ui.drawerName.textContent } : null);
  if (!d || !S.admin) return;
  const ok = await confirmAction(
    'Revoke device',
    msg('Revoke ', quoted(d.name), '? Its key stops working at once. This cannot be undone.'),
    'Revoke',
    ret,
  );
  if (!ok) return;
  const key = `device:${id}`;
  try {
    await api('DELETE', devicePath(id));
    dismissToast(key);
    toast(msg('Revoked ', quoted(d.name), '. Its key no longer works.'), { kind: 'success' });
    await refreshDevice(id, { ...d, status: 'revoked' });
    historyChanged(id);
    loadStats();
    const active = document.activeElement;
    if (!active || active === document.body || !visible(active)) restoreFocus({ id, action: 'revoke' });
  } catch (err) {
    if (err && err.handled) return;
    toast(msg('Could not revoke ', quoted(d.name), `: ${describe(err)}`), { key });
    if (err instanceof ApiError && (err.status === 409 || err.status === 404)) {
      refreshDevice(id);
      historyChanged(id);
    }
  }
}

// --- filters

let searchTimer = 0;
let locationTimer = 0;

function applySearch() {
  clearTimeout(searchTimer);
  const q = ui.search.value.trim();
  if ([...q].length > 200 || q === S.filters.q) return;
  applyFilters({ q });
}

function applyLocationFilter() {
  clearTimeout(locationTimer);
  const value = ui.locationFilter.value.trim();
  if (value && !TAG_RE.test(value)) {
    ui.locationError.textContent = `A location id is ${TAG_RULE}.`;
    ui.locationFilter.setAttribute('aria-invalid', 'true');
    return;
  }
  ui.locationError.textContent = '';
  ui.locationFilter.removeAttribute('aria-invalid');
  if (value === S.filters.location) return;
  applyFilters({ location: value });
}

function setStatus(status) {
  const v = STATUSES.includes(status) ? status : '';
  ui.statusFilter.value = v;
  if (v !== S.filters.status) applyFilters({ status: v });
}

function clearFilters() {
  clearTimeout(searchTimer);
  clearTimeout(locationTimer);
  S.filters = { q: '', status: '', location: '', stale: false, order: S.filters.order };
  filtersToForm();
  applyFilters({});
  ui.search.focus();
}

// --- pages: devices and webhooks
// The navigation switches the page in place; the address bar says which
// (`?view=webhooks`), so a reload, a shared link and Back keep the page.

const VIEW_TITLES = { devices: 'devicehub', webhooks: 'Webhooks · devicehub' };

function setView(view, { push = false } = {}) {
  const changed = view !== S.view;
  S.view = view === 'webhooks' ? 'webhooks' : 'devices';
  document.title = VIEW_TITLES[S.view];
  for (const a of ui.nav.querySelectorAll('a[data-view]')) {
    if (a.dataset.view === S.view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (push) {
    const url = S.view === 'webhooks' ? `${window.location.pathname}?view=webhooks` : devicesUrl();
    history.pushState(null, '', url);
  }
  if (!S.token) return;
  closeMenu(false);
  if (changed) {
    // What belongs to the other page closes (a one-time key stays open).
    for (const d of [ui.drawer, ui.whDrawer, ui.confirmDialog, ui.registerDialog, ui.editDialog, ui.webhookDialog]) {
      if (d.open) {
        d.returnTo = null;
        d.close();
      }
    }
  }
  ui.devices.hidden = S.view !== 'devices';
  ui.webhooks.hidden = S.view !== 'webhooks';
  if (S.view === 'webhooks') {
    ui.webhooksTitle.focus();
    loadWebhooks();
  } else {
    ui.devicesTitle.focus();
    load();
  }
}

function onNavClick(event) {
  const link = event.target instanceof Element ? event.target.closest('a[data-view]') : null;
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  setView(link.dataset.view, { push: link.dataset.view !== S.view });
}

// --- webhooks
// GET /api/tenant/webhooks lists them all (a tenant has at most 20). Every
// call needs the admin scope: a token without it gets 403
// insufficient_scope, and the page says so instead of an error. A secret is
// shown once, in the one-time dialog, and is never kept anywhere else.

const WEBHOOKS_PATH = '/api/tenant/webhooks';
const webhookPath = (id) => `${WEBHOOKS_PATH}/${encodeURIComponent(id)}`;
const EVENT_TYPES = ['device.created', 'device.updated', 'device.revoked', 'device.key_rotated'];
const WH_FORM_FIELDS = ['url', 'events', 'description', 'enabled'];

const W = {
  gen: 0, // bumped on every load; stale answers are dropped
  list: [], // the webhooks, in the server's order
  cards: new Map(), // id -> <li>
  busy: new Set(), // ids with a change in flight
  testing: new Set(), // ids with a test delivery in flight
  loading: false,
  loaded: false,
  denied: false,
  error: '',
  highlight: null,
};

// The deliveries log in its drawer.
const L = { id: null, gen: 0, controller: null, list: [], loading: false, error: '' };

function normalizeWebhook(h) {
  if (!h || typeof h !== 'object' || typeof h.id !== 'string') return null;
  return {
    id: h.id,
    url: typeof h.url === 'string' ? h.url : '',
    events: Array.isArray(h.events) ? h.events.filter((e) => typeof e === 'string') : [],
    description: typeof h.description === 'string' ? h.description : '',
    enabled: h.enabled === true,
    createdAt: typeof h.createdAt === 'string' && h.createdAt ? h.createdAt : null,
  };
}

function webhookFrom(data) {
  const h = normalizeWebhook(data && data.data);
  if (!h) throw new ApiError(200, 'bad_response', 'the server sent no webhook');
  return h;
}

function normalizeDelivery(d) {
  if (!d || typeof d !== 'object') return null;
  const n = (v) => (Number.isSafeInteger(v) && v >= 0 ? v : null);
  const delivery = {
    eventId: typeof d.eventId === 'string' ? d.eventId : '',
    attempt: n(d.attempt),
    at: typeof d.at === 'string' && d.at ? d.at : null,
    status: n(d.status),
    error: typeof d.error === 'string' && d.error ? d.error : null,
    durationMs: n(d.durationMs),
  };
  delivery.ok = !delivery.error && delivery.status !== null && delivery.status >= 200 && delivery.status < 300;
  return delivery;
}

const isScopeError = (err) => err instanceof ApiError && err.status === 403 && err.code === 'insufficient_scope';

function clearWebhooks() {
  W.gen += 1;
  stopLog();
  Object.assign(W, { list: [], loading: false, loaded: false, denied: false, error: '', highlight: null });
  W.cards.clear();
  W.busy.clear();
  W.testing.clear();
  ui.webhookList.replaceChildren();
  renderWebhooks();
}

async function loadWebhooks() {
  if (!S.token) return;
  const gen = ++W.gen;
  W.loading = true;
  renderWebhooks();
  try {
    const { data } = await api('GET', WEBHOOKS_PATH);
    if (gen !== W.gen) return;
    W.list = (Array.isArray(data.data) ? data.data : []).map(normalizeWebhook).filter(Boolean);
    W.denied = false;
    W.error = '';
    W.loaded = true;
  } catch (err) {
    if (gen !== W.gen) return;
    W.loading = false;
    if (err && err.handled) return;
    if (isScopeError(err)) denyWebhooks();
    else W.error = `Could not load the webhooks: ${describe(err)}`;
  }
  W.loading = false;
  renderWebhooks();
}

// The token lacks the admin scope: the page says what is needed, once.
function denyWebhooks() {
  W.denied = true;
  W.loaded = true;
  W.error = '';
  W.list = [];
  W.cards.clear();
  for (const d of [ui.whDrawer, ui.webhookDialog]) if (d.open) d.close();
  renderWebhooks();
}

function renderWebhooks() {
  const n = W.list.length;
  ui.webhookNew.hidden = !W.loaded || W.denied;
  ui.webhookCount.textContent = W.loaded && !W.denied ? plural(n, 'webhook') : '';
  const denied = W.denied
    ? 'Webhooks need an admin token. This token has only the scopes shown above; sign in with a token that has the admin scope to see and change this tenant’s webhooks.'
    : '';
  if (ui.webhooksDenied.textContent !== denied) ui.webhooksDenied.textContent = denied;
  ui.webhooksErrorText.textContent = W.error;
  ui.webhooksError.hidden = !W.error;
  const status = W.loading && !W.loaded ? 'Loading webhooks…' : '';
  if (ui.webhooksStatus.textContent !== status) ui.webhooksStatus.textContent = status;
  ui.webhooksEmpty.hidden = !(W.loaded && !W.denied && !W.error && n === 0);

  const seen = new Set();
  const wanted = [];
  for (const h of W.list) {
    seen.add(h.id);
    wanted.push(renderWebhookCard(h, W.cards.get(h.id)));
  }
  for (const id of [...W.cards.keys()]) if (!seen.has(id)) W.cards.delete(id);
  // Cards already in place stay where they are (and so does the focus).
  const current = [...ui.webhookList.children];
  if (current.length !== wanted.length || current.some((c, i) => c !== wanted[i])) {
    ui.webhookList.replaceChildren(...wanted);
  }
  ui.webhookList.hidden = !n;
}

function eventTags(events) {
  if (events.includes('*')) return el('span', 'tag tag-all', 'all events');
  const list = el('ul', 'tags tag-list');
  for (const e of events) list.append(el('li', 'tag', e));
  return list;
}

// The card's buttons: each named by its text and, for screen readers, the
// webhook ("Disable, webhook to “…”").
const WH_ACTIONS = [
  ['toggle', ''], ['test', 'Send test event'], ['log', 'Deliveries'], ['secret', 'New secret'], ['delete', 'Delete'],
];

// A card is built once and then updated in place, so that its elements (and
// the focus on one of them) stay across updates.
function buildWebhookCard() {
  const li = el('li', 'wh-card');
  const head = el('div', 'wh-head');
  const title = el('h2', 'wh-url');
  title.tabIndex = -1;
  head.append(title, el('span', 'badge wh-state'));
  const facts = el('dl', 'wh-facts');
  const events = el('div');
  events.append(el('dt', null, 'Events'), el('dd', 'wh-events'));
  const created = el('div', 'wh-created');
  created.append(el('dt', null, 'Created'), el('dd'));
  facts.append(events, created);
  const actions = el('div', 'wh-actions');
  for (const [action, label] of WH_ACTIONS) {
    const b = el('button', `btn btn-small${action === 'delete' ? ' btn-danger-outline' : ''}`);
    b.type = 'button';
    b.dataset.action = action;
    b.append(el('span', 'wh-label', label), el('span', 'vh'));
    if (action === 'log') b.setAttribute('aria-haspopup', 'dialog');
    actions.append(b);
  }
  const result = el('p', 'wh-result');
  result.setAttribute('role', 'status');
  li.append(head, el('p', 'wh-description'), facts, actions, result);
  return li;
}

const cardShown = new WeakMap(); // card -> the JSON of the webhook it shows

function renderWebhookCard(h, existing) {
  const li = existing || buildWebhookCard();
  li.dataset.id = h.id;
  li.dataset.enabled = String(h.enabled);
  li.classList.toggle('is-disabled', !h.enabled);
  li.classList.toggle('is-new', h.id === W.highlight);
  const shown = JSON.stringify(h);
  if (cardShown.get(li) !== shown) {
    cardShown.set(li, shown);
    li.querySelector('.wh-url').replaceChildren(bdi(h.url));
    const state = li.querySelector('.wh-state');
    state.className = `badge ${h.enabled ? 'badge-active' : 'badge-off'} wh-state`;
    state.textContent = h.enabled ? 'Enabled' : 'Disabled';
    const description = li.querySelector('.wh-description');
    description.classList.toggle('muted', !h.description);
    description.textContent = h.description || 'No description';
    li.querySelector('.wh-events').replaceChildren(eventTags(h.events));
    const created = li.querySelector('.wh-created');
    created.hidden = !h.createdAt;
    if (h.createdAt) {
      const time = el('time', null, formatDate(h.createdAt));
      time.dateTime = h.createdAt;
      time.title = utcTitle(h.createdAt);
      created.querySelector('dd').replaceChildren(time);
    }
    for (const hidden of li.querySelectorAll('.wh-actions .vh')) hidden.replaceChildren(msg(', webhook to ', quoted(h.url)));
    li.querySelector('[data-action="toggle"] .wh-label').textContent = h.enabled ? 'Disable' : 'Enable';
  }
  for (const b of li.querySelectorAll('.wh-actions button')) {
    const busy = b.dataset.action === 'test' ? W.testing.has(h.id) : W.busy.has(h.id);
    if (busy) b.setAttribute('aria-disabled', 'true');
    else b.removeAttribute('aria-disabled');
  }
  W.cards.set(h.id, li);
  return li;
}

function updateWebhook(h) {
  const i = W.list.findIndex((x) => x.id === h.id);
  if (i >= 0) W.list[i] = h;
  else W.list.push(h);
  renderWebhooks();
  if (ui.whDrawer.open && L.id === h.id) ui.whDrawerUrl.replaceChildren(msg('To ', bdi(h.url)));
}

function webhookById(id) {
  return W.list.find((h) => h.id === id) || null;
}

// An error of a webhook action: a missing scope says so on the page; a
// webhook gone meanwhile leaves the list; anything else is a toast.
function webhookFailed(err, h, what) {
  if (err && err.handled) return;
  if (isScopeError(err)) {
    denyWebhooks();
    return;
  }
  const key = `webhook:${h.id}`;
  if (err instanceof ApiError && err.status === 404) {
    toast(msg('The webhook to ', quoted(h.url), ' no longer exists.'), { key });
    loadWebhooks();
    return;
  }
  toast(msg(`Could not ${what} the webhook to `, quoted(h.url), `: ${describe(err)}`), { key });
}

function runWebhookAction(action, id, ret) {
  if (action === 'toggle') toggleWebhook(id);
  else if (action === 'test') testWebhook(id, 'card');
  else if (action === 'log') openLog(id, ret);
  else if (action === 'secret') rotateSecret(id, ret);
  else if (action === 'delete') deleteWebhook(id, ret);
}

async function toggleWebhook(id) {
  const h = webhookById(id);
  if (!h || W.busy.has(id)) return;
  const enabled = !h.enabled;
  W.busy.add(id);
  renderWebhooks();
  try {
    const { data } = await api('PATCH', webhookPath(id), { body: { enabled } });
    const fresh = webhookFrom(data);
    W.busy.delete(id);
    updateWebhook(fresh);
    dismissToast(`webhook:${id}`);
    toast(enabled
      ? msg('Enabled the webhook to ', quoted(fresh.url), '. Sending resumes with its first undelivered event.')
      : msg('Disabled the webhook to ', quoted(fresh.url), '. Nothing is sent to it until it is enabled again.'),
    { kind: 'success' });
  } catch (err) {
    webhookFailed(err, h, enabled ? 'enable' : 'disable');
  } finally {
    W.busy.delete(id);
    if (W.cards.has(id)) renderWebhooks();
  }
}

function testSentence(d) {
  const took = d.durationMs === null ? '' : ` in ${fmt(d.durationMs)} ms`;
  if (d.ok) return `Test event delivered: HTTP ${d.status}${took}.`;
  let why = d.error || (d.status !== null ? `the receiver answered HTTP ${d.status}` : 'no answer');
  if (d.error && d.status !== null) why += ` (HTTP ${d.status})`;
  return `Test event not delivered: ${why}${took ? `,${took}` : ''}.`;
}

// POST …/test: one signed webhook.test event, sent now; the answer is the
// attempt, shown where the button was pressed; the log catches up.
async function testWebhook(id, where) {
  const h = webhookById(id);
  if (!h || W.testing.has(id)) return;
  const card = W.cards.get(id);
  const out = where === 'drawer' ? ui.whDrawerResult : card && card.querySelector('.wh-result');
  if (!out) return;
  W.testing.add(id);
  ui.whDrawerTest.setAttribute('aria-disabled', String(L.id === id));
  renderWebhooks();
  out.dataset.outcome = '';
  out.textContent = 'Sending a test event…';
  try {
    const { data } = await api('POST', `${webhookPath(id)}/test`);
    const d = normalizeDelivery(data.data);
    if (!d) throw new ApiError(200, 'bad_response', 'the server sent no delivery');
    out.dataset.outcome = d.ok ? 'ok' : 'failed';
    out.textContent = testSentence(d);
    dismissToast(`webhook:${id}`);
  } catch (err) {
    if (err && err.handled) return;
    if (isScopeError(err)) {
      denyWebhooks();
      return;
    }
    out.dataset.outcome = 'failed';
    out.textContent = `Could not send a test event: ${describe(err)}`;
    if (err instanceof ApiError && err.status === 404) loadWebhooks();
  } finally {
    W.testing.delete(id);
    ui.whDrawerTest.removeAttribute('aria-disabled');
    if (W.cards.has(id)) renderWebhooks();
  }
  if (ui.whDrawer.open && L.id === id) loadLog(id);
}

async function deleteWebhook(id, ret) {
  const h = webhookById(id);
  if (!h || W.busy.has(id)) return;
  const ok = await confirmAction(
    'Delete webhook',
    msg('Delete the webhook to ', quoted(h.url), '? Nothing more is sent to it, and its deliveries log is deleted. This cannot be undone.'),
    'Delete',
    ret,
  );
  if (!ok) return;
  W.busy.add(id);
  try {
    await api('DELETE', webhookPath(id));
    dismissToast(`webhook:${id}`);
    removeWebhook(id);
    toast(msg('Deleted the webhook to ', quoted(h.url), '.'), { kind: 'success' });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      removeWebhook(id);
      return;
    }
    webhookFailed(err, h, 'delete');
  } finally {
    W.busy.delete(id);
    if (W.cards.has(id)) renderWebhooks();
  }
}

// Takes a webhook off the page; the focus goes to the next card's heading
// (else the previous one's, else the page's).
function removeWebhook(id) {
  const i = W.list.findIndex((h) => h.id === id);
  if (i < 0) return;
  const hadFocus = W.cards.get(id) && W.cards.get(id).contains(document.activeElement);
  W.list.splice(i, 1);
  renderWebhooks();
  const active = document.activeElement;
  if (!hadFocus && active && active !== document.body && active.isConnected) return;
  const next = W.list[i] || W.list[i - 1];
  const card = next && W.cards.get(next.id);
  if (card) card.querySelector('.wh-url').focus();
  else ui.webhooksTitle.focus();
}

function showSecret(secret, h, title, ret) {
  showOnce({
    value: secret,
    title,
    sub: msg('For the webhook to ', quoted(h.url)),
    warning: 'You will not see this secret again. Store it now: the receiver needs it to check the Devicehub-Signature header of each delivery.',
    confirm: 'Close without keeping the secret? It cannot be shown again; you would have to make a new secret to get one.',
    back: 'Back to the secret',
    discard: 'Close without the secret',
  }, ret);
}

async function rotateSecret(id, ret) {
  const h = webhookById(id);
  if (!h || W.busy.has(id)) return;
  const ok = await confirmAction(
    'New signing secret',
    msg('Make a new signing secret for the webhook to ', quoted(h.url), '? From the next attempt on, deliveries are signed with the new secret only: the receiver needs it at once.'),
    'Make a new secret',
    ret,
  );
  if (!ok) return;
  W.busy.add(id);
  try {
    const { data } = await api('POST', `${webhookPath(id)}/secret`);
    const fresh = webhookFrom(data);
    W.busy.delete(id);
    updateWebhook(fresh);
    dismissToast(`webhook:${id}`);
    if (typeof data.secret === 'string' && data.secret) showSecret(data.secret, fresh, 'New signing secret', ret);
    else toast(msg('The secret of the webhook to ', quoted(fresh.url), ' was changed, but the server returned none. Make a new one to get it.'), { key: `webhook:${id}` });
  } catch (err) {
    webhookFailed(err, h, 'change the secret of');
  } finally {
    W.busy.delete(id);
    if (W.cards.has(id)) renderWebhooks();
  }
}

// --- the form: add a webhook

function clearWebhookErrors() {
  for (const f of WH_FORM_FIELDS) $(`wh-${f}-error`).textContent = '';
  for (const input of ui.webhookForm.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  ui.whError.textContent = '';
}

// The control that takes the focus for a field's error.
function webhookField(field) {
  if (field !== 'events') return $(`wh-${field}`);
  if (!ui.whEventsSome.checked) return ui.whEventsAll;
  return ui.whTypes.querySelector('input:checked') || ui.whTypes.querySelector('input');
}

function setWebhookError(field, message) {
  $(`wh-${field}-error`).textContent = message;
  if (field === 'events') {
    for (const input of ui.whEvents.querySelectorAll('input')) input.setAttribute('aria-invalid', 'true');
  } else {
    $(`wh-${field}`).setAttribute('aria-invalid', 'true');
  }
}

function syncEventChoice() {
  const some = ui.whEventsSome.checked;
  for (const box of ui.whTypes.querySelectorAll('input')) box.disabled = !some;
}

function openWebhookForm() {
  if (!W.loaded || W.denied) return;
  ui.webhookForm.reset();
  clearWebhookErrors();
  syncEventChoice();
  setBusy(ui.whSubmit, false);
  openDialog(ui.webhookDialog, ui.whUrl, { el: ui.webhookNew });
}

function readWebhookForm() {
  const errors = {};
  const url = ui.whUrl.value.trim();
  if (!url) errors.url = 'Enter the URL that receives the events';
  let events = ['*'];
  if (ui.whEventsSome.checked) {
    events = [...ui.whTypes.querySelectorAll('input:checked')].map((box) => box.value).filter((v) => EVENT_TYPES.includes(v));
    if (!events.length) errors.events = 'Choose at least one event type, or all events';
  }
  if (Object.keys(errors).length) return { errors };
  return {
    body: { url, events, description: ui.whDescription.value.trim(), enabled: ui.whEnabled.checked },
  };
}

function showWebhookErrors(errors) {
  let first = null;
  for (const f of WH_FORM_FIELDS) {
    if (!errors[f]) continue;
    setWebhookError(f, errors[f]);
    if (!first) first = webhookField(f);
  }
  if (first) first.focus();
}

// A 400 whose message names a field ("url: …", "events[1]: …") goes next to it.
function showWebhookServerError(err) {
  if (!(err instanceof ApiError) || err.status !== 400) return false;
  const m = /^([A-Za-z]+)(\[\d+\])?: /.exec(err.message);
  if (!m || !WH_FORM_FIELDS.includes(m[1])) return false;
  showWebhookErrors({ [m[1]]: err.message });
  return true;
}

async function onWebhookSubmit(event) {
  event.preventDefault();
  if (ui.whSubmit.disabled) return;
  clearWebhookErrors();
  const form = readWebhookForm();
  if (form.errors) {
    showWebhookErrors(form.errors);
    return;
  }
  setBusy(ui.whSubmit, true, 'Creating…');
  try {
    const { data } = await api('POST', WEBHOOKS_PATH, { body: form.body });
    const h = webhookFrom(data);
    ui.webhookDialog.returnTo = null;
    ui.webhookDialog.close();
    W.highlight = h.id;
    setTimeout(() => {
      if (W.highlight !== h.id) return;
      W.highlight = null;
      const card = W.cards.get(h.id);
      if (card) card.classList.remove('is-new');
    }, 8000);
    updateWebhook(h);
    if (typeof data.secret === 'string' && data.secret) {
      showSecret(data.secret, h, 'Webhook created', { el: ui.webhookNew });
    } else {
      toast(msg('The webhook to ', quoted(h.url), ' was created, but the server returned no secret. Make a new secret to get one.'));
    }
  } catch (err) {
    if (err && err.handled) return;
    if (isScopeError(err)) {
      denyWebhooks();
      return;
    }
    if (showWebhookServerError(err)) return;
    ui.whError.textContent = `Could not create the webhook: ${describe(err)}`;
  } finally {
    setBusy(ui.whSubmit, false);
  }
}

// --- the deliveries log (GET …/deliveries: the last 100 attempts, newest first)

function stopLog() {
  L.gen += 1;
  if (L.controller) L.controller.abort();
  L.controller = null;
  L.loading = false;
}

function openLog(id, ret) {
  const h = webhookById(id);
  if (!h) return;
  stopLog();
  Object.assign(L, { id, list: [], error: '' });
  ui.whDrawer.dataset.id = id;
  ui.whDrawerUrl.replaceChildren(msg('To ', bdi(h.url)));
  ui.whDrawerResult.textContent = '';
  ui.whDrawerResult.dataset.outcome = '';
  openDialog(ui.whDrawer, ui.whDrawerClose, ret);
  loadLog(id);
}

async function loadLog(id) {
  stopLog();
  const gen = L.gen;
  const controller = new AbortController();
  L.controller = controller;
  L.loading = true;
  L.error = '';
  renderLog();
  try {
    const { data } = await api('GET', `${webhookPath(id)}/deliveries`, { signal: controller.signal });
    if (gen !== L.gen) return;
    L.list = (Array.isArray(data.data) ? data.data : []).map(normalizeDelivery).filter(Boolean);
  } catch (err) {
    if (gen !== L.gen) return;
    L.controller = null;
    L.loading = false;
    if (err && err.handled) return;
    if (isScopeError(err)) {
      denyWebhooks();
      return;
    }
    L.error = `Could not load the deliveries: ${describe(err)}`;
  }
  L.controller = null;
  L.loading = false;
  renderLog();
}

function deliveryItem(d) {
  const li = el('li', `history-item wh-delivery ${d.ok ? 'is-ok' : 'is-failed'}`);
  li.dataset.eventId = d.eventId;
  li.append(el('h4', 'history-what wh-delivery-outcome', d.ok ? 'Delivered' : 'Failed'));
  const meta = el('p', 'history-meta');
  if (d.at) {
    const time = el('time', 'wh-delivery-at', formatDate(d.at));
    time.dateTime = d.at;
    time.title = utcTitle(d.at);
    meta.append(time, ' · ');
  }
  meta.append(
    el('span', 'wh-delivery-attempt', d.attempt === null ? 'attempt ?' : `attempt ${fmt(d.attempt)}`),
    ' · ',
    el('span', 'wh-delivery-duration', d.durationMs === null ? '' : `${fmt(d.durationMs)} ms`),
  );
  const facts = el('p', 'wh-delivery-facts');
  facts.append(
    el('span', 'wh-delivery-status', d.status === null ? 'No HTTP answer' : `HTTP ${d.status}`),
    ' · event ',
    el('code', 'mono wh-delivery-event', d.eventId),
  );
  li.append(meta, facts);
  if (d.error) li.append(el('p', 'wh-delivery-error', d.error));
  return li;
}

function renderLog() {
  let status = '';
  if (L.loading && !L.list.length) status = 'Loading the deliveries…';
  else if (!L.loading && !L.error) {
    status = L.list.length
      ? `${plural(L.list.length, 'attempt')}, newest first.`
      : 'No deliveries yet. Events are sent as devices change; “Send test event” sends one now.';
  }
  if (ui.whLogStatus.textContent !== status) ui.whLogStatus.textContent = status;
  ui.whLogErrorText.textContent = L.error;
  ui.whLogError.hidden = !L.error;
  const frag = document.createDocumentFragment();
  for (const d of L.list) frag.append(deliveryItem(d));
  ui.whLog.replaceChildren(frag);
  ui.whLog.hidden = !L.list.length;
}

function bindWebhooks() {
  ui.nav.addEventListener('click', onNavClick);
  ui.webhookNew.addEventListener('click', openWebhookForm);
  ui.webhooksRetry.addEventListener('click', () => loadWebhooks());
  ui.webhookList.addEventListener('click', (e) => {
    const button = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
    const card = button && button.closest('li[data-id]');
    if (!card || button.getAttribute('aria-disabled') === 'true') return;
    const id = card.dataset.id;
    runWebhookAction(button.dataset.action, id, { el: button, id, action: button.dataset.action });
  });
  ui.webhookForm.addEventListener('submit', onWebhookSubmit);
  $('wh-cancel').addEventListener('click', () => ui.webhookDialog.close());
  ui.whEventsAll.addEventListener('change', syncEventChoice);
  ui.whEventsSome.addEventListener('change', syncEventChoice);
  ui.whDrawerClose.addEventListener('click', () => ui.whDrawer.close());
  ui.whDrawer.addEventListener('close', () => {
    stopLog();
    L.id = null;
    delete ui.whDrawer.dataset.id;
  });
  ui.whDrawerTest.addEventListener('click', () => {
    if (L.id && ui.whDrawerTest.getAttribute('aria-disabled') !== 'true') testWebhook(L.id, 'drawer');
  });
  ui.whLogRefresh.addEventListener('click', () => {
    if (L.id) loadLog(L.id);
  });
  ui.whLogRetry.addEventListener('click', () => {
    if (L.id) loadLog(L.id);
  });
}

// --- wiring

function bind() {
  // Each id becomes ui.camelCase (e.g. 'key-value' -> ui.keyValue).
  const ids = [
    'session', 'tenant', 'scopes', 'expiry', 'role', 'signout', 'toast-alerts', 'toast-status',
    'expiry-warning', 'expiry-warning-text', 'expiry-renew', 'signin', 'signin-form', 'token-input',
    'signin-error', 'devices', 'devices-title', 'register-open', 'stats', 'filters', 'status-filter',
    'location-filter', 'location-options', 'search', 'stale-filter', 'order', 'clear-filters',
    'filters-toggle', 'filters-more', 'list-error', 'list-error-text', 'retry', 'table-wrap', 'empty-message', 'page-first',
    'page-prev', 'page-next', 'page-info', 'row-menu', 'drawer', 'drawer-name', 'drawer-close',
    'drawer-badges', 'drawer-id', 'drawer-copy', 'drawer-copy-status', 'drawer-seen',
    'drawer-created', 'drawer-updated', 'drawer-locations', 'drawer-pim', 'drawer-segments',
    'drawer-actions', 'history-status', 'history-error', 'history-error-text', 'history-retry',
    'history-list', 'history-dropped', 'history-more', 'register-dialog', 'register-form', 'reg-submit', 'edit-dialog', 'edit-form',
    'edit-submit', 'edit-id', 'edit-conflict', 'edit-reload', 'key-dialog', 'key-title', 'key-for',
    'key-value', 'key-copy', 'key-done', 'key-copy-status', 'key-actions', 'key-confirm', 'key-back',
    'key-discard', 'confirm-dialog', 'confirm-title', 'confirm-message', 'confirm-ok',
    'confirm-cancel', 'grace-field', 'grace', 'key-grace', 'switch-dialog', 'switch-message', 'switch-ok', 'switch-keep',
    'key-warning', 'key-confirm-text', 'nav', 'webhooks', 'webhooks-title', 'webhook-count', 'webhook-new',
    'webhooks-denied', 'webhooks-error', 'webhooks-error-text', 'webhooks-retry', 'webhooks-status', 'webhook-list',
    'webhooks-empty', 'wh-drawer', 'wh-drawer-close', 'wh-drawer-url', 'wh-drawer-test', 'wh-log-refresh',
    'wh-drawer-result', 'wh-log-status', 'wh-log-error', 'wh-log-error-text', 'wh-log-retry', 'wh-log',
    'webhook-dialog', 'webhook-form', 'wh-url', 'wh-events', 'wh-events-all', 'wh-events-some', 'wh-types',
    'wh-description', 'wh-enabled', 'wh-error', 'wh-submit',
  ];
  for (const id of ids) ui[id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = $(id);
  const renamed = { count: 'device-count', locationError: 'location-filter-error', empty: 'empty-state' };
  for (const [key, id] of Object.entries(renamed)) ui[key] = $(id);
  ui.tbody = document.querySelector('#device-table tbody');

  ui.signinForm.addEventListener('submit', onSignin);
  ui.tokenInput.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      ui.signinForm.requestSubmit();
    }
  });
  ui.signout.addEventListener('click', () => signOut(''));
  ui.expiryRenew.addEventListener('click', () => signOut('Paste a new access token to go on.'));

  // Filters.
  ui.filters.addEventListener('submit', (e) => {
    e.preventDefault();
    applySearch();
    applyLocationFilter();
  });
  ui.search.addEventListener('input', () => {
    performance.mark('devicehub:search-input', { detail: { q: ui.search.value.trim() } });
    clearTimeout(searchTimer);
    searchTimer = setTimeout(applySearch, SEARCH_DELAY_MS);
  });
  ui.search.addEventListener('search', applySearch);
  ui.statusFilter.addEventListener('change', () => setStatus(ui.statusFilter.value));
  ui.stats.addEventListener('click', (e) => {
    const button = e.target instanceof Element ? e.target.closest('button[data-status]') : null;
    if (button) setStatus(button.dataset.status);
  });
  ui.locationFilter.addEventListener('input', () => {
    clearTimeout(locationTimer);
    locationTimer = setTimeout(applyLocationFilter, 400);
  });
  ui.locationFilter.addEventListener('change', applyLocationFilter);
  ui.staleFilter.addEventListener('change', () => applyFilters({ stale: ui.staleFilter.checked }));
  ui.order.addEventListener('change', () => applyFilters({ order: ui.order.value === 'asc' ? 'asc' : 'desc' }));
  ui.clearFilters.addEventListener('click', clearFilters);
  // Phones: the filters other than the search fold away behind one button.
  ui.filtersToggle.addEventListener('click', () => {
    const open = !ui.filtersMore.classList.contains('is-open');
    ui.filtersMore.classList.toggle('is-open', open);
    ui.filtersToggle.setAttribute('aria-expanded', String(open));
  });
  ui.retry.addEventListener('click', () => load());
  ui.pageNext.addEventListener('click', goNext);
  ui.pagePrev.addEventListener('click', goPrev);
  ui.pageFirst.addEventListener('click', goFirst);

  // Rows: the name opens the details; the buttons and the menu act.
  ui.tbody.addEventListener('click', (e) => {
    const button = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
    if (!button || button.disabled) return;
    const row = button.closest('tr');
    const id = row && row.dataset.id;
    if (!id) return;
    const action = button.dataset.action;
    if (action === 'menu') {
      if (menuFor && menuFor.button === button) closeMenu(true);
      else openMenu(button, id);
      return;
    }
    runAction(action, id, { el: button, id, action });
  });
  ui.tbody.addEventListener('keydown', (e) => {
    const button = e.target instanceof Element ? e.target.closest('button[data-action="menu"]') : null;
    if (!button || (e.key !== 'ArrowDown' && e.key !== 'ArrowUp')) return;
    e.preventDefault();
    openMenu(button, button.closest('tr').dataset.id, e.key === 'ArrowUp');
  });
  ui.rowMenu.addEventListener('keydown', onMenuKey);
  ui.rowMenu.addEventListener('click', onMenuClick);
  document.addEventListener('pointerdown', (e) => {
    if (!menuFor) return;
    const t = e.target;
    if (t instanceof Node && (ui.rowMenu.contains(t) || menuFor.button.contains(t))) return;
    closeMenu(false);
  });
  window.addEventListener('resize', () => closeMenu(false));

  // Drawer.
  ui.drawerClose.addEventListener('click', () => ui.drawer.close());
  ui.drawerCopy.addEventListener('click', async () => {
    const copied = await copyText(ui.drawerId);
    ui.drawerCopyStatus.textContent = copied ? 'ID copied to the clipboard.' : COPY_BLOCKED;
  });
  ui.drawer.addEventListener('close', stopHistory);
  ui.historyMore.addEventListener('click', showOlderHistory);
  ui.historyRetry.addEventListener('click', () => {
    if (ui.drawer.dataset.id) loadHistory(ui.drawer.dataset.id, true);
  });
  ui.drawerActions.addEventListener('click', (e) => {
    const button = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
    const id = ui.drawer.dataset.id;
    if (!button || !id) return;
    runAction(button.dataset.action, id, { el: button, id, action: button.dataset.action });
  });

  // Dialogs: the focus goes back where it came from.
  for (const dialog of document.querySelectorAll('dialog')) {
    dialog.addEventListener('close', onDialogClosed);
  }

  ui.registerOpen.addEventListener('click', openRegister);
  ui.registerForm.addEventListener('submit', onRegister);
  $('reg-cancel').addEventListener('click', () => ui.registerDialog.close());

  ui.editForm.addEventListener('submit', onEdit);
  ui.editReload.addEventListener('click', onEditReload);
  $('edit-cancel').addEventListener('click', () => ui.editDialog.close());
  ui.editDialog.addEventListener('close', () => {
    S.editing = null;
  });

  ui.keyCopy.addEventListener('click', () => {
    copyKey().catch((err) => {
      ui.keyCopyStatus.textContent = `Could not copy: ${describe(err)}`;
    });
  });
  ui.keyDone.addEventListener('click', closeKey);
  ui.keyDiscard.addEventListener('click', closeKey);
  ui.keyBack.addEventListener('click', () => setKeyConfirm(false));
  ui.keyDialog.addEventListener('keydown', onKeyEscape);
  ui.keyDialog.addEventListener('cancel', onKeyEscape);
  ui.keyDialog.addEventListener('close', onKeyClosed);

  ui.confirmOk.addEventListener('click', () => ui.confirmDialog.close('ok'));
  ui.confirmCancel.addEventListener('click', () => ui.confirmDialog.close('cancel'));
  ui.confirmDialog.addEventListener('close', onConfirmClosed);

  ui.switchOk.addEventListener('click', () => {
    ui.switchDialog.returnTo = null;
    ui.switchDialog.close('switch');
  });
  ui.switchKeep.addEventListener('click', () => ui.switchDialog.close('keep'));
  ui.switchDialog.addEventListener('close', onSwitchClosed);

  bindWebhooks();

  window.addEventListener('hashchange', () => offerToken(takeFragmentToken()));
  window.addEventListener('popstate', () => {
    const { filters, cursor, view } = readUrl();
    if (view !== S.view) {
      if (view === 'devices') {
        S.filters = filters;
        S.cursor = cursor;
        S.offset = cursor ? null : 0;
        filtersToForm();
        renderStats();
      }
      setView(view);
      return;
    }
    if (!S.token || view !== 'devices') return;
    if (JSON.stringify({ filters, cursor }) === JSON.stringify({ filters: S.filters, cursor: S.cursor })) return;
    S.filters = filters;
    S.cursor = cursor;
    S.offset = cursor ? null : 0;
    filtersToForm();
    renderStats();
    load({ withStats: false });
  });

  window.addEventListener('unhandledrejection', (e) => {
    e.preventDefault();
    toast(`Unexpected error: ${describe(e.reason)}`, { key: 'unexpected' });
  });

  setInterval(() => {
    if (!S.token) return;
    renderExpiry();
    refreshRelativeTimes();
  }, 30000);
}

function init() {
  bind();
  const { filters, cursor, view } = readUrl();
  S.filters = filters;
  S.cursor = cursor;
  S.offset = cursor ? null : 0;
  S.view = view;
  filtersToForm();
  const fromFragment = takeFragmentToken();
  const stored = storedToken();
  if (stored && decodeClaims(stored)) {
    startSession(stored, true);
    if (fromFragment) offerToken(fromFragment);
  } else if (fromFragment) {
    startSession(fromFragment, true);
  } else {
    showSignin('');
  }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
