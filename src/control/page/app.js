// The servent's web page: talks to the local JSON API with the access token, and shows
// search results as they arrive, downloads, the network state and the shared files.
// Everything a peer sent (file names, user agents, addresses) is put in the page with
// textContent or attributes, never parsed as HTML.
'use strict';

const TOKEN_KEY = 'servent-api-token';
// How often the status, downloads and connections are asked for.
const POLL_MS = 1000;
// A hidden tab still notices a finished download or a stopped servent, just later.
const HIDDEN_POLL_MS = 5000;
// Shares change only on a rescan (every minute in the servent), so they are asked for less often.
const SHARES_POLL_MS = 15000;
// Bounds on what one page keeps and draws: a popular search can bring thousands of groups, and a
// share thousands of files; past these the page says how many more there are.
const MAX_RESULTS_SHOWN = 300;
const MAX_SHARES_SHOWN = 500;
// A search with no result after this long says so (it keeps listening for late answers).
const QUIET_AFTER_MS = 10000;
// One NDJSON line is one result group; a line longer than this is not one we can use.
const MAX_STREAM_LINE = 1 << 20;

const $ = (id) => document.getElementById(id);

// --- small helpers -----------------------------------------------------------------------

/** An element with attributes and children; strings become text nodes (never HTML). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtBytes(n) {
  if (typeof n !== 'number' || !isFinite(n) || n < 0) return '–';
  // Decimal units, as the CLI and the log write them.
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function fmtDuration(s) {
  if (typeof s !== 'number' || !isFinite(s) || s < 0) return '–';
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many || one + 's'}`;
}

// --- errors ------------------------------------------------------------------------------

let errorTimer = null;

/** Shows a message in words; `sticky` ones stay until the next success clears them. */
function showError(msg, sticky) {
  const box = $('error');
  box.replaceChildren(
    el('span', { class: 'grow' }, msg),
    el('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', onclick: clearError }, '×'),
  );
  box.hidden = false;
  box.dataset.sticky = sticky ? 'yes' : 'no';
  clearTimeout(errorTimer);
  if (!sticky) errorTimer = setTimeout(clearError, 10000);
}

function clearError() {
  $('error').hidden = true;
}

function clearStickyError() {
  if ($('error').dataset.sticky === 'yes') clearError();
}

// --- the API -----------------------------------------------------------------------------

class AuthError extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function authHeaders(extra) {
  return Object.assign({ Authorization: `Bearer ${token()}` }, extra || {});
}

/** The error an API answer carries, in words. */
async function errorOf(resp) {
  let msg = '';
  try {
    const body = await resp.json();
    if (body && typeof body.error === 'string') msg = body.error;
  } catch (_) {
    // Not JSON: the status line says enough.
  }
  return new Error(msg || `the servent answered ${resp.status} ${resp.statusText}`.trim());
}

/** fetch with the token; a network failure, a refused token or an error status throws in words. */
async function authedFetch(path, init) {
  // The token this request carries: a refusal of an old one (the servent makes wrong tokens
  // wait for their answer) must not sign out the token pasted since.
  const used = token();
  let resp;
  try {
    resp = await fetch(path, { ...init, cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new Error('Cannot reach the servent. Is it still running?');
  }
  if (resp.status === 401 && token() !== used) {
    const stale = new Error('an answer to a token since replaced');
    stale.name = 'AbortError';
    throw stale;
  }
  if (resp.status === 401) throw new AuthError('The access token was refused.');
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

async function api(method, path, body, signal) {
  const resp = await authedFetch(path, {
    method,
    headers: authHeaders(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** Runs an action a person asked for; failures are shown, a refused token brings the form. */
async function act(what, fn) {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof AuthError) signedOut(e.message);
    else if (e.name !== 'AbortError') showError(`${what}: ${e.message}`);
    return undefined;
  }
}

// --- sign in -----------------------------------------------------------------------------

/** Takes the token from the address (once), keeps it for this tab, and removes it from sight. */
function takeTokenFromUrl() {
  const hash = location.hash.replace(/^#/, '');
  const params = new URLSearchParams(hash);
  const t = params.get('token');
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t.trim());
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  }
}

function signedOut(msg) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  stopSearch(false);
  $('offline').hidden = true;
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-message').textContent = msg || '';
  $('summary').textContent = 'Not signed in';
  clearError();
  $('token-input').focus();
}

function signedIn() {
  $('login').hidden = true;
  $('app').hidden = false;
  startPolling();
}

// --- polling -----------------------------------------------------------------------------

let polling = false;

/**
 * A polling loop around `once`: the next round starts `interval()` ms after one ends, so a slow
 * servent is never asked twice at once; calling it while a round runs asks for one more round
 * right after, instead of starting a second loop.
 */
function poller(once, interval) {
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    clearTimeout(timer);
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await once();
    } finally {
      running = false;
    }
    if (again) {
      again = false;
      run();
    } else if (polling) {
      timer = setTimeout(run, interval());
    }
  };
  run.stop = () => clearTimeout(timer);
  return run;
}

// A tab nobody looks at asks less often.
const poll = poller(pollOnce, () => (document.hidden ? HIDDEN_POLL_MS : POLL_MS));
const pollShares = poller(sharesOnce, () => SHARES_POLL_MS);

function startPolling() {
  polling = true;
  poll();
  pollShares();
}

function stopPolling() {
  polling = false;
  poll.stop();
  pollShares.stop();
}

async function pollOnce() {
  try {
    const [status, downloads, connections, uploads, settings] = await Promise.all([
      api('GET', '/api/status'),
      api('GET', '/api/downloads'),
      api('GET', '/api/connections'),
      api('GET', '/api/uploads'),
      api('GET', '/api/settings'),
    ]);
    renderSettings(settings);
    renderConnections(connections);
    renderUploads(uploads);
    renderStatus(status);
    renderDownloads(downloads);
    clearStickyError();
  } catch (e) {
    if (e.name === 'AbortError') return;
    if (e instanceof AuthError) {
      signedOut(e.message);
      return;
    }
    showError(e.message, true);
    $('summary').textContent = 'Not connected to the servent';
  }
}

async function sharesOnce() {
  try {
    renderShares(await api('GET', '/api/shares'));
  } catch (e) {
    if (e.name === 'AbortError') return;
    if (e instanceof AuthError) {
      signedOut(e.message);
      return;
    }
    // pollOnce() reports the servent being away; a shares error of its own is worth saying.
    $('shares-summary').textContent = `Could not list the shared files: ${e.message}`;
  }
}

// --- status and connections --------------------------------------------------------------

function renderStatus(s) {
  const fw = s.firewalled || {};
  const role = s.role || '–';
  $('status-role').textContent = role;
  const reach = $('status-firewall');
  reach.replaceChildren(
    el('span', { class: fw.firewalled ? 'badge warn' : 'badge ok' }, fw.firewalled ? 'Firewalled' : 'Reachable'),
    fw.reason ? el('span', { class: 'muted' }, ` ${fw.reason}`) : null,
    fw.reached_by ? el('span', { class: 'muted' }, ` (from ${fw.reached_by})`) : null,
    fw.external ? el('span', { class: 'muted' }, `; peers see us at ${fw.external} (${plural(fw.external_votes || 0, 'peer')})`) : null,
  );
  $('status-listen').textContent = s.listen || '–';
  $('status-uptime').textContent = fmtDuration(s.uptime_secs);
  const t = s.transfers || {};
  $('status-transfers').textContent =
    `${plural(t.downloads_active || 0, 'download')}, ${plural(t.uploads_active || 0, 'upload')} running; ` +
    `${fmtBytes(t.bytes_uploaded || 0)} sent (${fmtBytes(t.bytes_uploaded_partial || 0)} from files still downloading), ` +
    `${fmtBytes(t.bytes_downloaded || 0)} received`;
  const rate = (bps) => (bps ? `${fmtBytes(bps)}/s` : 'no limit');
  $('limits-now').textContent = `now: up ${rate(t.upload_limit_bps)}, down ${rate(t.download_limit_bps)}`;
  $('status-version').textContent = s.version || '–';
  $('status-guid').textContent = s.servent_guid || '–';

  const rep = s.reputation;
  $('reputation').hidden = !rep;
  if (rep) {
    const score = $('reputation-score');
    score.textContent = `${rep.score} / ${rep.threshold}`;
    score.className = rep.eligible || rep.score >= rep.threshold ? 'badge ok' : 'badge';
    score.title = 'score, and the score needed to become an ultrapeer';
    $('reputation-summary').textContent = [rep.summary, rep.needed ? `Needed: ${rep.needed}` : '']
      .filter(Boolean)
      .join(' ');
    $('reputation-parts').replaceChildren(
      ...(rep.parts || []).map((p) => {
        const max = typeof p.max === 'number' && p.max > 0 ? p.max : null;
        return el('li', { 'data-part': p.name },
          el('span', { class: 'part-name' }, p.name),
          el('span', { class: 'part-value' }, max ? `${p.value} / ${max}` : String(p.value)),
          max ? el('meter', { min: 0, max, value: Math.min(p.value, max) }) : null,
          p.detail ? el('span', { class: 'muted part-detail' }, p.detail) : null);
      }),
    );
  }

  // The routing counters, whatever the servent counts: "queries_forwarded" → "queries forwarded".
  const stats = s.stats && typeof s.stats === 'object' ? Object.entries(s.stats) : [];
  $('counters').hidden = stats.length === 0;
  $('counter-list').replaceChildren(
    ...stats.flatMap(([k, v]) => [el('dt', {}, k.replace(/_/g, ' ')), el('dd', {}, String(v))]),
  );

  const shares = s.shares || {};
  const conns = $('connections-count').textContent;
  $('summary').textContent =
    `${role} · ${fw.firewalled ? 'firewalled' : 'reachable'} · ${plural(Number(conns) || 0, 'connection')} · ` +
    `${plural(shares.files || 0, 'file')} shared (${fmtBytes(shares.bytes || 0)}) · up ${fmtDuration(s.uptime_secs)}`;
}

/** The settings in effect that the network section does not already show. */
function renderSettings(st) {
  st = st || {};
  $('settings-slots').textContent = typeof st.upload_slots === 'number' ? String(st.upload_slots) : '–';
  $('settings-partial').textContent = st.share_partial === false
    ? 'not offered while downloading (--no-share-partial)'
    : 'offered to others while downloading';
}

function renderConnections(list) {
  list = Array.isArray(list) ? list : [];
  // Said once the page has heard from the servent: before that, nothing is known.
  $('offline').hidden = list.length > 0;
  $('connections-count').textContent = String(list.length);
  $('connections-empty').hidden = list.length > 0;
  $('connections').replaceChildren(
    ...list.map((c) => {
      const fill = typeof c.queue_fill === 'number' ? c.queue_fill : 0;
      // queue_fill is a fraction of the output queue; shown as a percentage.
      const pct = Math.round((fill <= 1 ? fill * 100 : fill));
      return el('div', { class: 'row conn-row', role: 'listitem', 'data-id': c.id },
        el('div', { class: 'row-main' },
          el('span', { class: 'mono' }, c.peer || '?'),
          el('span', { class: 'badge' }, c.role || '?'),
          el('span', { class: 'muted' }, c.outbound ? 'we dialled' : 'dialled us'),
          c.compressed ? el('span', { class: 'muted' }, 'deflate') : null),
        el('div', { class: 'row-sub muted' },
          el('span', { class: 'ua', title: c.user_agent || '' }, c.user_agent || 'unknown servent'),
          el('span', {}, `↓ ${fmtBytes(c.bytes_in)} ↑ ${fmtBytes(c.bytes_out)}`),
          el('span', {}, `queue ${pct}%`),
          el('span', {}, fmtDuration(c.connected_secs))));
    }),
  );
}

// --- uploads -----------------------------------------------------------------------------

const SLOT_WHY = {
  reciprocal: 'unchoked: gives us most',
  seed: 'unchoked: takes fastest',
  optimistic: 'unchoked: optimistic',
};

function renderUploads(u) {
  u = u || {};
  const ups = Array.isArray(u.uploads) ? u.uploads : [];
  const peers = Array.isArray(u.peers) ? u.peers : [];
  $('uploads-policy').textContent = u.policy || '';
  $('uploads-summary').textContent =
    `${u.slots_in_use || 0} of ${u.slots || 0} slots in use, ${u.waiting || 0} waiting for one, ` +
    `${plural(u.queued || 0, 'downloader')} in the queue`;
  $('upload-list').replaceChildren(
    ...ups.map((x) => el('div', { class: 'row', role: 'listitem' },
      el('div', { class: 'row-main' },
        el('span', {}, x.name || '?'),
        el('span', { class: 'badge' }, x.active ? 'sending' : (x.complete ? 'complete' : 'partial'))),
      el('div', { class: 'row-sub muted' },
        el('span', { class: 'mono' }, x.peer || '?'),
        el('span', {}, `${fmtBytes(x.bytes)} of ${fmtBytes(x.size)}`),
        el('span', {}, plural(x.requests || 0, 'request'))))),
  );
  $('upload-peers-empty').hidden = peers.length > 0;
  $('upload-peers').replaceChildren(
    ...peers.map((p) => el('div', { class: 'row upload-peer', role: 'listitem' },
      el('div', { class: 'row-main' },
        el('span', { class: 'mono' }, p.peer || '?'),
        el('span', { class: 'badge' }, p.choked ? 'choked' : (SLOT_WHY[p.reason] || 'unchoked')),
        p.position ? el('span', { class: 'muted' }, `place ${p.position} in the queue`) : null),
      el('div', { class: 'row-sub muted' },
        el('span', {}, `gives us ${fmtBytes(p.rate_in)}/s, takes ${fmtBytes(p.rate_out)}/s`),
        el('span', {}, `given ${fmtBytes(p.bytes_in)}, taken ${fmtBytes(p.bytes_out)}`)))),
  );
}

// --- shares ------------------------------------------------------------------------------

function renderShares(sh) {
  const files = Array.isArray(sh && sh.files) ? sh.files.slice() : [];
  const folders = Array.isArray(sh && sh.folders) ? sh.folders : [];
  const total = files.reduce((a, f) => a + (f.size || 0), 0);
  const h = sh && sh.hashing;
  $('shares-summary').textContent = `${plural(files.length, 'file')}, ${fmtBytes(total)}` + (h
    ? `; hashing ${Math.min((h.files_done || 0) + 1, h.files_total || 0)} of ${plural(h.files_total || 0, 'file')}, ` +
      `${fmtBytes(h.bytes_left || 0)} left`
    : '');
  $('share-folders').replaceChildren(...folders.map((f) => el('li', { class: 'mono' }, String(f))));
  $('shares-empty').hidden = files.length > 0;
  files.sort((a, b) => String(a.name).localeCompare(String(b.name)));
  const rows = files.slice(0, MAX_SHARES_SHOWN).map((f) =>
    el('div', { class: 'row share-row', role: 'listitem', 'data-urn': f.urn },
      el('span', { class: 'name grow', title: f.urn || '' }, f.name),
      el('span', { class: 'muted nowrap' }, fmtBytes(f.size))));
  if (files.length > MAX_SHARES_SHOWN) {
    rows.push(el('p', { class: 'muted' }, `and ${files.length - MAX_SHARES_SHOWN} more`));
  }
  $('share-list').replaceChildren(...rows);
}

async function rescan() {
  const b = $('rescan-button');
  b.disabled = true;
  b.textContent = 'Rescanning…';
  await act('Rescan failed', async () => {
    await api('POST', '/api/shares/rescan', {});
    await sharesOnce();
  });
  b.disabled = false;
  b.textContent = 'Rescan';
}

// --- search ------------------------------------------------------------------------------

/** The running search: {id, query, ctrl, groups: Map(urn → group), done, error}. */
let search = null;

/** Stops the search and takes its results off the page. */
function clearSearch() {
  stopSearch(false);
  $('results').replaceChildren();
  resultRows.clear();
  drawResults();
}

/** Stops the running search; with `keep`, its results stay on the page. */
function stopSearch(keep) {
  if (!search) return;
  const s = search;
  if (!keep) search = null;
  s.stopped = true;
  s.ctrl.abort();
  if (s.id !== null && token()) {
    // The servent forgets the search; nobody waits for the answer, and keepalive lets the
    // request go out even when the page is being closed.
    fetch(`/api/searches/${encodeURIComponent(s.id)}`, { method: 'DELETE', headers: authHeaders(), keepalive: true })
      .catch(() => {});
  }
  if (keep) drawResults();
}

async function startSearch(query) {
  stopSearch(false);
  const s = { id: null, query, ctrl: new AbortController(), groups: new Map(), done: false, stopped: false, error: null, started: Date.now() };
  search = s;
  // A search with no answer keeps listening, silently: say so once it has been quiet a while.
  setTimeout(() => { if (search === s) drawResults(); }, QUIET_AFTER_MS + 50);
  $('results').replaceChildren();
  drawResults();
  try {
    const made = await api('POST', '/api/searches', { query }, s.ctrl.signal);
    s.id = made.id;
    if (search !== s || s.stopped) {
      api('DELETE', `/api/searches/${encodeURIComponent(s.id)}`).catch(() => {});
      return;
    }
    await readStream(s);
    s.done = true;
  } catch (e) {
    if (e.name === 'AbortError') return;
    if (e instanceof AuthError) {
      signedOut(e.message);
      return;
    }
    s.error = e.message;
  }
  if (search === s) drawResults();
}

/** Reads the NDJSON stream of result groups; fetch, because EventSource cannot send the token. */
async function readStream(s) {
  const resp = await authedFetch(`/api/searches/${encodeURIComponent(s.id)}/stream`, {
    headers: authHeaders({ Accept: 'application/x-ndjson' }),
    signal: s.ctrl.signal,
  });
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) takeLine(s, line);
    }
    if (buf.length > MAX_STREAM_LINE) throw new Error('the servent sent a result line too long to use');
  }
  if (buf.trim()) takeLine(s, buf.trim());
}

function takeLine(s, line) {
  let g;
  try {
    g = JSON.parse(line);
  } catch (_) {
    return; // A broken line costs one result, not the search.
  }
  if (g && typeof g.error === 'string') {
    s.error = g.error;
  } else if (g && typeof g.urn === 'string') {
    s.groups.set(g.urn, g);
  }
  scheduleDraw();
}

let drawPending = false;

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    drawResults();
  });
}

const resultRows = new Map(); // urn → row element, reused so buttons keep their state

function sourceCount(g) {
  return Array.isArray(g.sources) ? g.sources.length : 0;
}

function drawResults() {
  const s = search;
  const status = $('search-status');
  if (!s) {
    $('search-stop').hidden = true;
    $('search-clear').hidden = true;
    status.dataset.state = '';
    status.textContent = 'Type a few words of a file name and press Search, or paste a magnet link to download it.';
    return;
  }
  const groups = [...s.groups.values()].sort(
    (a, b) => sourceCount(b) - sourceCount(a) || String(a.name).localeCompare(String(b.name)),
  );
  const n = groups.length;
  const running = !s.done && !s.stopped && !s.error;
  $('search-stop').hidden = !running;
  $('search-clear').hidden = false;
  const quiet = running && n === 0 && Date.now() - s.started >= QUIET_AFTER_MS;
  if (quiet) {
    status.textContent = `No results yet for “${s.query}”. The search keeps listening for late answers; ` +
      'try fewer or other words, or check that you are connected.';
    status.dataset.state = 'empty';
  } else if (s.error) status.textContent = `Search for “${s.query}” failed: ${s.error}`;
  else if (s.stopped) status.textContent = `Search for “${s.query}” stopped: ${plural(n, 'file')} found`;
  else if (!s.done) status.textContent = n ? `Searching for “${s.query}”… ${plural(n, 'file')} so far` : `Searching for “${s.query}”…`;
  else status.textContent = n ? `${plural(n, 'file')} found for “${s.query}”` : `No files found for “${s.query}”. Try fewer or other words.`;
  if (!quiet) status.dataset.state = s.error ? 'error' : running ? 'running' : n ? 'done' : 'empty';

  const keep = new Set();
  const rows = groups.slice(0, MAX_RESULTS_SHOWN).map((g) => {
    keep.add(g.urn);
    let row = resultRows.get(g.urn);
    if (!row) {
      row = resultRow(g);
      resultRows.set(g.urn, row);
    }
    updateResultRow(row, g);
    return row;
  });
  for (const urn of resultRows.keys()) if (!keep.has(urn)) resultRows.delete(urn);
  if (n > MAX_RESULTS_SHOWN) rows.push(el('p', { class: 'muted' }, `and ${n - MAX_RESULTS_SHOWN} more; add words to narrow the search`));
  $('results').replaceChildren(...rows);
  markResultButtons();
}

function resultRow(g) {
  const button = el('button', { type: 'button', class: 'download-button', 'data-urn': g.urn }, 'Download');
  button.addEventListener('click', () => download(g.urn, button));
  return el('div', { class: 'row result-row', role: 'listitem', 'data-urn': g.urn },
    el('div', { class: 'row-main' }, el('span', { class: 'name' }), el('span', { class: 'sources badge' })),
    el('div', { class: 'row-sub muted' }, el('span', { class: 'size' }), el('span', { class: 'push' }), el('span', { class: 'urn mono' })),
    button);
}

function updateResultRow(row, g) {
  const name = row.querySelector('.name');
  name.textContent = g.name || '(no name)';
  name.title = g.name || '';
  const n = sourceCount(g);
  row.dataset.sources = String(n);
  row.querySelector('.sources').textContent = plural(n, 'source');
  row.querySelector('.size').textContent = fmtBytes(g.size);
  const pushed = (g.sources || []).filter((x) => x.push).length;
  row.querySelector('.push').textContent = pushed ? `${pushed} firewalled` : '';
  row.querySelector('.urn').textContent = g.urn.replace(/^urn:sha1:/i, 'sha1 ').slice(0, 17) + '…';
  row.querySelector('.urn').title = g.urn;
}

async function download(urn, button) {
  button.disabled = true;
  button.textContent = 'Starting…';
  const body = search && search.id !== null ? { search: search.id, urn } : { urn };
  const made = await act('The download could not start', () => api('POST', '/api/downloads', body));
  if (made === undefined) {
    button.disabled = false;
    button.textContent = 'Download';
    return;
  }
  button.textContent = 'Queued';
  poll();
}

/** A pasted magnet link downloads at once: the servent finds the sources by its SHA-1. */
async function downloadMagnet(magnet) {
  const made = await act('The magnet link could not be downloaded', () => api('POST', '/api/downloads', { magnet }));
  if (made === undefined) return;
  $('search-input').value = '';
  $('search-status').textContent = 'Downloading the magnet link: it is listed under Downloads.';
  poll();
}

/** Result buttons say when their file is already being downloaded. */
let downloadsByUrn = new Map();

function markResultButtons() {
  for (const [urn, row] of resultRows) {
    const b = row.querySelector('.download-button');
    const d = downloadsByUrn.get(urn);
    if (d) {
      b.disabled = true;
      b.textContent = isDone(d) ? 'Downloaded' : 'In downloads';
    } else if (b.textContent !== 'Starting…') {
      b.disabled = false;
      b.textContent = 'Download';
    }
  }
}

// --- downloads ---------------------------------------------------------------------------

// The API's download states; a label says each in words.
const STATE_LABELS = {
  searching: 'finding sources',
  downloading: 'downloading',
  paused: 'paused',
  done: 'done',
  failed: 'failed',
  cancelled: 'cancelled',
};

function isDone(d) {
  return d.state === 'done';
}

function isFailed(d) {
  return d.state === 'failed' || d.state === 'cancelled';
}

function isPaused(d) {
  return d.state === 'paused';
}

const downloadRows = new Map(); // id → row element

function renderDownloads(list) {
  list = Array.isArray(list) ? list : [];
  downloadsByUrn = new Map(list.map((d) => [d.urn, d]));
  $('downloads-empty').hidden = list.length > 0;
  $('downloads-clear').hidden = !list.some((d) => isDone(d) || isFailed(d));
  const keep = new Set();
  const rows = list.map((d) => {
    const id = String(d.id);
    keep.add(id);
    let row = downloadRows.get(id);
    if (!row) {
      row = downloadRow(d);
      downloadRows.set(id, row);
    }
    updateDownloadRow(row, d);
    return row;
  });
  for (const id of downloadRows.keys()) if (!keep.has(id)) downloadRows.delete(id);
  $('download-list').replaceChildren(...rows);
  markResultButtons();
}

function downloadRow(d) {
  const id = encodeURIComponent(d.id);
  const pause = el('button', { type: 'button', class: 'secondary pause-button' }, 'Pause');
  const resume = el('button', { type: 'button', class: 'secondary resume-button' }, 'Resume');
  const cancel = el('button', { type: 'button', class: 'secondary cancel-button' }, 'Cancel');
  const clear = el('button', { type: 'button', class: 'secondary clear-button' }, 'Clear');
  // Cancelling deletes what was downloaded: asked once more, in the row.
  const sure = el('button', { type: 'button', class: 'danger confirm-cancel' }, 'Cancel and delete the partial file');
  const keep = el('button', { type: 'button', class: 'secondary keep-button' }, 'Keep it');
  const confirm = el('div', { class: 'confirm', hidden: '' },
    el('span', { class: 'confirm-text' }, ''), sure, keep);
  pause.addEventListener('click', () => act('Pause failed', () => api('POST', `/api/downloads/${id}/pause`, {}).then(poll)));
  resume.addEventListener('click', () => act('Resume failed', () => api('POST', `/api/downloads/${id}/resume`, {}).then(poll)));
  cancel.addEventListener('click', () => {
    const d = downloadsByUrn.get(row.dataset.urn) || {};
    confirm.querySelector('.confirm-text').textContent =
      `Cancel ${d.name || 'this download'}? The ${fmtBytes(d.bytes || 0)} downloaded so far are deleted. `;
    confirm.hidden = false;
  });
  keep.addEventListener('click', () => { confirm.hidden = true; });
  sure.addEventListener('click', () => {
    confirm.hidden = true;
    act('Cancel failed', () => api('DELETE', `/api/downloads/${id}`).then(poll));
  });
  // On a finished download, DELETE clears it from the list; a done file stays.
  clear.addEventListener('click', () => act('Clear failed', () => api('DELETE', `/api/downloads/${id}`).then(poll)));
  const row = el('div', { class: 'row download-row', role: 'listitem', 'data-id': d.id, 'data-urn': d.urn },
    el('div', { class: 'row-main' }, el('span', { class: 'name' }), el('span', { class: 'state badge' })),
    el('div', { class: 'progress-line' },
      el('progress', { max: 1, value: 0 }),
      el('span', { class: 'percent' })),
    el('div', { class: 'row-sub muted' },
      el('span', { class: 'bytes' }), el('span', { class: 'rate' }), el('span', { class: 'eta' }), el('span', { class: 'nsources' })),
    el('div', { class: 'chunk-map', role: 'img' }),
    el('details', { class: 'swarm' },
      el('summary', { class: 'swarm-summary' }),
      el('ul', { class: 'swarm-list' })),
    el('p', { class: 'detail muted' }),
    el('div', { class: 'actions' }, pause, resume, cancel, clear),
    confirm);
  return row;
}

// The chunk map's cells: '#' held, '>' in flight, '.' missing.
const CHUNK_CLASS = { '#': 'held', '>': 'flight', '.': 'missing' };

/** The chunk map as a bar of cells, and the sources in use with what each gave. */
function updateSwarm(row, d, running) {
  const map = row.querySelector('.chunk-map');
  const chunks = typeof d.chunks === 'string' ? d.chunks : '';
  map.hidden = !running || !chunks;
  if (map.dataset.chunks !== chunks) {
    map.dataset.chunks = chunks;
    map.replaceChildren(...[...chunks].map((c) => el('span', { class: CHUNK_CLASS[c] || 'missing' })));
  }
  const count = (ch) => [...chunks].filter((c) => c === ch).length;
  const label = `Chunk map: ${count('#')} of ${chunks.length} parts held, ${count('>')} in flight, ${count('.')} missing; ` +
    `${fmtBytes(d.verified || 0)} checked against the Tiger tree, ${fmtBytes(d.from_partial || 0)} from other downloaders`;
  map.setAttribute('aria-label', label);
  map.title = label;
  const swarm = Array.isArray(d.swarm) ? d.swarm : [];
  const details = row.querySelector('.swarm');
  details.hidden = !running || swarm.length === 0;
  const partial = swarm.filter((s) => s.partial).length;
  const mesh = swarm.filter((s) => s.from_mesh).length;
  row.querySelector('.swarm-summary').textContent =
    `${plural(swarm.length, 'source')} in use: ${partial} partial, ${mesh} from the download mesh`;
  row.querySelector('.swarm-list').replaceChildren(...swarm.map((s) => el('li', { class: 'swarm-source' },
    el('span', { class: 'mono' }, String(s.addr)),
    ` ${fmtBytes(s.bytes)}`,
    s.partial ? el('span', { class: 'badge' }, 'partial') : null,
    s.from_mesh ? el('span', { class: 'badge' }, 'mesh') : null,
    s.state && s.state !== 'active' && s.state !== 'idle' ? el('span', { class: 'muted' }, ` ${s.state}`) : null)));
}

function updateDownloadRow(row, d) {
  const size = typeof d.size === 'number' ? d.size : 0;
  const bytes = typeof d.bytes === 'number' ? d.bytes : 0;
  const done = isDone(d);
  const failed = isFailed(d);
  const paused = isPaused(d);
  const pct = done ? 100 : size > 0 ? Math.min(100, Math.floor((bytes * 100) / size)) : 0;
  row.dataset.state = String(d.state);
  row.dataset.percent = String(pct);
  const name = row.querySelector('.name');
  name.textContent = d.name || d.urn;
  name.title = d.name || '';
  const state = row.querySelector('.state');
  state.textContent = STATE_LABELS[d.state] || String(d.state || '?');
  state.className = `state badge ${done ? 'ok' : failed ? 'bad' : paused ? 'warn' : ''}`;
  const bar = row.querySelector('progress');
  bar.max = size > 0 ? size : 1;
  bar.value = done ? bar.max : Math.min(bytes, bar.max);
  bar.textContent = `${pct}%`;
  row.querySelector('.percent').textContent = `${pct}%`;
  row.querySelector('.bytes').textContent = `${fmtBytes(bytes)} of ${fmtBytes(size)}`;
  const running = !done && !failed && !paused;
  row.querySelector('.rate').textContent = running && d.rate_bps ? `${fmtBytes(d.rate_bps)}/s` : '';
  row.querySelector('.eta').textContent = running && typeof d.eta_secs === 'number' ? `${fmtDuration(d.eta_secs)} left` : '';
  const ns = typeof d.sources === 'number' ? d.sources : Array.isArray(d.sources) ? d.sources.length : null;
  row.querySelector('.nsources').textContent = ns === null || done ? '' : plural(ns, 'source');
  const detail = row.querySelector('.detail');
  detail.textContent = d.error ? `Error: ${d.error}` : done && d.path ? `Saved as ${d.path}` : '';
  detail.className = d.error ? 'detail bad-text' : 'detail muted';
  detail.hidden = !detail.textContent;
  updateSwarm(row, d, running);
  row.querySelector('.pause-button').hidden = !running;
  // The API resumes paused and failed downloads, and cancels any that is not done.
  row.querySelector('.resume-button').hidden = !(paused || d.state === 'failed');
  const finished = done || failed;
  row.querySelector('.cancel-button').hidden = finished;
  row.querySelector('.clear-button').hidden = !finished;
  if (finished) row.querySelector('.confirm').hidden = true;
}

// --- start -------------------------------------------------------------------------------

/** The rate limits form: "512K", "4M" or "off"; an empty field leaves that limit alone. */
async function setLimits(ev) {
  ev.preventDefault();
  const body = {};
  const up = $('upload-limit').value.trim();
  const down = $('download-limit').value.trim();
  const slots = $('upload-slots').value.trim();
  if (up) body.upload_limit = up;
  if (down) body.download_limit = down;
  if (slots) {
    const n = Number(slots);
    if (!Number.isInteger(n) || n < 1) {
      showError(`Upload slots: ${slots} is not a whole number of 1 or more`);
      return;
    }
    body.upload_slots = n;
  }
  if (!up && !down && !slots) return;
  const now = await act('The limits could not be changed', () => api('PATCH', '/api/settings', body));
  if (now) {
    $('upload-limit').value = '';
    $('download-limit').value = '';
    $('upload-slots').value = '';
    renderSettings(now);
    $('limits-now').textContent = `now: up ${now.upload_limit}, down ${now.download_limit}`;
    poll();
  }
}

function init() {
  takeTokenFromUrl();
  $('limits-form').addEventListener('submit', setLimits);
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token-input').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $('token-input').value = '';
    signedIn();
  });
  $('search-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = $('search-input').value.trim();
    if (/^magnet:\?/i.test(q)) downloadMagnet(q);
    else if (q) startSearch(q);
  });
  $('search-stop').addEventListener('click', () => stopSearch(true));
  $('search-clear').addEventListener('click', clearSearch);
  $('downloads-clear').addEventListener('click', () =>
    act('Clear failed', () => api('POST', '/api/downloads/clear', {}).then(poll)));
  $('rescan-button').addEventListener('click', rescan);
  window.addEventListener('pagehide', () => stopSearch(false));
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && polling) poll();
  });
  if (token()) signedIn();
  else signedOut('');
}

init();
