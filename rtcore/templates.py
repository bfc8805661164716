"""Log templates with named fields: checked before the loop starts, rendered
by the control plane.

A template is Python str.format syntax where every replacement field has a
name and an optional format spec: "woke {late_us:.1f} us late". A record
carries one typed argument per field, in order; the control plane turns it
into the rendered message and a dict {name: value}. No numpy here: the RT
process checks its templates at start-up.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """A template cannot be used; the message names the template and the problem."""


@dataclass(frozen=True)
class Template:
    text: str
    fields: tuple[str, ...]
    specs: tuple[str, ...]
    plain: str  # the text with specs removed: values arrive pre-formatted

    def render(self, args: list[int | float] | tuple[int | float, ...]) -> str:
        """The message: each value formatted by its field's spec, or plainly
        when the spec does not fit the value's type."""
        values = {}
        for name, spec, value in zip(self.fields, self.specs, args, strict=False):
            try:
                values[name] = format(value, spec)
            except (ValueError, TypeError):
                values[name] = str(value)
        for name in self.fields[len(args) :]:
            values[name] = "?"
        return self.plain.format_map(values)


def parse(text: str, max_fields: int = 8) -> Template:
    """Check a template; TemplateError says what is wrong with it."""
    fields: list[str] = []
    specs: list[str] = []
    plain: list[str] = []
    try:
        parts = list(_FORMATTER.parse(text))
    except ValueError as e:
        raise TemplateError(f"template {text!r} is malformed: {e}") from None
    for literal, name, spec, conversion in parts:
        plain.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise TemplateError(
                f"template {text!r} has a positional field: name every field, e.g. {{late_us:.1f}}"
            )
        if not name.isidentifier():
            raise TemplateError(f"template {text!r}: field {name!r} is not a plain name")
        if conversion:
            raise TemplateError(
                f"template {text!r}: field {name!r} uses a !{conversion} conversion"
            )
        if name in fields:
            raise TemplateError(f"template {text!r} names field {name!r} twice")
        spec = spec or ""
        if "{" in spec:
            raise TemplateError(f"template {text!r}: field {name!r} has a nested spec")
        if not _spec_fits(spec):
            raise TemplateError(
                f"template {text!r}: field {name!r} has format {spec!r}, "
                f"which formats neither an integer nor a number"
            )
        fields.append(name)
        specs.append(spec)
        plain.append("{" + name + "}")
    if len(fields) > max_fields:
        raise TemplateError(f"template {text!r} has {len(fields)} fields; at most {max_fields}")
    return Template(text, tuple(fields), tuple(specs), "".join(plain))


def _spec_fits(spec: str) -> bool:
    for sample in (1, 1.5):
        try:
            format(sample, spec)
        except (ValueError, TypeError):
            continue
        return True
    return False
