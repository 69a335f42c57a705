"""Notification templates: Liquid written by operators, parsed when saved and rendered per notification.

Pure functions and a per-process cache of compiled templates; no queries (the selectors load rows,
the worker's `delivery/rendering.py` renders a batch). Liquid is python-liquid's, with bounds on
everything a template could make expensive, so that no template or data can hang or exhaust a worker:

- the source: `SOURCE_MAX_CHARS` per part (a 400 at save), blocks nested 30 deep at most (parse time);
- loops: `LOOP_ITERATIONS_MAX` iterations per render in all, nested or one after another (a range
  of a billion from the data fails before its first iteration);
- output: `OUTPUT_MAX_BYTES` per part (256 KiB for an email's text and HTML), `{% capture %}` included;
- variables made by `{% assign %}`: `NAMESPACE_MAX_BYTES` in all; `replace` and `join`, the two
  filters whose result can grow as a product of their inputs, refuse one over `STRING_MAX_CHARS`
  before making it;
- `{% include %}` and `{% render %}` are not available (there are no files to include), so render
  contexts never nest.

Whatever a render raises (a limit, a filter's error, a value the data cannot give) becomes a
`TemplateRenderError` naming the template and the part: the worker dead-letters that notification.

Variables: `actor` (the sender's id), `recipient` (`id`, `locale`, `attributes`), `data` (the
notification's data) and `kind`; `render_context` takes more for digests (`count`, `actors`, `events`).
Filter `plural` picks a plural form by the recipient's locale (CLDR rules through Babel):
`{{ data.count | plural: one: "# like", other: "# likes" }}` (`#` is the number; forms `zero`,
`one`, `two`, `few`, `many`, `other`; `other` is the fallback).
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from babel import Locale, UnknownLocaleError
from liquid import BoundTemplate, Environment, RenderContext
from liquid.builtin.expressions.primitive import RangeLiteral
from liquid.exceptions import FilterValueError, LiquidError, LoopIterationLimitError
from liquid.filter import with_context

from core.fields import text_error
from core.messages import Channel

# The parts each channel uses, and the ones it cannot do without.
PARTS: dict[str, tuple[str, ...]] = {
    Channel.IN_APP: ("title", "body"),
    Channel.WEBHOOK: ("title", "body"),
    Channel.EMAIL: ("subject", "text", "html"),
}
REQUIRED_PARTS: dict[str, tuple[str, ...]] = {
    Channel.IN_APP: ("body",),
    Channel.WEBHOOK: ("body",),
    Channel.EMAIL: ("subject", "text"),
}
ALL_PARTS = ("title", "body", "subject", "text", "html")
LONG_PARTS = ("text", "html")  # an email's: larger sources and output

SOURCE_MAX_CHARS = 10_000
SOURCE_MAX_CHARS_LONG = 50_000
OUTPUT_MAX_BYTES = 16 * 1024
OUTPUT_MAX_BYTES_LONG = 256 * 1024
LOOP_ITERATIONS_MAX = 10_000
# One render of a template (all its parts) may use this much of its thread's CPU (time.thread_time: a
# thread waiting for the GIL or the CPU is not charged): checked at each loop iteration and each
# filter. A template that ran over it once fails at once from then on, in this process (`Compiled.slow`):
# a campaign's chunk of 1,000 recipients must not take 1,000 times the budget, nor a preview hold an API
# worker (an outside tester's loop of split, sort and join over 15,000 characters took 10 ms an
# iteration: 100 s a render, under every other limit).
RENDER_SECONDS_MAX = 0.5
NAMESPACE_MAX_BYTES = 64 * 1024
STRING_MAX_CHARS = 256 * 1024
TITLE_MAX_CHARS = 200  # the inbox row's title column; a longer rendered title is cut with "…"
LOCALE_MAX_LENGTH = 16  # the recipient's locale column

PLURAL_FORMS = ("zero", "one", "two", "few", "many", "other")


class TemplateError(ValueError):
    """A template part that does not parse (at save) or does not render (at delivery, in a preview)."""

    def __init__(self, message: str, *, part: str = "", line: int | None = None) -> None:
        super().__init__(message)
        self.part = part
        self.line = line


class TemplateSyntaxError(TemplateError):
    pass


class TemplateRenderError(TemplateError):
    """Raised by the worker for one notification: that notification is dead-lettered with this message."""


class TemplateMissing(TemplateRenderError):
    """No template of the kind, channel and locale chain (deleted after the API accepted the notification,
    or a task from another producer without a message)."""


# --- Locales --------------------------------------------------------------------------------------

_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?$")


def locale_normalize(tag: str) -> str:
    """A template's locale: empty (the default) or a BCP 47 tag of a language Babel knows (language,
    optional script, optional region), in its canonical case (`de-at` → `de-AT`, `zh_hant` → `zh-Hant`).
    Raises ValueError with the reason."""
    if tag == "":
        return ""
    if len(tag) > LOCALE_MAX_LENGTH or not _TAG.match(tag):
        raise ValueError(f"{tag!r} is not a BCP 47 language tag such as de, de-AT or zh-Hant-TW "
                         "(language, optional script, optional region), or empty for the default.")
    parts = re.split(r"[-_]", tag)
    language, rest = parts[0].lower(), parts[1:]
    script = rest.pop(0).title() if rest and len(rest[0]) == 4 else None
    region = rest.pop(0).upper() if rest else None
    try:
        Locale(language, territory=region if region and not region.isdigit() else None, script=script)
    except (UnknownLocaleError, ValueError):
        raise ValueError(f"{tag!r}: unknown language {language!r}.") from None
    return "-".join(p for p in (language, script, region) if p)


@functools.lru_cache(maxsize=1024)
def locale_chain(tag: str) -> tuple[str, ...]:
    """(Cached: a batch asks it once per recipient, of a few locales.) The template locales to try for a recipient's locale, most specific first, ending with the
    default: `de-AT` → (`de-AT`, `de`, ``), `zh-Hant-TW` → (`zh-Hant-TW`, `zh-Hant`, `zh`, ``). A
    recipient's locale is read leniently (`de_at`, `DE-AT`); one that is not a tag gets the default."""
    try:
        tag = locale_normalize(tag.strip())
    except (ValueError, AttributeError):
        return ("",)
    parts = tag.split("-") if tag else []
    return (*("-".join(parts[:n]) for n in range(len(parts), 0, -1)), "")


@functools.lru_cache(maxsize=256)
def _plural_rule(tag: str):
    """The CLDR plural rule of a locale (English's for one Babel does not know, or the default)."""
    for candidate in locale_chain(tag):
        if candidate:
            try:
                return Locale.parse(candidate, sep="-").plural_form
            except (UnknownLocaleError, ValueError):
                continue
    return Locale("en").plural_form


# --- Liquid ---------------------------------------------------------------------------------------


class _BoundedContext(RenderContext):
    """Counts every loop's iterations over the whole render (python-liquid's own limit multiplies the
    lengths of the loops in one nest, so loops one after another would each get the whole allowance)."""

    iterations = 0

    def raise_for_loop_limit(self, length: int = 1) -> None:
        _raise_past_deadline()
        super().raise_for_loop_limit(length)
        self.iterations += length
        if self.iterations > LOOP_ITERATIONS_MAX:
            raise LoopIterationLimitError(f"more than {LOOP_ITERATIONS_MAX} loop iterations", token=None)


class _BoundedTemplate(BoundTemplate):
    context_class = _BoundedContext


class _Environment(Environment):
    template_class = _BoundedTemplate
    loop_iteration_limit = LOOP_ITERATIONS_MAX
    local_namespace_limit = NAMESPACE_MAX_BYTES
    output_stream_limit = OUTPUT_MAX_BYTES
    context_depth_limit = 10
    block_nesting_limit = 30


class _LongEnvironment(_Environment):
    output_stream_limit = OUTPUT_MAX_BYTES_LONG


_deadline = threading.local()  # the render under way in this thread: when it must end


class RenderTooSlow(LiquidError):
    pass


def _raise_past_deadline() -> None:
    if time.thread_time() > getattr(_deadline, "at", float("inf")):
        raise RenderTooSlow(f"took over {RENDER_SECONDS_MAX * 1000:.0f} ms to render", token=None)


def _timed(original):
    """A filter that first checks the render's deadline."""

    @functools.wraps(original)  # its flags too (with_context, with_environment, ...)
    def timed(*args, **kwargs):
        _raise_past_deadline()
        return original(*args, **kwargs)

    return timed


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _bounded(original, size):
    """A filter that refuses to make a string over STRING_MAX_CHARS (checked before it is made)."""

    @functools.wraps(original)  # its flags too (with_environment, ...)
    def bounded(value, *args, **kwargs):
        if size(value, *args) > STRING_MAX_CHARS:
            raise FilterValueError(f"result over {STRING_MAX_CHARS} characters", token=None)
        return original(value, *args, **kwargs)

    return bounded


def _replace_size(value, seq="", sub="", *_):
    text, seq = _text(value), _text(seq)
    return len(text) + (text.count(seq) if seq else len(text) + 1) * len(_text(sub))


def _join_size(value, separator=" ", *_):
    if not isinstance(value, (list, tuple)):
        return len(_text(value))
    return sum(len(_text(v)) for v in value) + len(_text(separator)) * len(value)


@with_context
def _plural(value, *, context, **forms):
    """`{{ n | plural: one: "# like", other: "# likes" }}`: the form for n in the recipient's locale."""
    unknown = sorted(set(forms) - set(PLURAL_FORMS))
    if unknown:
        raise FilterValueError(f"plural forms are {', '.join(PLURAL_FORMS)}; not {', '.join(unknown)}", token=None)
    try:
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(_text(value))
    except ValueError:
        raise FilterValueError(f"plural needs a number, not {_text(value)[:40]!r}", token=None) from None
    category = _plural_rule(_text(context.globals.get("_plural_locale", "")))(number)
    form = forms.get(category, forms.get("other", ""))
    return _text(form).replace("#", _text(value))


def _range_bounded(self, start, stop) -> range:
    """python-liquid's range literal (RangeLiteral._make_range), refused over LOOP_ITERATIONS_MAX numbers
    when it is made: a filter (`join`, `reverse`, `sort`, `size`...) or an output would otherwise walk
    `(1..100000000)` whole, past every limit above (an outside tester's: the worker stalled for 90 s and
    grew to 7 GB). Loops over a range were bounded already; now the range itself is."""
    numbers = _make_range(self, start, stop)
    if len(numbers) > LOOP_ITERATIONS_MAX:
        raise LoopIterationLimitError(f"a range of more than {LOOP_ITERATIONS_MAX} numbers", token=None)
    return numbers


_make_range = RangeLiteral._make_range
RangeLiteral._make_range = _range_bounded  # the only range literal there is; Liquid runs only here


def _environment(cls: type[Environment], **options) -> Environment:
    env = cls(**options)
    for tag in ("include", "render"):  # no files to include; a render context never nests
        env.tags.pop(tag, None)
    env.add_filter("replace", _bounded(env.filters["replace"], _replace_size))
    env.add_filter("join", _bounded(env.filters["join"], _join_size))
    env.add_filter("plural", _plural)
    for name, function in list(env.filters.items()):
        env.add_filter(name, _timed(function))
    return env


_ENV = _environment(_Environment)
_LONG_ENV = _environment(_LongEnvironment)
# An email's html part: every value escaped (`{{ recipient.attributes.name }}` holding "<script>" shows as
# text), unless a template marks it `| safe`.
_HTML_ENV = _environment(_LongEnvironment, autoescape=True)


def _line_of(exc: LiquidError, source: str) -> int:
    context = exc.context() if exc.token is not None else None
    return context[0] if context else max(1, source.count("\n") + 1)  # no position: the end of the source


def _message_of(exc: Exception) -> str:
    if isinstance(exc, LiquidError):
        return str(exc.message)
    return f"{type(exc).__name__}: {exc}"


def part_compile(part: str, source: str) -> BoundTemplate:
    """A part's source, parsed; TemplateSyntaxError naming the line where it does not parse."""
    limit = SOURCE_MAX_CHARS_LONG if part in LONG_PARTS else SOURCE_MAX_CHARS
    if len(source) > limit:
        raise TemplateSyntaxError(f"Is {len(source)} characters; the limit is {limit}.", part=part)
    if problem := text_error(source):
        raise TemplateSyntaxError(problem, part=part)
    env = _HTML_ENV if part == "html" else _LONG_ENV if part in LONG_PARTS else _ENV
    try:
        template = env.from_string(source)
        filters = template.analyze().filters  # python-liquid finds unknown filters only when it renders them
    except LiquidError as exc:
        line = _line_of(exc, source)
        raise TemplateSyntaxError(f"Line {line}: {_message_of(exc)}.", part=part, line=line) from None
    except Exception as exc:  # noqa: BLE001 - anything else the parser raises is this source's fault
        raise TemplateSyntaxError(f"Does not parse: {_message_of(exc)}.", part=part) from None
    for name, spans in filters.items():
        if name not in env.filters:
            line = source.count("\n", 0, spans[0].index) + 1 if spans and spans[0].index >= 0 else 1
            raise TemplateSyntaxError(f"Line {line}: unknown filter {name!r}.", part=part, line=line)
    return template


def parts_errors(channel: str, parts: Mapping[str, str]) -> dict[str, list[str]]:
    """What is wrong with a template's parts for its channel, by part (empty when nothing is)."""
    errors: dict[str, list[str]] = {}
    used = PARTS.get(channel, ())
    for part in ALL_PARTS:
        source = parts.get(part) or ""
        if part not in used:
            if source:
                errors[part] = [f"{channel} templates have {', '.join(used)}; not {part}."]
            continue
        if not source and part in REQUIRED_PARTS[channel]:
            errors[part] = [f"Required for {channel} templates."]
            continue
        try:
            part_compile(part, source)
        except TemplateSyntaxError as exc:
            errors[part] = [str(exc)]
    return errors


# --- The fast path of plain substitutions ---------------------------------------------------------
#
# Most templates only put variables into text ("{{ data.pct }}% off for you, {{ recipient.id }}"), and a
# campaign renders them once per recipient: python-liquid spends about 25 µs a part on a render context
# and its nodes. A part whose source is nothing but text and `{{ a.b.c }}` outputs (no filter, tag,
# comment or whitespace control) is also kept as the list of its pieces, and rendered by looking the
# paths up, for the values whose output Liquid defines plainly: strings as they are, integers in
# decimal. Anything else (a missing key, a number with a fraction, a boolean, a list, nil, an output
# over the part's limit) is rendered by python-liquid, so the output is always Liquid's (the tests
# compare both on generated templates and data). The html part never takes it (autoescaping).

_PLAIN_OUTPUT = re.compile(r"\{\{ *([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*) *\}\}")
# Names Liquid reads otherwise than as a key: literals as a root, and properties of arrays and strings.
_NOT_PLAIN_ROOTS = frozenset({"true", "false", "nil", "null", "empty", "blank"})
_NOT_PLAIN_KEYS = frozenset({"size", "first", "last"})

Plain = tuple[tuple[str, tuple[str, ...] | None], ...]  # (text, None) or ("", path), in order


def plain_pieces(source: str) -> Plain | None:
    """The pieces of a source made only of text and plain outputs; None for any other source."""
    pieces: list[tuple[str, tuple[str, ...] | None]] = []
    at = 0
    for match in _PLAIN_OUTPUT.finditer(source):
        pieces.append((source[at:match.start()], None))
        path = tuple(match.group(1).split("."))
        if path[0] in _NOT_PLAIN_ROOTS or any(key in _NOT_PLAIN_KEYS for key in path[1:]):
            return None
        pieces.append(("", path))
        at = match.end()
    pieces.append((source[at:], None))
    # (python-liquid reads "\r" as a line end: "\r\n" and "\r" become "\n" in its output.)
    if any(marker in text for text, path in pieces if path is None for marker in ("{{", "{%", "{#", "}}", "\r")):
        return None
    return tuple((text, path) for text, path in pieces if path is not None or text)


def plain_render(pieces: Plain, context: Mapping[str, Any], *, limit: int) -> str | None:
    """The pieces with their values; None where Liquid's own render must decide."""
    out = []
    for text, path in pieces:
        if path is None:
            out.append(text)
            continue
        value: Any = context
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        if type(value) is str:
            out.append(value)
        elif type(value) is int:
            out.append(str(value))
        else:
            return None
    text = "".join(out)
    return text if len(text) * 4 <= limit or len(text.encode()) <= limit else None


@dataclass(frozen=True)
class Compiled:
    """One template, every part parsed: what the worker renders."""

    id: int | None  # None: an unsaved template (a preview)
    kind: str
    channel: str
    locale: str
    parts: Mapping[str, BoundTemplate]
    error: str = ""  # a stored template that does not parse (not saved through the API): it renders nothing
    slow: str = ""  # set (once) when a render ran over RENDER_SECONDS_MAX: it fails at once from then on
    campaign_id: int | None = None  # a campaign's own template (it has no id of its own)
    plain: Mapping[str, Plain] = field(default_factory=dict)  # the parts that are plain substitutions

    @property
    def label(self) -> str:
        if self.campaign_id is not None:
            return f"campaign {self.campaign_id}'s template ({self.channel}, {self.locale or 'default'})"
        return f"template {self.id or '(unsaved)'} ({self.kind}, {self.channel}, {self.locale or 'default'})"


def reads_only(compiled: Compiled, names: frozenset[str]) -> bool:
    """Whether every part reads only these top-level variables, named statically (python-liquid's
    analysis): then its output depends on nothing else (a dynamic root, `{{ [name].x }}`, is unknown: False)."""
    try:
        return all(isinstance(root, str) and root in names
                   for template in compiled.parts.values()
                   for name, uses in template.analyze().globals.items()
                   for use in uses
                   for root in (use.segments[0] if use.segments else name,))
    except Exception:  # noqa: BLE001 - cannot tell: render it for each recipient
        return False


def compile_parts(*, id: int | None, kind: str, channel: str, locale: str, parts: Mapping[str, str]) -> Compiled:
    compiled = {part: part_compile(part, parts.get(part) or "") for part in PARTS[channel] if parts.get(part)}
    plain = {part: pieces for part in compiled if part != "html"
             if (pieces := plain_pieces(parts[part])) is not None}
    return Compiled(id, kind, channel, locale, compiled, plain=plain)


COMPILED_CACHE_SIZE = 2048
_compiled: OrderedDict[tuple[int, datetime], Compiled] = OrderedDict()


def compiled_cached(key: tuple[int, datetime]) -> Compiled | None:
    """A template compiled before by this process, by (id, updated_at): a template saved since is
    another key, so nothing needs invalidating."""
    found = _compiled.get(key)
    if found is not None:
        _compiled.move_to_end(key)
    return found


def compiled_remember(key: tuple[int, datetime], compiled: Compiled) -> None:
    _compiled[key] = compiled
    while len(_compiled) > COMPILED_CACHE_SIZE:
        _compiled.popitem(last=False)


def compiled_forget() -> None:
    _compiled.clear()


def render_context(*, actor: str, recipient_id: str, recipient_locale: str, recipient_attributes: Mapping,
                   data: Mapping, kind: str, **more: Any) -> dict[str, Any]:
    """The variables a template sees. `more`: what later features add (a digest's count, actors, events)."""
    return {
        "actor": actor, "kind": kind, "data": data,
        "recipient": {"id": recipient_id, "locale": recipient_locale, "attributes": recipient_attributes},
        "_plural_locale": recipient_locale,
        **more,
    }


def render(compiled: Compiled, context: Mapping[str, Any]) -> dict[str, str]:
    """Every part of a template rendered; TemplateRenderError naming the template and the part."""
    if compiled.error:
        raise TemplateRenderError(f"{compiled.label} does not parse: {compiled.error}")
    if compiled.slow:
        raise TemplateRenderError(f"{compiled.label}: {compiled.slow}")
    out: dict[str, str] = {}
    _deadline.at = time.thread_time() + RENDER_SECONDS_MAX
    try:
        for part, template in compiled.parts.items():
            pieces = compiled.plain.get(part)
            text = plain_render(pieces, context, limit=_output_limit(part)) if pieces is not None else None
            out[part] = text if text is not None and not text_error(text) else _render_part(compiled, part, template,
                                                                                          context)
    finally:
        _deadline.at = float("inf")
    if len(out.get("title", "")) > TITLE_MAX_CHARS:
        out["title"] = out["title"][: TITLE_MAX_CHARS - 1] + "…"
    return out


def _output_limit(part: str) -> int:
    return OUTPUT_MAX_BYTES_LONG if part in LONG_PARTS else OUTPUT_MAX_BYTES


def _render_part(compiled: Compiled, part: str, template: BoundTemplate, context: Mapping[str, Any]) -> str:
    try:
        text = template.render(context)
    except RenderTooSlow as exc:
        object.__setattr__(compiled, "slow", f"{_message_of(exc)} once ({part}); it is not rendered again")
        raise TemplateRenderError(f"{compiled.label}, {part}: {_message_of(exc)}", part=part) from None
    except Exception as exc:  # noqa: BLE001 - a limit, a filter's error, a RecursionError on deep data...
        raise TemplateRenderError(f"{compiled.label}, {part}: {_message_of(exc)}", part=part) from None
    if problem := text_error(text):
        raise TemplateRenderError(f"{compiled.label}, {part}: renders text that cannot be stored: {problem}", part=part)
    return text
