"""Single-file HTML reports: inline CSS, no script, no external resource, so a report can
be mailed, archived or opened offline.

:func:`html_page` lays out findings (summary cards, one block per finding) with sections
the caller adds; :func:`html_document` is the page around any body (the compliance report
uses it with its own layout).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from iotsec.findings.model import Finding, Severity, count_by_severity
from iotsec.findings.report import TOOL_NAME

__all__ = ["REPORT_CSS", "escape", "html_document", "html_page", "html_sections"]

REPORT_CSS = """
:root{--crit:#7a0019;--high:#c0392b;--med:#d68910;--low:#2874a6;--info:#6c7a89;
--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--muted:#5d6778;--line:#e2e6ec}
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:24px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c9d1dc}main{max-width:1100px;margin:0 auto;padding:24px 32px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:20px 24px;margin:0 0 20px}h2{margin:0 0 12px;font-size:18px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{flex:1;min-width:110px;border-radius:6px;
padding:12px 14px;color:#fff}.card b{display:block;font-size:26px;line-height:1.1}
.critical{background:var(--crit)}.high{background:var(--high)}.medium{background:var(--med)}
.low{background:var(--low)}.info{background:var(--info)}
.bar{display:flex;height:14px;border-radius:7px;overflow:hidden;margin:14px 0 4px;
background:var(--line)}.bar span{display:block}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;
border-bottom:1px solid var(--line);vertical-align:top}th{font-size:13px;color:var(--muted)}
.sev{display:inline-block;border-radius:4px;padding:0 6px;color:#fff;font-size:12px;
font-weight:600;text-transform:uppercase}details{border:1px solid var(--line);
border-radius:6px;margin:0 0 10px;padding:8px 12px}summary{cursor:pointer}
summary .t{font-weight:600}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:13px}dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}
dt{color:var(--muted)}dd{margin:0;word-break:break-word}.fix{background:#eef6ee;
border-left:3px solid #2e7d32;padding:6px 10px;margin:8px 0 0}.muted{color:var(--muted)}
footer{color:var(--muted);font-size:13px;text-align:center;padding:0 0 24px}
"""

_ORDER = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO)


def escape(value: object) -> str:
    """``value`` as HTML text (``None`` as nothing), quotes escaped for attributes too."""
    return html.escape("" if value is None else str(value), quote=True)


# A short name for the many f-strings below.
_e = escape


def _summary_cards(findings: Sequence[Finding]) -> str:
    counts = count_by_severity(findings)
    cards = "".join(f'<div class="card {s.value}"><b>{counts[s.value]}</b>{s.value}</div>'
                    for s in _ORDER)
    total = sum(counts.values())
    bar = "".join(f'<span class="{s.value}" style="width:{100 * counts[s.value] / total:.2f}%"'
                  f' title="{s.value}: {counts[s.value]}"></span>'
                  for s in _ORDER if counts[s.value]) if total else ""
    return (f'<div class="cards">{cards}</div><div class="bar" role="img" '
            f'aria-label="findings by severity">{bar}</div>')


def _finding_block(f: Finding) -> str:
    evidence = "".join(f"<dt>{_e(k)}</dt><dd class=\"mono\">"
                       f"{_e(', '.join(v) if isinstance(v, tuple) else v)}</dd>"
                       for k, v in f.evidence if v not in (None, "", ()))
    return (f'<details><summary><span class="sev {f.severity.value}">{_e(f.severity.value)}'
            f'</span> <span class="t">{_e(f.rule.title)}</span> '
            f'<span class="mono muted">{_e(f.location.uri)}</span><br>'
            f'<span class="muted">{_e(f.message)}</span></summary>'
            f"<p>{_e(f.message)}.</p><dl><dt>rule</dt><dd class=\"mono\">{_e(f.rule.id)}</dd>"
            f"{evidence}</dl><p class=\"muted\">{_e(f.rule.description)}</p>"
            f'<div class="fix"><b>Fix:</b> {_e(f.fix)}</div></details>')


def html_sections(sections: Sequence[tuple[str, str]]) -> str:
    """One ``<section>`` per (heading, HTML) pair; the HTML is the caller's, escaped."""
    return "".join(f"<section><h2>{_e(h)}</h2>{body}</section>" for h, body in sections)


def html_document(*, title: str, subtitle: str, body: str, version: str,
                  css: str = REPORT_CSS) -> str:
    """The page around ``body`` (HTML the caller has escaped): the title in the header, the
    tool and ``version`` (``iotsec.__version__``) in the footer, ``css`` inline."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{css}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><main>{body}</main>"
        f"<footer>{TOOL_NAME} {_e(version)}</footer></body></html>\n")


def html_page(*, title: str, subtitle: str, findings: Sequence[Finding], version: str,
              sections: Sequence[tuple[str, str]] = (), facts: Sequence[tuple[str, str]] = (),
              ) -> str:
    """A findings report: a summary (counts by severity, then ``facts``), one block per
    finding, then ``sections``: (heading, HTML) pairs the caller has already escaped."""
    fact_rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    finding_html = "".join(_finding_block(f) for f in findings) or \
        '<p class="muted">No findings.</p>'
    body = (f"<section><h2>Summary</h2>{_summary_cards(findings)}<dl>{fact_rows}</dl>"
            f"</section><section><h2>Findings ({len(findings)})</h2>{finding_html}</section>"
            + html_sections(sections))
    return html_document(title=title, subtitle=subtitle, body=body, version=version)
