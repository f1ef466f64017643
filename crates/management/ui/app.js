// Warren's management UI: pages over the management API, in the spirit of
// RabbitMQ's (an overview with live rates, tables of queues, exchanges,
// connections, channels and users, a queue page), and what RabbitMQ's UI
// lacks: a topology graph and a route explainer. Preact with htm, and
// uPlot for the charts, vendored in ./vendor (no build step, no network).
import { html, render, useState, useEffect, useRef } from './vendor/preact-htm.mjs';

const AUTH_KEY = 'warren-auth';
const POLL_MS = 2000;

// --- the API --------------------------------------------------------------

class Unauthorised extends Error {}

async function api(path, { method = 'GET', body } = {}) {
  // X-Requested-With: a refused login must not make the browser show its
  // own login prompt.
  const headers = { Authorization: 'Basic ' + sessionStorage.getItem(AUTH_KEY), 'X-Requested-With': 'XMLHttpRequest' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204 || response.status === 201) return null;
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 && path === '/api/whoami') throw new Unauthorised(data.reason || 'Login failed');
  if (!response.ok) throw new Error(data.reason || data.error || response.statusText);
  return data;
}

const seg = (s) => encodeURIComponent(s);
const rate = (stats, name) => (stats && stats[name + '_details'] ? stats[name + '_details'].rate : 0);
const fmtRate = (r) => (r >= 100 ? Math.round(r).toString() : r.toFixed(1)) + '/s';
const fmtBytes = (n) => (n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + ' GiB' : (n / (1 << 20)).toFixed(0) + ' MiB');

// Polls `path` every POLL_MS while the page shows; [data, error, refresh].
function usePoll(path, ms = POLL_MS) {
  const [state, setState] = useState({ data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    const load = () => api(path).then(
      (data) => live && setState({ data, error: null }),
      (e) => live && setState((s) => ({ data: s.data, error: e.message })),
    );
    load();
    const timer = setInterval(load, ms);
    return () => { live = false; clearInterval(timer); };
  }, [path, tick]);
  return [state.data, state.error, () => setTick((t) => t + 1)];
}

// --- routing: #/page/arg/arg ----------------------------------------------

function useRoute() {
  const parse = () => location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const [route, setRoute] = useState(parse());
  useEffect(() => {
    const on = () => setRoute(parse());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

const PAGES = [
  ['', 'Overview'], ['queues', 'Queues'], ['exchanges', 'Exchanges'], ['connections', 'Connections'],
  ['channels', 'Channels'], ['users', 'Users'], ['topology', 'Topology'], ['explain', 'Route explainer'],
];

// --- login ----------------------------------------------------------------

function Login({ onLogin }) {
  const [error, setError] = useState(null);
  const submit = async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      // Basic credentials are UTF-8, base64-encoded.
      const utf8 = new TextEncoder().encode(form.username.value + ':' + form.password.value);
      sessionStorage.setItem(AUTH_KEY, btoa(String.fromCharCode(...utf8)));
      onLogin(await api('/api/whoami'));
    } catch (e) {
      sessionStorage.removeItem(AUTH_KEY);
      setError(e.message);
    }
  };
  return html`<form class="login" id="login" onSubmit=${submit}>
    <h1>Warren</h1>
    <label>Username <input name="username" id="username" autocomplete="username" /></label>
    <label>Password <input name="password" id="password" type="password" autocomplete="current-password" /></label>
    <button type="submit" id="login-button">Log in</button>
    ${error && html`<div class="error">${error}</div>`}
  </form>`;
}

// --- overview ---------------------------------------------------------------

// A live chart of `series` ([label, colour]) fed one point per poll.
function Chart({ id, series, point }) {
  const box = useRef(null);
  const chart = useRef(null);
  const data = useRef([[], ...series.map(() => [])]);
  useEffect(() => {
    const opts = {
      width: Math.min(box.current.clientWidth || 640, 900), height: 200,
      series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2 }))],
      axes: [{}, { size: 60 }],
    };
    chart.current = new uPlot(opts, data.current, box.current);
    return () => chart.current.destroy();
  }, []);
  useEffect(() => {
    if (!point) return;
    const d = data.current;
    d[0].push(Date.now() / 1000);
    point.forEach((v, i) => d[i + 1].push(v));
    if (d[0].length > 300) d.forEach((column) => column.shift());
    chart.current && chart.current.setData(d);
  }, [point]);
  return html`<div id=${id} ref=${box}></div>`;
}

function Overview() {
  const [overview, error] = usePoll('/api/overview');
  const [nodes] = usePoll('/api/nodes', 5000);
  if (!overview) return html`<p>${error || 'Loading…'}</p>`;
  const totals = overview.queue_totals || {};
  const objects = overview.object_totals || {};
  const stats = overview.message_stats || {};
  const node = nodes && nodes[0];
  const ratePoint = [rate(stats, 'publish'), rate(stats, 'deliver_get'), rate(stats, 'ack')];
  const queuedPoint = [totals.messages_ready || 0, totals.messages_unacknowledged || 0];
  return html`<h1>Overview</h1>
    <div class="cards">
      <div class="card"><div class="n" id="total-messages">${totals.messages}</div><div class="l">messages queued</div></div>
      <div class="card"><div class="n">${totals.messages_ready}</div><div class="l">ready</div></div>
      <div class="card"><div class="n">${totals.messages_unacknowledged}</div><div class="l">unacked</div></div>
      <div class="card"><div class="n">${objects.connections}</div><div class="l">connections</div></div>
      <div class="card"><div class="n">${objects.channels}</div><div class="l">channels</div></div>
      <div class="card"><div class="n">${objects.queues}</div><div class="l">queues</div></div>
      <div class="card"><div class="n">${objects.consumers}</div><div class="l">consumers</div></div>
      ${node && html`<div class="card"><div class="n">${fmtBytes(node.mem_used)}</div>
        <div class="l">memory of ${fmtBytes(node.mem_limit)} ${node.mem_alarm ? html`<span class="alarm">alarm</span>` : ''}</div></div>
        <div class="card"><div class="n">${fmtBytes(node.disk_free)}</div>
        <div class="l">disk free ${node.disk_free_alarm ? html`<span class="alarm">alarm</span>` : ''}</div></div>`}
    </div>
    <div class="panel"><h2>Message rates</h2>
      <${Chart} id="rates-chart" series=${[['publish', '#2f6fb3'], ['deliver / get', '#2e7d32'], ['ack', '#b26a00']]} point=${ratePoint} />
    </div>
    <div class="panel"><h2>Queued messages</h2>
      <${Chart} id="queued-chart" series=${[['ready', '#2f6fb3'], ['unacked', '#b3261e']]} point=${queuedPoint} />
    </div>
    <p class="miss">${overview.product_name} ${overview.product_version} on ${overview.node}</p>`;
}

// --- tables -----------------------------------------------------------------

// A table of `rows`, with `columns` [heading, cell(row), numeric?].
function Table({ id, rows, columns, empty }) {
  if (!rows.length) return html`<p class="miss">${empty}</p>`;
  return html`<table id=${id}>
    <thead><tr>${columns.map(([h, , num]) => html`<th class=${num ? 'num' : ''}>${h}</th>`)}</tr></thead>
    <tbody>${rows.map((row) => html`<tr>${columns.map(([, cell, num]) => html`<td class=${num ? 'num' : ''}>${cell(row)}</td>`)}</tr>`)}</tbody>
  </table>`;
}

function Listing({ title, path, id, columns, empty }) {
  const [rows, error] = usePoll(path);
  return html`<h1>${title}</h1>
    ${error && html`<div class="error">${error}</div>`}
    ${rows ? html`<${Table} id=${id} rows=${rows} columns=${columns} empty=${empty} />` : !error && html`<p>Loading…</p>`}`;
}

const queueLink = (q) => html`<a href=${'#/queue/' + seg(q.vhost) + '/' + seg(q.name)} data-queue=${q.name}>${q.name}</a>`;

const Queues = () => html`<${Listing} title="Queues" path="/api/queues" id="queues" empty="No queues."
  columns=${[
    ['Name', queueLink], ['Virtual host', (q) => q.vhost], ['Type', (q) => q.type],
    ['Ready', (q) => q.messages_ready, true], ['Unacked', (q) => q.messages_unacknowledged, true],
    ['Total', (q) => html`<span class="total">${q.messages}</span>`, true], ['Consumers', (q) => q.consumers, true],
    ['In', (q) => fmtRate(rate(q.message_stats, 'publish')), true],
    ['Out', (q) => fmtRate(rate(q.message_stats, 'deliver_get')), true],
    ['Ack', (q) => fmtRate(rate(q.message_stats, 'ack')), true],
  ]} />`;

const Exchanges = () => html`<${Listing} title="Exchanges" path="/api/exchanges" id="exchanges" empty="No exchanges."
  columns=${[
    ['Name', (x) => x.name || '(default)'], ['Virtual host', (x) => x.vhost], ['Type', (x) => x.type],
    ['Durable', (x) => (x.durable ? 'yes' : 'no')], ['Internal', (x) => (x.internal ? 'yes' : 'no')],
    ['Alternate exchange', (x) => (x.arguments || {})['alternate-exchange'] || ''],
  ]} />`;

const Connections = () => html`<${Listing} title="Connections" path="/api/connections" id="connections" empty="No connections."
  columns=${[['Name', (c) => c.name], ['User', (c) => c.user], ['Virtual host', (c) => c.vhost],
    ['Connected', (c) => new Date(c.connected_at).toLocaleString()]]} />`;

const Channels = () => html`<${Listing} title="Channels" path="/api/channels" id="channels" empty="No channels."
  columns=${[
    ['Channel', (c) => c.name], ['User', (c) => c.user], ['Virtual host', (c) => c.vhost],
    ['Mode', (c) => [c.confirm && 'confirm', c.transactional && 'tx'].filter(Boolean).join(' ')],
    ['Consumers', (c) => c.consumer_count, true], ['Prefetch', (c) => c.prefetch_count, true],
    ['Unacked', (c) => c.messages_unacknowledged, true],
    ['Publish', (c) => fmtRate(rate(c.message_stats, 'publish')), true],
    ['Deliver', (c) => fmtRate(rate(c.message_stats, 'deliver_get')), true],
  ]} />`;

const Users = () => html`<${Listing} title="Users" path="/api/users" id="users" empty="No users."
  columns=${[['Name', (u) => u.name], ['Tags', (u) => u.tags.join(', ')]]} />`;

// --- a queue ----------------------------------------------------------------

function QueuePage({ vhost, name }) {
  const path = '/api/queues/' + seg(vhost) + '/' + seg(name);
  const [q, error, refresh] = usePoll(path);
  const [note, setNote] = useState(null);
  const [got, setGot] = useState(null);
  const act = (f) => async (event) => {
    event && event.preventDefault();
    try { setNote(await f(event)); refresh(); } catch (e) { setNote('Error: ' + e.message); }
  };
  const publish = act(async (event) => {
    const f = event.target;
    const r = await api('/api/exchanges/' + seg(vhost) + '/amq.default/publish', {
      method: 'POST',
      body: { routing_key: name, payload: f.payload.value, payload_encoding: 'string',
        properties: { delivery_mode: f.persistent.checked ? 2 : 1 } },
    });
    return r.routed ? 'Published.' : 'Not routed.';
  });
  const get = act(async (event) => {
    const f = event.target;
    setGot(await api(path + '/get', { method: 'POST',
      body: { count: Number(f.count.value), ackmode: f.ackmode.value, encoding: 'auto' } }));
    return null;
  });
  const purge = act(async () => {
    if (!confirm('Purge every ready message of ' + name + '?')) return null;
    await api(path + '/contents', { method: 'DELETE' });
    return 'Purged.';
  });
  const remove = act(async () => {
    if (!confirm('Delete queue ' + name + ' and its messages?')) return null;
    await api(path, { method: 'DELETE' });
    location.hash = '#/queues';
    return null;
  });
  if (!q) return html`<p>${error || 'Loading…'}</p>`;
  const stats = q.message_stats || {};
  return html`<h1>Queue ${name} <small class="miss">in ${vhost}</small></h1>
    <div class="cards">
      <div class="card"><div class="n" id="queue-messages">${q.messages}</div><div class="l">messages</div></div>
      <div class="card"><div class="n" id="queue-ready">${q.messages_ready}</div><div class="l">ready</div></div>
      <div class="card"><div class="n">${q.messages_unacknowledged}</div><div class="l">unacked</div></div>
      <div class="card"><div class="n">${q.consumers}</div><div class="l">consumers</div></div>
      <div class="card"><div class="n">${fmtRate(rate(stats, 'publish'))}</div><div class="l">incoming</div></div>
      <div class="card"><div class="n">${fmtRate(rate(stats, 'deliver_get'))}</div><div class="l">delivered</div></div>
    </div>
    <div class="panel"><b>${q.type}</b>, ${q.durable ? 'durable' : 'transient'}${q.exclusive ? ', exclusive' : ''}${q.auto_delete ? ', auto-delete' : ''}
      ${Object.keys(q.arguments || {}).length ? html`<pre>${JSON.stringify(q.arguments, null, 1)}</pre>` : ''}</div>
    ${note && html`<div class="panel" id="queue-note">${note}</div>`}
    <div class="panel"><h2>Publish a message</h2>
      <form class="inline" id="publish" onSubmit=${publish}>
        <label>Payload <textarea name="payload" id="publish-payload"></textarea></label>
        <label>Persistent <input type="checkbox" name="persistent" /></label>
        <button type="submit">Publish</button>
      </form></div>
    <div class="panel"><h2>Get messages</h2>
      <form class="inline" id="get" onSubmit=${get}>
        <label>Count <input name="count" type="number" min="1" value="1" /></label>
        <label>Mode <select name="ackmode">
          <option value="ack_requeue_true">Nack, requeue</option>
          <option value="ack_requeue_false">Ack, remove</option>
          <option value="reject_requeue_true">Reject, requeue</option>
          <option value="reject_requeue_false">Reject, no requeue (dead-letter)</option>
        </select></label>
        <button type="submit">Get</button>
      </form>
      ${got && (got.length ? got.map((m, i) => html`<pre class="got">#${i + 1}${m.redelivered ? ' (redelivered)' : ''}, ${m.message_count} left: ${m.payload}</pre>`)
        : html`<p class="miss">Queue is empty.</p>`)}</div>
    <div class="panel">
      <button class="danger" id="purge" onClick=${purge}>Purge messages</button>${' '}
      <button class="danger plain" id="delete" onClick=${remove}>Delete queue</button>
    </div>`;
}

// --- topology ---------------------------------------------------------------

// Lays a vhost's exchanges and queues out in columns: exchanges no other
// exchange binds to first, each other exchange or queue one column right
// of its deepest source, unbound queues last; edges for bindings,
// alternate exchanges (dashed) and dead-letter exchanges (dotted), each
// with the rate of messages taking it (/api/flows: bindings between the
// same two ends share theirs, as a message matching both goes once).
function layout(exchanges, queues, bindings, flows) {
  const flowRate = (source, destination, type) => {
    const f = flows.find((f) => f.source === source && f.destination === destination && f.destination_type === type);
    return fmtRate(f ? f.rate : 0);
  };
  const shown = bindings.filter((b) => b.source !== '');
  const used = new Set();
  shown.forEach((b) => { used.add('x:' + b.source); used.add((b.destination_type === 'queue' ? 'q:' : 'x:') + b.destination); });
  const alternate = (x) => (x.arguments || {})['alternate-exchange'];
  const dlx = (q) => (q.arguments || {})['x-dead-letter-exchange'];
  exchanges.forEach((x) => { if (alternate(x)) { used.add('x:' + x.name); used.add('x:' + alternate(x)); } });
  queues.forEach((q) => { used.add('q:' + q.name); if (dlx(q) !== undefined && dlx(q) !== '') used.add('x:' + dlx(q)); });
  const xs = exchanges.filter((x) => x.name !== '' && (used.has('x:' + x.name) || !x.name.startsWith('amq.')));
  const depth = new Map(xs.map((x) => [x.name, 0]));
  for (let round = 0; round < xs.length; round++) {
    let moved = false;
    const step = (from, to) => {
      if (depth.has(from) && depth.has(to) && depth.get(to) < depth.get(from) + 1 && depth.get(from) + 1 < xs.length) {
        depth.set(to, depth.get(from) + 1); moved = true;
      }
    };
    shown.filter((b) => b.destination_type === 'exchange').forEach((b) => step(b.source, b.destination));
    xs.forEach((x) => alternate(x) && step(x.name, alternate(x)));
    if (!moved) break;
  }
  const queueDepth = new Map();
  shown.forEach((b) => {
    if (b.destination_type === 'queue' && depth.has(b.source)) {
      queueDepth.set(b.destination, Math.max(queueDepth.get(b.destination) || 0, depth.get(b.source) + 1));
    }
  });
  const last = Math.max(1, ...depth.values(), ...queueDepth.values());
  const columns = last + 1;
  const W = 190, H = 34, GAP_X = 150, GAP_Y = 22;
  const nodes = new Map();
  const place = (key, label, col, row, kind, extra) => nodes.set(key, { key, label, kind, extra, col, x: 20 + col * (W + GAP_X), y: 20 + row * (H + GAP_Y) });
  const rows = new Array(columns).fill(0);
  xs.slice().sort((a, b) => depth.get(a.name) - depth.get(b.name) || a.name.localeCompare(b.name))
    .forEach((x) => { const c = depth.get(x.name); place('x:' + x.name, x.name, c, rows[c]++, 'x', x.type); });
  queues.forEach((q) => {
    const c = queueDepth.has(q.name) ? queueDepth.get(q.name) : last;
    place('q:' + q.name, q.name, c, rows[c]++, 'q', fmtRate(rate(q.message_stats, 'publish')) + ' in');
  });
  const edges = [];
  shown.forEach((b) => {
    const to = (b.destination_type === 'queue' ? 'q:' : 'x:') + b.destination;
    const key = b.routing_key.length > 20 ? b.routing_key.slice(0, 19) + '…' : b.routing_key || '""';
    const label = key + ' · ' + flowRate(b.source, b.destination, b.destination_type);
    edges.push({ from: 'x:' + b.source, to, kind: 'binding', label });
  });
  xs.forEach((x) => alternate(x) && edges.push({ from: 'x:' + x.name, to: 'x:' + alternate(x), kind: 'alternate',
    label: 'alternate · ' + flowRate(x.name, alternate(x), 'alternate-exchange') }));
  queues.forEach((q) => dlx(q) && edges.push({ from: 'q:' + q.name, to: 'x:' + dlx(q), kind: 'dead',
    label: 'dead letters · ' + flowRate(q.name, dlx(q), 'dead-letter-exchange') }));
  const height = 40 + Math.max(1, ...rows) * (H + GAP_Y);
  return { nodes, edges: edges.filter((e) => nodes.has(e.from) && nodes.has(e.to)), width: 40 + columns * (W + GAP_X), height: height + 60, W, H };
}

function Topology() {
  const [vhosts] = usePoll('/api/vhosts', 10000);
  const [chosen, setVhost] = useState(null);
  // '/' unless the user may not see it: then the first they may.
  const names = (vhosts || []).map((v) => v.name);
  const vhost = chosen || (names.length && !names.includes('/') ? names[0] : '/');
  const [exchanges] = usePoll('/api/exchanges/' + seg(vhost));
  const [queues] = usePoll('/api/queues/' + seg(vhost));
  const [bindings] = usePoll('/api/bindings/' + seg(vhost));
  const [flows] = usePoll('/api/flows/' + seg(vhost));
  const pick = html`<label>Virtual host <select id="topology-vhost" value=${vhost} onChange=${(e) => setVhost(e.target.value)}>
    ${(vhosts || [{ name: '/' }]).map((v) => html`<option value=${v.name}>${v.name}</option>`)}</select></label>`;
  if (!exchanges || !queues || !bindings) return html`<h1>Topology</h1>${pick}<p>Loading…</p>`;
  const g = layout(exchanges, queues, bindings, flows || []);
  const edgePath = (e) => {
    const a = g.nodes.get(e.from), b = g.nodes.get(e.to);
    const [x1, y1] = [a.x + g.W, a.y + g.H / 2];
    if (b.col > a.col) {
      // Forward: a curve, dipping below the columns it passes over.
      const [x2, y2] = [b.x, b.y + g.H / 2];
      const dip = (b.col - a.col - 1) * (g.H + 30);
      const bend = (x2 - x1) / 2;
      const d = `M${x1},${y1} C${x1 + bend},${y1 + dip} ${x2 - bend},${y2 + dip} ${x2},${y2}`;
      return { d, mid: [x2 - 75, y2 - 6] };
    }
    // Back or down (dead letters, alternates in a column): round below.
    const [x2, y2] = [b.x + g.W / 2, b.y + g.H];
    const d = `M${x1},${y1} C${x1 + 60},${y1 + 70} ${x2},${y2 + 70} ${x2},${y2}`;
    return { d, mid: [(x1 + x2) / 2 + 30, Math.max(y1, y2) + 50] };
  };
  return html`<h1>Topology</h1>
    <form class="inline">${pick}</form>
    <p class="legend"><span>→ binding (key · rate)</span><span style="color:#b26a00">⇢ alternate exchange</span><span style="color:#b3261e">⇢ dead letters</span></p>
    <svg class="topology" id="topology" width=${g.width} height=${g.height} viewBox=${`0 0 ${g.width} ${g.height}`}>
      <defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
        <path d="M 0 0 L 10 5 L 0 10 z" fill="#7a8a9b" /></marker></defs>
      ${g.edges.map((e) => { const p = edgePath(e); return html`<g class="edge">
        <path class=${e.kind} d=${p.d} marker-end="url(#arrow)" />
        <text class="rate" x=${p.mid[0]} y=${p.mid[1]} text-anchor="middle">${e.label}</text></g>`; })}
      ${[...g.nodes.values()].map((n) => html`<g class=${n.kind} data-node=${n.key}>
        <rect x=${n.x} y=${n.y} width=${g.W} height=${g.H} rx="5" />
        <text x=${n.x + 8} y=${n.y + 14}>${n.label.length > 26 ? n.label.slice(0, 25) + '…' : n.label}</text>
        <text class="rate" x=${n.x + 8} y=${n.y + 28}>${n.kind === 'x' ? n.extra + ' exchange' : n.extra}</text></g>`)}
    </svg>`;
}

// --- route explainer ---------------------------------------------------------

function Explain() {
  const [vhosts] = usePoll('/api/vhosts', 10000);
  const [answer, setAnswer] = useState(null);
  const [error, setError] = useState(null);
  const submit = async (event) => {
    event.preventDefault();
    const f = event.target;
    try {
      const headers = f.headers.value.trim() ? JSON.parse(f.headers.value) : null;
      const exchange = f.exchange.value === '' ? 'amq.default' : f.exchange.value;
      setAnswer(await api('/api/explain/' + seg(f.vhost.value) + '/' + seg(exchange), {
        method: 'POST', body: { routing_key: f.routing_key.value, headers },
      }));
      setError(null);
    } catch (e) { setError(e.message); setAnswer(null); }
  };
  const how = (r) => (r.how === 'binding' ? `bound from ${r.from || '(default)'} with key '${r.routing_key}'`
    : r.how === 'alternate-exchange' ? `alternate exchange of ${r.from}` : 'published to');
  return html`<h1>Route explainer</h1>
    <p class="miss">Where would a message go, and why? Nothing is published.</p>
    <form class="inline" id="explain" onSubmit=${submit}>
      <label>Virtual host <select name="vhost">${(vhosts || [{ name: '/' }]).map((v) => html`<option value=${v.name}>${v.name}</option>`)}</select></label>
      <label>Exchange <input name="exchange" id="explain-exchange" placeholder="(default)" /></label>
      <label>Routing key <input name="routing_key" id="explain-key" /></label>
      <label>Headers (JSON) <textarea name="headers" placeholder='{"format": "pdf"}'></textarea></label>
      <button type="submit" id="explain-button">Explain</button>
    </form>
    ${error && html`<div class="error">${error}</div>`}
    ${answer && html`<div class="panel" id="explanation">
      <h2>${answer.queues.length ? `Reaches ${answer.queues.length} queue(s)` : answer.held_for_delay
        ? 'Held by a delayed exchange, routed when due' : 'Unroutable: no queue'}</h2>
      <ul>${answer.queues.map((q) => html`<li class="reached">queue <b>${q.queue}</b> via ${q.exchange || '(default exchange)'} (key '${q.routing_key}')
        ${q.dead_letter_exchange != null && html`<span class="miss">, dead-letters to ${q.dead_letter_exchange || '(default exchange)'}</span>`}</li>`)}</ul>
      <h2>Walk</h2>
      ${answer.hops.map((h) => html`<div class="hop"><b>${h.exchange || '(default exchange)'}</b> (${h.type}) <span class="how">${how(h.reached)}</span>
        ${h.visited_before ? html`<div class="miss">visited before: a loop, nothing more</div>` : html`
          ${h.held_for_delay && html`<div class="miss">held for its x-delay, routed when due</div>`}
          ${h.matched.map((b) => html`<div>matched '${b.routing_key}' → ${b.destination_type} ${b.destination}</div>`)}
          <div class="miss">missed ${h.missed} binding(s)</div>`}</div>`)}
    </div>`}`;
}

// --- the app ------------------------------------------------------------------

function App() {
  const [who, setWho] = useState(null);
  const [checked, setChecked] = useState(false);
  const route = useRoute();
  useEffect(() => {
    if (!sessionStorage.getItem(AUTH_KEY)) { setChecked(true); return; }
    api('/api/whoami').then(setWho, () => sessionStorage.removeItem(AUTH_KEY)).finally(() => setChecked(true));
  }, []);
  if (!checked) return null;
  if (!who) return html`<${Login} onLogin=${setWho} />`;
  const logout = () => { sessionStorage.removeItem(AUTH_KEY); setWho(null); };
  const [page, ...args] = route;
  const body = {
    '': () => html`<${Overview} />`, queues: () => html`<${Queues} />`, exchanges: () => html`<${Exchanges} />`,
    connections: () => html`<${Connections} />`, channels: () => html`<${Channels} />`, users: () => html`<${Users} />`,
    topology: () => html`<${Topology} />`, explain: () => html`<${Explain} />`,
    queue: () => html`<${QueuePage} key=${args.join('/')} vhost=${args[0]} name=${args[1]} />`,
  }[page] || (() => html`<p>No such page.</p>`);
  return html`<header>
      <span class="brand">Warren</span>
      <nav>${PAGES.map(([p, label]) => html`<a href=${'#/' + p} id=${'nav-' + (p || 'overview')} class=${page === p ? 'active' : ''}>${label}</a>`)}</nav>
      <span class="who">${who.name}<button class="plain" onClick=${logout}>Log out</button></span>
    </header>
    <main>${body()}</main>`;
}

render(html`<${App} />`, document.getElementById('app'));
