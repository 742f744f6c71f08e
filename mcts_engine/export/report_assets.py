"""The report page's style and script (static text; no network, no library).

The script reads two embedded blocks: ``#index`` (one small row per tree, parsed at load) and ``#cards`` (one
compact JSON card per line, parsed only when that card is opened), so a 10,000-tree page opens as fast as
its index table renders. Rows: ``[id, question type, solved, root value, depth, nodes, pick, question]``
where ``pick`` is the verdict of the search's own pick (1 right, 0 wrong, -1 unverified).
SVG is written as markup into ``innerHTML``, so the page never needs the SVG namespace URL.
"""

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1280px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0}td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#4a7fd4;height:12px;display:inline-block;vertical-align:middle}
.row{display:flex;gap:16px;flex-wrap:wrap}.col{flex:1 1 420px;min-width:320px}
pre{white-space:pre-wrap;background:#f6f6f6;padding:8px;border-radius:4px}
.ok{color:#137a2a;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#777}
details{margin-left:14px}summary{cursor:pointer}
.node-ok{color:#137a2a}.node-bad{color:#b3261e}.best>summary{background:#fff6c4}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:14px;height:14px;vertical-align:middle;margin-right:4px;border-radius:3px}
#idx{width:100%}#idx th{cursor:pointer;user-select:none;background:#fafafa;position:sticky;top:0}
#idx tbody tr{cursor:pointer}#idx tbody tr:hover{background:#f0f5ff}#idx tr.sel{background:#fff6c4}
.controls{display:flex;gap:10px;flex-wrap:wrap;align-items:center;margin:8px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:12px;margin:16px 0}
.card svg{max-width:100%;height:auto;border:1px solid #ccc}
.turn{display:flex;gap:12px;align-items:flex-start;flex-wrap:wrap;border-top:1px dashed #ddd;padding:8px 0}
.turn figure{margin:0}.turn figcaption{font-size:12px;color:#777}.turn img,.turn svg{max-width:384px}
.turn pre{flex:1 1 300px;margin:0}
#card{position:sticky;top:0;align-self:flex-start;max-height:100vh;overflow:auto}
"""

JS = r"""
(function(){
const INDEX = JSON.parse(document.getElementById('index').textContent);
let LINES = null;
const PAGE = 200;
let rows = INDEX.slice(), page = 0, sortKey = -1, sortDir = 1;
const $ = id => document.getElementById(id);
function esc(s){return String(s).replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function mark(v){return v===1?'<span class=ok>✓</span>':v===0?'<span class=bad>✗</span>':'<span class=muted>?</span>';}
function apply(){
  const f = $('f').value, t = $('t').value, q = $('q').value.trim().toLowerCase();
  rows = INDEX.filter(r => (f==='all' || (f==='unsolved' && !r[2]) || (f==='solved' && r[2]) || (f==='wrong' && r[6]===0))
    && (!t || r[1]===t) && (!q || r[0].toLowerCase().includes(q) || r[7].toLowerCase().includes(q)));
  if (sortKey >= 0) rows.sort((a,b) => (a[sortKey] < b[sortKey] ? -1 : a[sortKey] > b[sortKey] ? 1 : 0) * sortDir);
  page = 0; draw();
}
function draw(){
  const n = Math.max(1, Math.ceil(rows.length / PAGE));
  page = Math.min(page, n - 1);
  const part = rows.slice(page * PAGE, (page + 1) * PAGE);
  $('rows').innerHTML = part.map(r => '<tr data-id="' + esc(r[0]) + '"><td>' + esc(r[0]) + '</td><td>' + esc(r[1]) +
    '</td><td>' + (r[2] ? '<span class=ok>solved</span>' : '<span class=bad>unsolved</span>') + '</td><td class=num>' +
    r[3].toFixed(2) + '</td><td class=num>' + r[4] + '</td><td class=num>' + r[5] + '</td><td>' + mark(r[6]) + '</td></tr>').join('');
  $('count').textContent = rows.length + ' of ' + INDEX.length + ' trees · page ' + (page + 1) + '/' + n;
}
function cardData(id){
  if (LINES === null) LINES = document.getElementById('cards').textContent.split('\n');
  const i = POS[id];
  return i === undefined ? null : JSON.parse(LINES[i]);
}
const POS = {}; INDEX.forEach((r, i) => { POS[r[0]] = i; });
function svg(c, img, pts, boxes, crop, idx){
  const w = c.frame[0], h = c.frame[1], r = Math.max(4, Math.round(Math.min(w, h) / 50));
  let s = '<svg viewBox="0 0 ' + w + ' ' + h + '" width="' + w + '" role="img"><image href="' + esc(img) + '" x="0" y="0" width="' + w +
    '" height="' + h + '" preserveAspectRatio="none"/>';
  (boxes || []).forEach(b => { s += '<rect x="' + b[0] + '" y="' + b[1] + '" width="' + (b[2]-b[0]) + '" height="' + (b[3]-b[1]) +
    '" fill="none" stroke="#00beff" stroke-width="' + Math.max(1, r/3) + '"/>'; });
  if (crop) s += '<rect x="' + crop[0] + '" y="' + crop[1] + '" width="' + (crop[2]-crop[0]) + '" height="' + (crop[3]-crop[1]) +
    '" fill="none" stroke="#00c85a" stroke-width="' + Math.max(2, r/2) + '"/>';
  for (let i = 1; i < pts.length; i++) s += '<line x1="' + pts[i-1][0] + '" y1="' + pts[i-1][1] + '" x2="' + pts[i][0] + '" y2="' + pts[i][1] +
    '" stroke="#ffd200" stroke-width="' + Math.max(1, r/3) + '"/>';
  pts.forEach((p, i) => { s += '<circle cx="' + p[0] + '" cy="' + p[1] + '" r="' + r + '" fill="#e61e1e" stroke="#fff" stroke-width="' +
    Math.max(1, r/4) + '"/><text x="' + (p[0] + r + 2) + '" y="' + (p[1] - r) + '" font-size="' + (2*r + 2) +
    '" font-weight="bold" fill="#fff" stroke="#000" stroke-width="' + Math.max(1, r/3) + '" paint-order="stroke">' + (idx || i + 1) + '</text>'; });
  return s + '</svg>';
}
function tree(c){
  const kids = {}; c.tree.forEach(n => { (kids[n[1]] = kids[n[1]] || []).push(n); });
  const best = new Set(c.best);
  function rec(n){
    const k = (kids[n[0]] || []).map(rec).join('');
    let line;
    if (n[1] < 0) line = 'root · Q ' + n[6].toFixed(2) + ' · N ' + n[5];
    else {
      const cls = n[7] === 1 ? ' class=node-ok' : n[7] === 0 ? ' class=node-bad' : '';
      line = '<span' + cls + '>#' + n[0] + ' · ' + esc(n[2]) + ' · Q ' + n[6].toFixed(2) + ' · N ' + n[5] +
        (n[3] !== null ? ' · (' + n[3] + ', ' + n[4] + ')' : '') + '</span> ' + esc(n[8]) + (n[2] === 'answer' ? ' ' + mark(n[7]) : '');
    }
    const open = (best.has(n[0]) || n[1] < 0) ? ' open' : '', cls = best.has(n[0]) ? ' class=best' : '';
    return '<details' + open + cls + '><summary>' + line + '</summary>' + k + '</details>';
  }
  return rec(c.tree[0]);
}
function card(id){
  const c = cardData(id);
  if (!c) return;
  document.querySelectorAll('#rows tr.sel').forEach(tr => tr.classList.remove('sel'));
  const tr = document.querySelector('#rows tr[data-id="' + CSS.escape(id) + '"]'); if (tr) tr.classList.add('sel');
  const verdict = c.ok === true ? '<span class=ok>✓ correct</span>' : c.ok === false ? '<span class=bad>✗ wrong</span>' : '<span class=muted>unverified</span>';
  let h = '<div class=card id="card-' + esc(c.id) + '"><h3>' + esc(c.id) + ' <span class=muted>· ' + esc(c.task) + ' · ' + esc(c.qtype) + ' · ' +
    c.n + ' nodes · root Q ' + c.rootq.toFixed(2) + ' · ' + c.nc + '/' + c.nv + ' correct leaves · ' + (c.solved ? 'solved' : 'unsolved') +
    ' · frame ' + c.frame[0] + '×' + c.frame[1] + ' (orig ' + c.orig[0] + '×' + c.orig[1] + ')</span></h3><div class=row><div class=col>';
  h += c.img ? svg(c, c.img, c.points, c.boxes) : '<p class=bad>image unavailable: ' + esc(c.img_error || '') + '</p>';
  h += '</div><div class=col><p><b>Question</b></p><pre>' + esc(c.q) + '</pre><p class=muted>' + esc(c.label) + '</p>';
  if (c.chain !== null && !(c.turns && c.turns.length)) h += '<pre>' + esc(c.chain) + '</pre>';
  if (c.chain !== null) h += '<p>Answer ' + esc(JSON.stringify(c.answer)) + ': ' + verdict + (c.reason ? ' (' + esc(c.reason) + ')' : '') +
    ' · truth ' + esc(JSON.stringify(c.truth)) + ' · path value ' + c.value.toFixed(2) + '</p>';
  if (c.rejected) h += '<p class=muted>' + c.rejected + ' rejected step(s)</p>';
  h += '</div></div>';
  if (c.turns && c.turns.length) {
    h += '<details open><summary>turns (' + c.turns.length + ' zooms)</summary>';
    c.turns.forEach((t, i) => {
      h += '<div class=turn><figure>' + (c.img ? svg(c, c.img, [t.p], [], t.box, i + 1) : '') + '<figcaption>turn ' + (i + 1) + ': (' + t.p[0] + ', ' + t.p[1] +
        ') · region ' + esc(JSON.stringify(t.box)) + '</figcaption></figure><figure>' +
        (t.crop ? '<img class=crop alt="turn ' + (i + 1) + ': crop" src="' + esc(t.crop) + '">' : '<p class=bad>crop unavailable</p>') +
        '<figcaption>crop ' + esc(t.size || '') + '</figcaption></figure><pre>' + esc(t.text) + '</pre></div>';
    });
    h += '<div class=turn><pre>' + esc(c.last || '') + '</pre></div></details>';
  }
  h += '<details><summary>search tree</summary>' + tree(c) + '</details></div>';
  $('card').innerHTML = h;
  if (location.hash !== '#' + id) history.replaceState(null, '', '#' + id);
}
document.querySelectorAll('#idx th').forEach((th, i) => th.addEventListener('click', () => {
  const k = +th.dataset.k; sortDir = (sortKey === k) ? -sortDir : 1; sortKey = k; apply(); }));
['f', 't'].forEach(id => $(id).addEventListener('change', apply));
$('q').addEventListener('input', apply);
$('prev').addEventListener('click', () => { page = Math.max(0, page - 1); draw(); });
$('next').addEventListener('click', () => { page += 1; draw(); });
$('rows').addEventListener('click', e => { const tr = e.target.closest('tr'); if (tr) card(tr.dataset.id); });
const types = [...new Set(INDEX.map(r => r[1]))].sort();
$('t').innerHTML = '<option value="">all question types</option>' + types.map(t => '<option>' + esc(t) + '</option>').join('');
apply();
const start = decodeURIComponent(location.hash.slice(1));
card(start && POS[start] !== undefined ? start : (INDEX.length ? INDEX[0][0] : ''));
document.body.dataset.ready = '1';
document.body.dataset.readyMs = String(Math.round(performance.now()));  // scripts/check_report.py reads it
})();
"""
