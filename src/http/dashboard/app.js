// devicehub dashboard: plain ES2020 (loaded as a module, so strict and
// scoped), no dependencies. Talks to the tenant API with the access token
// the user pasted (kept in sessionStorage only).

const TOKEN_KEY = 'devicehub.token';
const PAGE_SIZE = 100;
const MAX_LIMIT = 1000;
const MAX_TAGS = 100;
const TAG_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const TAG_RULE = '1-64 characters of A-Z a-z 0-9 _ - . :';
const CONTROL_RE = /\p{Cc}/u;
const NOT_A_TOKEN =
  'That does not look like an access token: expected a JWT (three base64url parts separated by dots).';
const CONFLICT_MESSAGE =
  'Someone else changed this device since you opened it. Reload to see their changes.';

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};

// --- state

const S = {
  token: null,
  claims: null,
  scopes: [],
  admin: false,
  session: 0, // bumped on sign in / sign out; stale responses are dropped
  gen: 0, // bumped on every list reload; stale pages are dropped
  order: [], // device ids in creation order
  byId: new Map(), // id -> device
  rows: new Map(), // id -> <tr>
  knownLocations: new Set(),
  hasMore: false,
  loading: false,
  listError: '',
  shown: 0,
  status: '',
  location: '',
  editing: null, // { id, etag, name }
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

// --- time

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function formatDate(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? String(iso) : dateFormat.format(t);
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
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

// --- toast

function sentence(text) {
  const s = String(text || '').trim();
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

function toast(message, kind = 'error') {
  const item = el('div', `toast-item toast-${kind}`);
  const close = el('button', 'toast-close', '×');
  close.type = 'button';
  close.setAttribute('aria-label', 'Dismiss message');
  close.addEventListener('click', () => item.remove());
  item.append(el('span', 'toast-text', message), close);
  ui.toast.append(item);
  while (ui.toast.children.length > 4) ui.toast.firstElementChild.remove();
  if (kind !== 'error') setTimeout(() => item.remove(), 6000);
}

function describe(err) {
  if (err instanceof ApiError) {
    const tail = err.status && err.status !== 400 ? ` (${err.code})` : '';
    return sentence(err.message) + tail;
  }
  return sentence((err && err.message) || String(err));
}

function report(context, err) {
  if (err && err.handled) return;
  toast(`${context}: ${describe(err)}`);
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
  let res;
  let text = '';
  try {
    res = await fetch(path, { method, headers, body, cache: 'no-store', credentials: 'same-origin' });
    text = await res.text();
  } catch (_) {
    const e = new ApiError(0, 'network_error', 'the server could not be reached. Check the network connection and try again');
    if (session !== S.session) e.handled = true;
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
  return {
    ...d,
    name: typeof d.name === 'string' ? d.name : '',
    status: typeof d.status === 'string' ? d.status : 'unknown',
    locationIds: list(d.locationIds),
    pimEnabled: d.pimEnabled === true,
    pimSegmentIds: list(d.pimSegmentIds),
  };
}

function deviceFrom(data) {
  const d = normalize(data && data.data);
  if (!d) throw new ApiError(200, 'bad_response', 'the server sent no device');
  return d;
}

// --- session

function showSignin(message) {
  ui.session.hidden = true;
  ui.devices.hidden = true;
  ui.signin.hidden = false;
  ui.signinError.textContent = message || '';
  ui.tokenInput.value = '';
  ui.tokenInput.focus();
}

function renderExpiry() {
  const exp = S.claims ? S.claims.exp : undefined;
  ui.expiry.classList.remove('is-expired', 'is-soon');
  if (typeof exp !== 'number' || !Number.isFinite(exp) || Math.abs(exp) > 8.64e12) {
    ui.expiry.textContent = 'no expiry given';
    ui.expiry.removeAttribute('title');
    return;
  }
  const at = exp * 1000;
  const left = at - Date.now();
  ui.expiry.title = `${new Date(at).toISOString()} (${dateFormat.format(at)})`;
  if (left <= 0) {
    ui.expiry.textContent = `expired ${span(-left)} ago`;
    ui.expiry.classList.add('is-expired');
  } else {
    ui.expiry.textContent = `in ${span(left)}`;
    if (left < 10 * 60000) ui.expiry.classList.add('is-soon');
  }
}

function startSession(token) {
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
  storeToken(token);

  ui.tenant.textContent = claims.tenant_id === undefined || claims.tenant_id === null ? '' : String(claims.tenant_id);
  ui.scopes.textContent = S.scopes.join(' ');
  ui.role.textContent = S.admin ? 'Admin' : 'Read-only';
  ui.role.classList.toggle('is-admin', S.admin);
  if (typeof claims.sub === 'string' && claims.sub) ui.role.title = `Signed in as ${claims.sub}`;
  else ui.role.removeAttribute('title');
  renderExpiry();

  ui.registerOpen.hidden = !S.admin;
  ui.actionsHead.hidden = !S.admin;
  document.body.classList.toggle('is-admin', S.admin);

  ui.statusFilter.value = '';
  ui.locationFilter.value = '';
  ui.locationError.textContent = '';
  ui.locationFilter.removeAttribute('aria-invalid');
  ui.search.value = '';
  S.status = '';
  S.location = '';
  S.knownLocations.clear();
  ui.locationOptions.replaceChildren();

  ui.signinError.textContent = '';
  ui.tokenInput.value = '';
  ui.signin.hidden = true;
  ui.session.hidden = false;
  ui.devices.hidden = false;
  ui.devicesTitle.focus();
  clearList();
  reload(false);
}

function signOut(message) {
  S.session += 1;
  S.gen += 1;
  S.token = null;
  S.claims = null;
  S.scopes = [];
  S.admin = false;
  S.loading = false;
  S.editing = null;
  forgetToken();
  closeAllDialogs();
  clearList();
  ui.toast.replaceChildren();
  ui.registerOpen.hidden = true;
  ui.actionsHead.hidden = true;
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

// --- list

function clearList() {
  S.order = [];
  S.byId.clear();
  S.rows.clear();
  S.hasMore = false;
  S.listError = '';
  S.shown = 0;
  ui.tbody.replaceChildren();
  updateChrome();
}

function searchQuery() {
  return ui.search.value.trim().toLowerCase();
}

function matches(device, q) {
  return !q || device.name.toLowerCase().includes(q);
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

// Adds devices not yet listed (reusing their old <tr> from `previous` when
// given); returns the ids added.
function addDevices(list, previous) {
  const added = [];
  for (const raw of list) {
    const d = normalize(raw);
    if (!d || S.byId.has(d.id)) continue;
    S.byId.set(d.id, d);
    S.order.push(d.id);
    S.rows.set(d.id, renderRow(d, previous ? previous.get(d.id) : undefined));
    rememberLocations(d);
    added.push(d.id);
  }
  return added;
}

// Shows the loaded rows whose name matches the search; leaves the DOM
// alone when the visible rows would not change (fast typing, 1000+ rows).
function renderAllRows() {
  const q = searchQuery();
  const wanted = [];
  for (const id of S.order) {
    if (matches(S.byId.get(id), q)) wanted.push(S.rows.get(id));
  }
  const current = ui.tbody.children;
  let same = current.length === wanted.length;
  for (let i = 0; same && i < wanted.length; i += 1) same = current[i] === wanted[i];
  if (!same) {
    const frag = document.createDocumentFragment();
    for (const row of wanted) frag.append(row);
    ui.tbody.replaceChildren(frag);
  }
  S.shown = wanted.length;
  updateChrome();
}

function appendRows(ids) {
  const q = searchQuery();
  const frag = document.createDocumentFragment();
  for (const id of ids) {
    if (matches(S.byId.get(id), q)) {
      frag.append(S.rows.get(id));
      S.shown += 1;
    }
  }
  ui.tbody.append(frag);
  updateChrome();
}

function updateChrome() {
  const n = S.order.length;
  const q = searchQuery();
  if (S.loading && n === 0) {
    ui.count.textContent = 'Loading…';
  } else {
    let text = `${plural(n, 'device')} loaded`;
    if (q) text += `, ${S.shown} shown`;
    if (S.hasMore) text += ' (more available)';
    ui.count.textContent = text;
  }
  ui.count.dataset.count = String(n);

  ui.loadMore.hidden = !S.hasMore;
  ui.loadMore.disabled = S.loading;
  ui.loadMore.textContent = S.loading ? 'Loading…' : 'Load more';
  ui.tableWrap.setAttribute('aria-busy', S.loading ? 'true' : 'false');

  let empty = '';
  if (S.listError) empty = S.listError;
  else if (n === 0 && S.loading) empty = 'Loading devices…';
  else if (n === 0 && (S.status || S.location)) empty = 'No devices match these filters.';
  else if (n === 0) {
    empty = S.admin
      ? 'No devices registered yet. Use “Register device” to add the first one.'
      : 'No devices registered yet.';
  } else if (S.shown === 0) {
    empty = `No loaded device has a name containing “${ui.search.value.trim()}”.`;
    if (S.hasMore) empty += ' Load more devices to search further.';
  }
  ui.emptyMessage.textContent = empty;
  ui.empty.hidden = !empty;
  ui.retry.hidden = !S.listError;
}

function listUrl(limit, after) {
  const params = new URLSearchParams();
  params.set('limit', String(limit));
  if (after) params.set('startingAfter', after);
  if (S.status) params.set('status', S.status);
  if (S.location) params.set('locationId', S.location);
  return `/api/tenant/devices?${params}`;
}

async function fetchPage(limit, after) {
  const { data } = await api('GET', listUrl(limit, after));
  return { list: Array.isArray(data.data) ? data.data : [], hasMore: data.hasMore === true };
}

// Loads the list from the start. `keep` reloads as many devices as are
// loaded now (after a write), otherwise one page.
async function reload(keep) {
  if (!S.token) return;
  const gen = ++S.gen;
  const want = keep ? Math.max(PAGE_SIZE, S.order.length + 1) : PAGE_SIZE;
  S.loading = true;
  S.listError = '';
  if (!keep) clearList();
  updateChrome();
  const all = [];
  let hasMore = false;
  try {
    do {
      const limit = Math.min(MAX_LIMIT, want - all.length);
      const after = all.length ? all[all.length - 1].id : null;
      const page = await fetchPage(limit, after);
      if (gen !== S.gen) return;
      for (const d of page.list) if (d && typeof d.id === 'string') all.push(d);
      hasMore = page.hasMore;
      if (page.list.length === 0) break;
    } while (hasMore && all.length < want);
    const previous = S.rows;
    S.order = [];
    S.byId.clear();
    S.rows = new Map();
    addDevices(all, previous);
    S.hasMore = hasMore;
    S.loading = false;
    renderAllRows();
  } catch (err) {
    if (gen !== S.gen) return;
    S.loading = false;
    if (err && err.handled) return;
    report('Could not load devices', err);
    if (!keep) S.listError = `Could not load devices: ${describe(err)}`;
    updateChrome();
  }
}

async function loadMore() {
  if (!S.token || S.loading || !S.hasMore || S.order.length === 0) return;
  const gen = S.gen;
  S.loading = true;
  updateChrome();
  try {
    const page = await fetchPage(PAGE_SIZE, S.order[S.order.length - 1]);
    if (gen !== S.gen) return;
    const added = addDevices(page.list);
    S.hasMore = page.hasMore && page.list.length > 0;
    S.loading = false;
    appendRows(added);
  } catch (err) {
    if (gen !== S.gen) return;
    S.loading = false;
    updateChrome();
    report('Could not load more devices', err);
  }
}

// --- rows

function tagList(tags, max, muted) {
  const wrap = el('span', muted ? 'tags is-muted' : 'tags');
  tags.slice(0, max).forEach((t) => wrap.append(el('span', 'tag', t)));
  if (tags.length > max) {
    const more = el('span', 'tag tag-more', `+${tags.length - max} more`);
    more.title = tags.slice(max).join(', ');
    wrap.append(more);
  }
  return wrap;
}

function timeCell(cls, iso, relative) {
  const td = el('td', cls);
  if (!iso) {
    td.append(el('span', 'muted', 'never'));
    return td;
  }
  const time = el('time', null, relative ? relTime(iso) : formatDate(iso));
  time.dateTime = iso;
  time.title = iso;
  if (relative) time.dataset.rel = '1';
  td.append(time);
  return td;
}

function actionButton(cls, label, aria) {
  const b = el('button', `btn btn-small ${cls}`, label);
  b.type = 'button';
  b.setAttribute('aria-label', aria);
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
  name.title = `ID ${d.id}`;
  name.append(el('span', 'name', d.name));

  const status = el('td', 'cell-status');
  const known = ['active', 'inactive', 'revoked'].includes(d.status);
  status.append(el('span', `badge badge-${known ? d.status : 'unknown'}`, d.status));

  const locations = el('td', 'cell-locations');
  if (d.locationIds.length) {
    locations.title = d.locationIds.join(', ');
    locations.append(tagList(d.locationIds, 4, false));
  } else {
    locations.append(el('span', 'muted', '—'));
  }

  const pim = el('td', 'cell-pim');
  pim.append(el('span', `badge ${d.pimEnabled ? 'badge-on' : 'badge-off'}`, d.pimEnabled ? 'on' : 'off'));
  if (d.pimSegmentIds.length) {
    pim.title = `Segments: ${d.pimSegmentIds.join(', ')}`;
    pim.append(' ', tagList(d.pimSegmentIds, 3, !d.pimEnabled));
  }

  tr.append(name, status, locations, pim, timeCell('cell-created', d.createdAt, false), timeCell('cell-seen', d.lastSeenAt, true));

  if (S.admin) {
    const actions = el('td', 'cell-actions');
    if (revoked) {
      actions.append(el('span', 'muted final', 'Revoked (final)'));
    } else {
      const label = `“${d.name}”`;
      actions.append(
        actionButton('edit', 'Edit', `Edit ${label}`),
        actionButton('rotate', 'Rotate key', `Rotate the API key of ${label}`),
        actionButton('revoke btn-danger-outline', 'Revoke', `Revoke ${label}`),
      );
    }
    tr.append(actions);
  }
  return tr;
}

// Replaces a listed device with a fresh copy from the server.
function updateDevice(raw) {
  const d = normalize(raw);
  if (!d || !S.byId.has(d.id)) return;
  const old = S.byId.get(d.id);
  if (JSON.stringify(old) === JSON.stringify(d)) return;
  const focused = document.activeElement;
  const oldRow = S.rows.get(d.id);
  const focusClass = focused && oldRow.contains(focused) && focused.classList.contains('btn')
    ? ['edit', 'rotate', 'revoke'].find((c) => focused.classList.contains(c))
    : null;
  S.byId.set(d.id, d);
  renderRow(d, oldRow);
  rememberLocations(d);
  renderAllRowsIfSearching();
  if (focusClass) focusRow(d.id, focusClass);
}

function renderAllRowsIfSearching() {
  if (searchQuery()) renderAllRows();
  else updateChrome();
}

function focusRow(id, cls) {
  const row = S.rows.get(id);
  const target =
    (row && row.isConnected && (row.querySelector(`button.${cls}`) || row.querySelector('button'))) ||
    ui.tableWrap;
  target.focus();
}

function refocusAfterDialog(id, cls) {
  const active = document.activeElement;
  if (document.querySelector('dialog[open]')) return;
  if (!active || active === document.body || !active.isConnected) focusRow(id, cls);
}

// --- dialogs

function openDialog(dialog, focusTarget) {
  if (!dialog.open) dialog.showModal();
  if (focusTarget) focusTarget.focus();
}

function closeAllDialogs() {
  for (const d of document.querySelectorAll('dialog')) {
    if (d.open) d.close();
  }
}

let confirmResolve = null;

function confirmAction(title, message, okLabel) {
  if (confirmResolve) confirmResolve(false);
  ui.confirmTitle.textContent = title;
  ui.confirmMessage.textContent = message;
  ui.confirmOk.textContent = okLabel;
  ui.confirmDialog.returnValue = '';
  return new Promise((resolve) => {
    confirmResolve = resolve;
    openDialog(ui.confirmDialog, ui.confirmCancel);
  });
}

function onConfirmClosed() {
  const resolve = confirmResolve;
  confirmResolve = null;
  if (resolve) resolve(ui.confirmDialog.returnValue === 'ok');
}

function showKey(key, device, title) {
  ui.keyTitle.textContent = title;
  ui.keyFor.textContent = `For “${device.name}” (${device.id})`;
  ui.keyValue.textContent = key;
  ui.keyCopyStatus.textContent = '';
  ui.keyDialog.dataset.device = device.id;
  openDialog(ui.keyDialog, ui.keyCopy);
}

function selectKey() {
  const range = document.createRange();
  range.selectNodeContents(ui.keyValue);
  const selection = window.getSelection();
  if (!selection) return;
  selection.removeAllRanges();
  selection.addRange(range);
}

async function copyKey() {
  const key = ui.keyValue.textContent;
  if (!key) return;
  let copied = false;
  if (window.isSecureContext && navigator.clipboard && navigator.clipboard.writeText) {
    try {
      await navigator.clipboard.writeText(key);
      copied = true;
    } catch (_) {
      copied = false;
    }
  }
  if (!copied) {
    selectKey();
    try {
      copied = document.execCommand('copy');
    } catch (_) {
      copied = false;
    }
    selectKey();
  }
  ui.keyCopyStatus.textContent = copied
    ? 'Copied to the clipboard.'
    : 'Copying is blocked in this browser. The key is selected: press Ctrl+C (⌘C on a Mac) to copy it.';
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

function openRegister() {
  if (!S.admin) return;
  ui.registerForm.reset();
  clearErrors('reg');
  setBusy(ui.regSubmit, false);
  openDialog(ui.registerDialog, $('reg-name'));
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
  setBusy(ui.regSubmit, true, 'Registering…');
  try {
    const { data } = await api('POST', '/api/tenant/devices', { body: form.body });
    const device = deviceFrom(data);
    ui.registerDialog.close();
    if (typeof data.apiKey === 'string' && data.apiKey) {
      showKey(data.apiKey, device, 'Device registered');
    } else {
      toast(`“${device.name}” was registered, but the server returned no API key. Rotate its key to get one.`);
    }
    toast(`Registered “${device.name}”.`, 'success');
    reload(true);
  } catch (err) {
    if (err && err.handled) return;
    if (showServerFieldError('reg', err)) return;
    $('reg-error').textContent = `Could not register the device: ${describe(err)}`;
    report('Could not register the device', err);
  } finally {
    setBusy(ui.regSubmit, false);
  }
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

async function openEdit(id, button) {
  const known = S.byId.get(id);
  const label = known ? `“${known.name}”` : 'the device';
  if (button) button.disabled = true;
  try {
    const { data, etag } = await api('GET', devicePath(id));
    const d = deviceFrom(data);
    updateDevice(d);
    if (d.status === 'revoked') {
      toast(`“${d.name}” has been revoked and can no longer be edited.`);
      return;
    }
    S.editing = { id: d.id, etag, name: d.name };
    ui.editForm.reset();
    clearErrors('edit');
    setBusy(ui.editSubmit, false);
    setConflict(false);
    fillEdit(d);
    openDialog(ui.editDialog, $('edit-name'));
  } catch (err) {
    report(`Could not open ${label} for editing`, err);
  } finally {
    if (button && button.isConnected) button.disabled = false;
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
    if (S.editing !== editing) return;
    if (d.status === 'revoked') {
      ui.editDialog.close();
      toast(`“${d.name}” has been revoked and can no longer be edited.`);
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
    report('Could not reload the device', err);
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
    if (S.editing === editing) ui.editDialog.close();
    toast(`Saved “${d.name}”.`, 'success');
  } catch (err) {
    if (err && err.handled) return;
    const stillOpen = ui.editDialog.open && S.editing === editing;
    if (err instanceof ApiError && err.status === 412) {
      if (stillOpen) {
        setConflict(true);
        keepDisabled = true;
        ui.editReload.focus();
      } else {
        toast(CONFLICT_MESSAGE);
      }
      return;
    }
    if (err instanceof ApiError && err.status === 409) {
      const message = `“${editing.name}” has been revoked and can no longer be changed.`;
      if (stillOpen) {
        $('edit-error').textContent = message;
        keepDisabled = true;
      }
      toast(message);
      refreshDevice(editing.id);
      return;
    }
    if (stillOpen && showServerFieldError('edit', err)) return;
    if (stillOpen) $('edit-error').textContent = `Could not save the changes: ${describe(err)}`;
    report(`Could not save “${editing.name}”`, err);
  } finally {
    setBusy(ui.editSubmit, false);
    if (keepDisabled) ui.editSubmit.disabled = true;
  }
}

// Re-reads one device and updates its row (errors reported).
async function refreshDevice(id, fallback) {
  try {
    const { data } = await api('GET', devicePath(id));
    updateDevice(deviceFrom(data));
  } catch (err) {
    if (fallback) updateDevice(fallback);
    report('Could not refresh the device', err);
  }
}

// --- rotate / revoke

async function rotateKey(id, button) {
  const d = S.byId.get(id);
  if (!d || !S.admin) return;
  const ok = await confirmAction(
    'Rotate API key',
    `Rotate the API key of “${d.name}”? Its current key stops working at once. The new key is shown only once.`,
    'Rotate key',
  );
  if (!ok) return;
  if (button && button.isConnected) button.disabled = true;
  try {
    const { data } = await api('POST', `${devicePath(id)}/api-key`);
    const device = deviceFrom(data);
    updateDevice(device);
    if (typeof data.apiKey === 'string' && data.apiKey) {
      showKey(data.apiKey, device, 'New API key');
    } else {
      toast(`The key of “${device.name}” was rotated, but the server returned no key. Rotate again to get one.`);
    }
  } catch (err) {
    report(`Could not rotate the key of “${d.name}”`, err);
    if (err instanceof ApiError && (err.status === 409 || err.status === 404)) refreshDevice(id);
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

async function revokeDevice(id, button) {
  const d = S.byId.get(id);
  if (!d || !S.admin) return;
  const ok = await confirmAction(
    'Revoke device',
    `Revoke “${d.name}”? Its key stops working at once. This cannot be undone.`,
    'Revoke',
  );
  if (!ok) return;
  if (button && button.isConnected) button.disabled = true;
  try {
    await api('DELETE', devicePath(id));
    toast(`Revoked “${d.name}”. Its key no longer works.`, 'success');
    await refreshDevice(id, { ...d, status: 'revoked' });
    refocusAfterDialog(id, 'revoke');
  } catch (err) {
    report(`Could not revoke “${d.name}”`, err);
    if (err instanceof ApiError && (err.status === 409 || err.status === 404)) refreshDevice(id);
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

// --- filters

let locationTimer = 0;

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
  if (value === S.location) return;
  S.location = value;
  reload(false);
}

// --- wiring

function bind() {
  // Each id becomes ui.camelCase (e.g. 'key-value' -> ui.keyValue).
  const ids = [
    'session', 'tenant', 'scopes', 'expiry', 'role', 'signout', 'toast', 'signin', 'signin-form',
    'token-input', 'signin-error', 'devices', 'devices-title', 'register-open', 'status-filter',
    'location-filter', 'location-options', 'search', 'table-wrap', 'actions-head',
    'empty-message', 'retry', 'load-more', 'register-dialog', 'register-form', 'reg-submit',
    'edit-dialog', 'edit-form', 'edit-submit', 'edit-id', 'edit-conflict', 'edit-reload',
    'key-dialog', 'key-title', 'key-for', 'key-value', 'key-copy', 'key-done', 'key-copy-status',
    'confirm-dialog', 'confirm-title', 'confirm-message', 'confirm-ok', 'confirm-cancel',
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

  ui.statusFilter.addEventListener('change', () => {
    const v = ui.statusFilter.value;
    S.status = ['active', 'inactive', 'revoked'].includes(v) ? v : '';
    reload(false);
  });
  ui.locationFilter.addEventListener('input', () => {
    clearTimeout(locationTimer);
    locationTimer = setTimeout(applyLocationFilter, 400);
  });
  ui.locationFilter.addEventListener('change', applyLocationFilter);
  ui.locationFilter.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      applyLocationFilter();
    }
  });
  ui.search.addEventListener('input', renderAllRows);
  ui.search.addEventListener('change', renderAllRows);
  ui.loadMore.addEventListener('click', loadMore);
  ui.retry.addEventListener('click', () => reload(false));

  ui.tbody.addEventListener('click', (e) => {
    const button = e.target instanceof Element ? e.target.closest('button') : null;
    if (!button || !ui.tbody.contains(button) || button.disabled || !S.admin) return;
    const row = button.closest('tr');
    const id = row && row.dataset.id;
    if (!id) return;
    if (button.classList.contains('edit')) openEdit(id, button);
    else if (button.classList.contains('rotate')) rotateKey(id, button);
    else if (button.classList.contains('revoke')) revokeDevice(id, button);
  });

  ui.registerOpen.addEventListener('click', openRegister);
  ui.registerForm.addEventListener('submit', onRegister);
  $('reg-cancel').addEventListener('click', () => ui.registerDialog.close());

  ui.editForm.addEventListener('submit', onEdit);
  ui.editReload.addEventListener('click', onEditReload);
  $('edit-cancel').addEventListener('click', () => ui.editDialog.close());
  ui.editDialog.addEventListener('close', () => {
    const editing = S.editing;
    S.editing = null;
    if (editing) refocusAfterDialog(editing.id, 'edit');
  });

  ui.keyCopy.addEventListener('click', () => {
    copyKey().catch((err) => report('Could not copy the key', err));
  });
  ui.keyDone.addEventListener('click', () => ui.keyDialog.close());
  ui.keyDialog.addEventListener('close', () => {
    ui.keyValue.textContent = '';
    ui.keyCopyStatus.textContent = '';
    const selection = window.getSelection();
    if (selection) selection.removeAllRanges();
    const id = ui.keyDialog.dataset.device;
    delete ui.keyDialog.dataset.device;
    if (id && S.rows.has(id)) refocusAfterDialog(id, 'rotate');
  });

  ui.confirmOk.addEventListener('click', () => ui.confirmDialog.close('ok'));
  ui.confirmCancel.addEventListener('click', () => ui.confirmDialog.close('cancel'));
  ui.confirmDialog.addEventListener('close', onConfirmClosed);

  window.addEventListener('hashchange', () => {
    const token = takeFragmentToken();
    if (token) startSession(token);
  });

  window.addEventListener('unhandledrejection', (e) => {
    e.preventDefault();
    toast(`Unexpected error: ${describe(e.reason)}`);
  });

  setInterval(() => {
    if (!S.token) return;
    renderExpiry();
    for (const row of S.rows.values()) {
      const time = row.querySelector('time[data-rel]');
      if (time) time.textContent = relTime(time.dateTime);
    }
  }, 30000);
}

function init() {
  bind();
  const fromFragment = takeFragmentToken();
  const token = fromFragment || storedToken();
  if (token) startSession(token);
  else showSignin('');
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
