"""Renderings of a report for people: a standalone HTML page and plain text.

Both list the fields still to complete before anything else, then every field
in order with its citation; a field to complete is marked ``TO COMPLETE`` (and
highlighted in HTML), a suggested draft is labelled as such, so a gap never
reads as an answer. The HTML page is autoescaped (Jinja2), carries no script
and forbids loading anything (Content-Security-Policy ``default-src 'none'``):
free text from the incident, such as its title, cannot inject markup. The text
rendering drops control characters, so it is safe to print to a terminal.
"""

from __future__ import annotations

from typing import Final

from jinja2 import Environment, StrictUndefined

from dicomguard.incident._text import clean, when
from dicomguard.incident.model import Field, Report

MARK: Final = "[TO COMPLETE]"
"""The marker of a field to complete in the text rendering."""

_TEMPLATE: Final = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{{ report.title }}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #1a1a1a; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.05rem; margin: 0 0 .25rem; }
.meta, .cite, .note { color: #555; font-size: .9rem; }
.pending { border: 3px solid #b00020; background: #fff0f0; padding: .5rem 1rem; margin: 1rem 0; }
.field { border-left: 4px solid #ccc; padding: .5rem 1rem; margin: 1rem 0; }
.field.to-complete { border-left-color: #b00020; background: #fff6e5; }
.badge { background: #b00020; color: #fff; font-weight: bold; padding: 0 .4rem; border-radius: 3px; font-size: .8rem; }
.value { white-space: pre-wrap; }
.missing { color: #b00020; font-weight: bold; }
.draft { color: #8a4b00; font-weight: bold; }
</style>
</head>
<body>
<header>
<h1>{{ report.title }}</h1>
<p class="meta">{{ report.regulation }} &middot; report <code>{{ report.kind }}</code>
{%- if report.incident_id is not none %} &middot; incident #{{ report.incident_id }}{% endif %}
{%- if generated %} &middot; generated {{ generated }}{% endif %}</p>
</header>
{% if pending %}
<section class="pending" id="to-complete">
<h2>{{ pending|length }} field{{ "s" if pending|length != 1 }} to complete before sending</h2>
<ul>
{% for f in pending %}<li><a href="#f-{{ f.key }}">{{ f.label }}</a>
{%- if f.draft %} (suggested draft to review){% endif %} <span class="cite">{{ f.citation }}</span></li>
{% endfor %}</ul>
</section>
{% else %}
<p class="meta">Every field has a value.</p>
{% endif %}
{% if report.notes %}<ul class="note">{% for n in report.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
<main>
{% for f in report.fields %}
<section class="field{{ ' to-complete' if f.to_complete }}" id="f-{{ f.key }}" data-key="{{ f.key }}"
 data-to-complete="{{ 'true' if f.to_complete else 'false' }}">
<h2>{% if f.to_complete %}<span class="badge">TO COMPLETE</span> {% endif %}{{ f.label }}</h2>
<p class="cite">{{ f.citation }}</p>
{% if f.value is none %}<p class="missing">To be written by a person.</p>
{% else %}{% if f.draft %}<p class="draft">Suggested draft: review before sending.</p>{% endif %}
<div class="value">{{ f.value }}</div>
{% endif %}
{% if f.note %}<p class="note">{{ f.note }}</p>{% endif %}
</section>
{% endfor %}
</main>
</body>
</html>
"""

_environment: Final = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_page: Final = _environment.from_string(_TEMPLATE)


def render_html(report: Report) -> str:
    """A standalone, script-free HTML page of ``report``: fields to complete listed first and highlighted."""
    generated = when(report.generated_at) if report.generated_at is not None else ""
    return _page.render(report=report, pending=report.to_complete, generated=generated)


def render_text(report: Report) -> str:
    """``report`` as plain text: fields to complete listed first, each marked ``[TO COMPLETE]``."""
    heading = report.title
    meta = [report.regulation, f"report {report.kind}"]
    if report.incident_id is not None:
        meta.append(f"incident #{report.incident_id}")
    if report.generated_at is not None:
        meta.append(f"generated {when(report.generated_at)}")
    lines = [heading, "=" * len(heading), " | ".join(part for part in meta if part), ""]
    pending = report.to_complete
    if pending:
        lines.append(f"{MARK} {len(pending)} field{'s' if len(pending) != 1 else ''} to complete before sending:")
        lines += [f"  - {item.label} ({item.citation}){' - suggested draft to review' if item.draft else ''}"
                  for item in pending]
    else:
        lines.append("Every field has a value.")
    lines += [f"Note: {note}" for note in report.notes]
    for item in report.fields:
        lines += ["", "-" * 72, *_field_lines(item)]
    return clean("\n".join(lines) + "\n")


def _field_lines(item: Field) -> list[str]:
    head = f"{MARK} {item.label}" if item.to_complete else item.label
    lines = [f"{head}  ({item.citation})"]
    if item.value is None:
        lines.append("  (to be written by a person)")
    else:
        if item.draft:
            lines.append("  Suggested draft, review before sending:")
        lines += [f"  {line}" for line in item.value.splitlines()]
    if item.note:
        lines.append(f"  Note: {item.note}")
    return lines
