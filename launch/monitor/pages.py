"""HTML pages of the service, self-contained (no script or style from elsewhere: the service runs where there may
be no internet): the live page (`/`), which polls `/ui/summary` every second and redraws without a reload, and the
API reference rendered from the OpenAPI document, with a cURL example per endpoint."""
from __future__ import annotations

import html
from typing import Any

EXAMPLE_VALUES = {'content_type': 'video', 'n': '10', 'window': 'current', 'windows': '5',
                  'content_id': '3f0c1a9e-6a52-4c1d-9d7e-2b8f6f0e4a11'}


def curl_example(path: str, operation: dict[str, Any], base: str = 'http://127.0.0.1:18095') -> str:
    """A cURL command line for an operation, with example values for its parameters."""
    query = []
    for parameter in operation.get('parameters', []):
        value = EXAMPLE_VALUES.get(parameter['name'], '1')
        if parameter['in'] == 'path':
            path = path.replace('{' + parameter['name'] + '}', value)
        elif parameter['in'] == 'query':
            query.append(f'{parameter["name"]}={value}')
    url = base + path + ('?' + '&'.join(query) if query else '')
    secured = any('APIKeyHeader' in requirement for requirement in operation.get('security', []))
    header = '-H "X-API-Key: $ENGAGEMENT_QUERY_API_KEY" ' if secured else ''
    return f"curl -s {header}'{url}'"


def api_docs(openapi: dict[str, Any]) -> str:
    rows = []
    for path, operations in openapi['paths'].items():
        for method, operation in operations.items():
            parameters = ''.join(
                f'<li><code>{html.escape(p["name"])}</code> ({p["in"]}{", required" if p.get("required") else ""})'
                f'{": " + html.escape(p.get("description", "")) if p.get("description") else ""}</li>'
                for p in operation.get('parameters', []) if p['in'] != 'header')
            responses = ', '.join(f'{code} {html.escape(r.get("description", ""))}'
                                  for code, r in operation.get('responses', {}).items())
            rows.append(f'<section><h2><code>{method.upper()} {html.escape(path)}</code></h2>'
                        f'<p>{html.escape(operation.get("summary", ""))}. '
                        f'{html.escape(operation.get("description", ""))}</p>'
                        f'{"<ul>" + parameters + "</ul>" if parameters else ""}'
                        f'<p>Answers: {responses}</p>'
                        f'<pre>{html.escape(curl_example(path, operation))}</pre></section>')
    info = openapi['info']
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>' + html.escape(info['title']) +
            '</title><style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}'
            'pre{background:#f4f4f4;padding:.5rem;overflow-x:auto}section{border-top:1px solid #ddd}</style>'
            '</head><body><h1>' + html.escape(info['title']) + ' ' + html.escape(info['version']) + '</h1><p>' +
            html.escape(info.get('description', '')) + ' The machine-readable document: <a href="/openapi.json">'
            '/openapi.json</a> (OpenAPI ' + html.escape(openapi['openapi']) + ').</p>' + ''.join(rows) +
            '</body></html>')


LIVE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Engagement now</title>
<style>
body{font-family:sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.4rem;margin:0 0 1rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:1rem}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.5rem}
.tops{display:flex;gap:1rem;flex-wrap:wrap}
table{background:#fff;border-collapse:collapse;border:1px solid #ddd;min-width:18rem}
th,td{padding:.3rem .6rem;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right}
.bad{color:#b00020}.ok{color:#137333}
</style></head><body>
<h1>Engagement now <small id="window"></small></h1>
<div class="cards">
 <div class="card">read <b id="read">-</b>events/s</div>
 <div class="card">counted <b id="counted">-</b>events/s</div>
 <div class="card">consumer lag <b id="lag">-</b>records</div>
 <div class="card">pipeline <b id="pipeline">-</b></div>
 <div class="card">REST API breakers <b id="breakers">-</b>open</div>
</div>
<div class="tops" id="tops"></div>
<h2>Dead letters by reason</h2><table id="dead"><tbody></tbody></table>
<p id="updated"></p>
<script>
function cell(text, numeric) {
  const td = document.createElement('td'); td.textContent = text; if (numeric) td.className = 'n'; return td;
}
function table(caption, rows) {
  const t = document.createElement('table'); t.dataset.contentType = caption;
  t.innerHTML = '<caption></caption><thead><tr><th>#</th><th>content</th><th>events</th></tr></thead><tbody></tbody>';
  t.querySelector('caption').textContent = 'Top ' + caption;
  for (const r of rows) {
    const tr = document.createElement('tr'); tr.dataset.contentId = r.content_id;
    tr.append(cell(r.rank, true), cell(r.title || r.content_id, false), cell(r.events, true));
    t.tBodies[0].append(tr);
  }
  return t;
}
function fmt(x) { return x === null || x === undefined ? '-' : Math.round(x).toLocaleString('en'); }
async function refresh() {
  try {
    const s = await (await fetch('/ui/summary', {cache: 'no-store'})).json();
    const started = new Date(s.window_start * 1000).toISOString().slice(11, 19);
    document.getElementById('window').textContent = 'window ' + started + ' UTC';
    document.getElementById('read').textContent = fmt(s.read_per_s);
    document.getElementById('counted').textContent = fmt(s.counted_per_s);
    document.getElementById('lag').textContent = fmt(s.consumer_lag);
    const p = document.getElementById('pipeline'); p.textContent = s.pipeline_up ? 'up' : 'down';
    p.className = s.pipeline_up ? 'ok' : 'bad';
    const b = document.getElementById('breakers'); b.textContent = fmt(s.breakers_open);
    b.className = s.breakers_open ? 'bad' : 'ok';
    const tops = document.getElementById('tops'); tops.replaceChildren();
    for (const [type, rows] of Object.entries(s.top)) tops.append(table(type, rows));
    const dead = document.querySelector('#dead tbody'); dead.replaceChildren();
    for (const [reason, n] of Object.entries(s.dead_letters)) {
      const tr = document.createElement('tr'); tr.append(cell(reason, false), cell(fmt(n), true)); dead.append(tr);
    }
    document.getElementById('updated').textContent = 'updated ' + new Date().toISOString().slice(11, 19) + ' UTC';
    document.body.dataset.windowStart = s.window_start;
    document.body.dataset.loaded = 'true';
  } catch (e) {
    document.getElementById('updated').textContent = 'no answer from the service: ' + e;
  }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
