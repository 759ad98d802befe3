"""HTML for the web admin and self-service pages: one layout, escaping, the static files.

Every value is escaped with ``esc`` when it is put into the page (values from mail above
all: subjects, addresses, replies of remote servers). The pages load nothing from
elsewhere: the style sheet and the one small script are served by Pochta itself, and the
Content-Security-Policy forbids inline scripts and every other origin.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from ..http.core import Response

CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(token)}">'


def form(action: str, csrf: str, inner: str, button: str, danger: bool = False,
         inline: bool = True) -> str:
    cls = ' class="inline"' if inline else ""
    bcls = ' class="danger"' if danger else ""
    return (f'<form method="post" action="{esc(action)}"{cls}>{csrf_field(csrf)}{inner}'
            f'<button type="submit"{bcls}>{esc(button)}</button></form>')


def hidden(name: str, value: object) -> str:
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """``rows`` hold HTML already (escape each value when building them)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


ADMIN_NAV = (("/admin", "Dashboard"), ("/admin/domains", "Domains"),
             ("/admin/accounts", "Accounts"), ("/admin/queue", "Queue"),
             ("/admin/log", "Log"), ("/admin/doctor", "Doctor"))
USER_NAV = (("/account", "My account"), ("/account/app-passwords", "App passwords"),
            ("/account/filters", "Filters"), ("/account/senders", "Senders"))


def page(title: str, body: str, *, who: str = "", csrf: str = "",
         nav: Sequence[tuple[str, str]] = (), notice: str = "", error: str = "",
         status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> Response:
    links = "".join(f'<a href="{esc(href)}">{esc(text)}</a>' for href, text in nav)
    logout = (f'<form method="post" action="/logout" class="inline logout">'
              f'{csrf_field(csrf)}<span>{esc(who)}</span>'
              f'<button type="submit">Log out</button></form>') if who else ""
    flash = ""
    if notice:
        flash += f'<p class="notice" role="status">{esc(notice)}</p>'
    if error:
        flash += f'<p class="error" role="alert">{esc(error)}</p>'
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · Pochta</title>
<link rel="stylesheet" href="/static/pochta.css">
<script src="/static/pochta.js" defer></script>
</head><body>
<header><strong>Pochta</strong><nav>{links}</nav>{logout}</header>
<main><h1>{esc(title)}</h1>{flash}{body}</main>
</body></html>
"""
    return Response(status, doc.encode("utf-8"), "text/html; charset=utf-8",
                    [*SECURITY_HEADERS, *headers])


def bar_chart(points: Sequence[tuple[str, float]], width: int = 720, height: int = 160,
              label: str = "") -> str:
    """An inline SVG bar chart (no script, no style attributes: allowed by the CSP)."""
    n = max(len(points), 1)
    top = max((v for _, v in points), default=0.0) or 1.0
    bar = width / n
    bars = []
    for i, (name, value) in enumerate(points):
        h = (height - 20) * value / top
        x = i * bar
        bars.append(f'<rect x="{x + 1:.1f}" y="{height - 16 - h:.1f}" width="{bar - 2:.1f}" '
                    f'height="{h:.1f}" fill="#3b6ea5"><title>{esc(name)}: {value:g}</title>'
                    "</rect>")
        if i % max(1, n // 8) == 0:
            bars.append(f'<text x="{x + 1:.1f}" y="{height - 2}" font-size="10" '
                        f'fill="#555">{esc(name)}</text>')
    return (f'<svg class="chart" role="img" aria-label="{esc(label)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{esc(label)}</title>'
            f'<text x="4" y="12" font-size="10" fill="#555">'
            f"max {top:g}</text>{''.join(bars)}</svg>")


def hbar_chart(points: Sequence[tuple[str, float]], label: str, width: int = 520) -> str:
    """An inline SVG horizontal bar chart with a label per bar (top senders, verdicts)."""
    row, text_w = 22, 230
    height = max(len(points), 1) * row + 8
    top = max((v for _, v in points), default=0.0) or 1.0
    parts = []
    for i, (name, value) in enumerate(points):
        y = 4 + i * row
        w = (width - text_w - 50) * value / top
        parts.append(f'<text x="{text_w - 6}" y="{y + 15}" font-size="12" text-anchor="end" '
                     f'fill="#1c2430">{esc(name[:40])}</text>'
                     f'<rect x="{text_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="#3b6ea5"><title>{esc(name)}: {value:g}</title></rect>'
                     f'<text x="{text_w + w + 4:.1f}" y="{y + 15}" font-size="12" '
                     f'fill="#555">{value:g}</text>')
    if not points:
        parts.append('<text x="8" y="18" font-size="12" fill="#555">nothing yet</text>')
    return (f'<svg class="hbars" role="img" aria-label="{esc(label)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{esc(label)}</title>'
            f"{''.join(parts)}</svg>")


CSS = """
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#1c2430;
background:#f5f7fa}header{display:flex;gap:1.5em;align-items:center;padding:.6em 1.2em;
background:#1f3a5a;color:#fff}header nav a{color:#dce8f5;margin-right:1em;text-decoration:none}
header nav a:hover{text-decoration:underline}.logout{margin-left:auto}.logout span{margin-right:
.6em}main{max-width:1100px;margin:1.2em auto;padding:0 1.2em}h1{font-size:1.5em}
table{border-collapse:collapse;width:100%;background:#fff;margin:.6em 0 1.4em}
th,td{border-bottom:1px solid #dde3ea;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#eef2f6}form.inline{display:inline}input,select,button{font:inherit;padding:
.25em .45em}button{background:#2f6db0;color:#fff;border:0;border-radius:3px;cursor:pointer}
button.danger{background:#b03a2e}.notice{background:#e3f4e6;padding:.5em}.error{background:
#fbe5e1;padding:.5em}.cards{display:flex;flex-wrap:wrap;gap:1em}.card{background:#fff;
padding:.8em 1.2em;border:1px solid #dde3ea;min-width:10em}.card b{display:block;font-size:
1.6em}code,pre{font-family:ui-monospace,monospace;font-size:.9em}pre{background:#fff;
padding:.6em;overflow:auto;border:1px solid #dde3ea}.ok{color:#1d7a35}.warn{color:#a86800}
.fail{color:#b03a2e}.stack label{display:block;margin:.4em 0}.chart{background:#fff;
border:1px solid #dde3ea}.login{max-width:24em}.hbars{background:#fff;border:1px solid
#dde3ea;display:block}.secret{font-size:1.3em;padding:.2em .4em;background:#fff}
"""

JS = """
document.addEventListener('click', function (e) {
  var b = e.target.closest('button.copy');
  if (!b) return;
  e.preventDefault();
  var src = document.getElementById(b.dataset.copy);
  if (src && navigator.clipboard) {
    navigator.clipboard.writeText(src.textContent).then(function () {
      b.textContent = 'Copied';
    });
  }
});
document.addEventListener('submit', function (e) {
  var msg = e.target.dataset.confirm;
  if (msg && !window.confirm(msg)) e.preventDefault();
});
"""
