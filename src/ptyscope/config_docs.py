"""The documentation of the config models, read from their source.

Config fields are documented where they are declared, by ``#:`` comment lines directly
above the annotated assignment (the Sphinx autodoc convention)::

    class ProbeConfig(_Model):
        #: Further aberrations by name (C30 [Å], C12, phi12 [rad], ...).
        aberrations: dict[str, float] = Field(default_factory=dict)

:func:`field_docs` returns, for every field of a model (inherited ones included), its
readable type, default and that comment; :func:`reference_markdown` turns a model into the
Markdown reference of its TOML file (one table per TOML section), which the documentation
site builds from the models (``docs/conf.py``), so the reference cannot drift from the
code. Units come from the field names (``_ang`` → Å, ``_mrad`` → mrad, ...; :func:`unit`).
"""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import PurePath

import annotated_types
import pydantic
from pydantic.fields import FieldInfo

from ptyscope.config import toml_value

__all__ = [
    "MISSING",
    "FieldDoc",
    "field_docs",
    "model_doc",
    "reference_markdown",
    "unit",
]


class _Missing:
    """The default of a required field."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: object = _Missing()

#: Unit suffixes of field names, longest first (Å for lengths, mrad for angles, ...).
_UNITS = (
    ("_mrad_per_ang", "mrad/Å"),
    ("_e_per_ang2", "e/Å²"),
    ("_ang", "Å"),
    ("_mrad", "mrad"),
    ("_rad", "rad"),
    ("_deg", "°"),
    ("_ev", "eV"),
    ("_gb", "GB"),
    ("_px", "px"),
    ("_k", "K"),
)


@dataclass(frozen=True)
class FieldDoc:
    """What a config key is: its name, readable type, default and description."""

    name: str
    #: Readable type, e.g. ``float > 0``, ``"off" | "global" | "map"``, ``(float, float)``.
    annotation: str
    #: The default value, or :data:`MISSING` when the key is required.
    default: object
    required: bool
    #: The ``#:`` comment above the field, joined into one paragraph ("" when none).
    description: str


def unit(name: str) -> str:
    """The unit a field name carries (``"scan_step_ang"`` → ``"Å"``), "" when none.

    Examples
    --------
    >>> unit("tilt_x_mrad"), unit("gradient_x_mrad_per_ang"), unit("iterations")
    ('mrad', 'mrad/Å', '')
    """
    for suffix, symbol in _UNITS:
        if name.endswith(suffix):
            return symbol
    return ""


def model_doc(model: type[pydantic.BaseModel]) -> str:
    """The model's own class docstring, dedented ("" when it has none; never inherited)."""
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def field_docs(model: type[pydantic.BaseModel]) -> dict[str, FieldDoc]:
    """Every field of ``model`` in declaration order, inherited fields first.

    The description is the ``#:`` comment above the field (from the class that declares
    it), else the field's ``Field(description=...)``, else "".

    Examples
    --------
    >>> from ptyscope.config import PropagatorConfig
    >>> doc = field_docs(PropagatorConfig)["fit_tilt"]
    >>> doc.annotation, doc.default, doc.required
    ('"off" | "global" | "map"', 'off', False)
    """
    comments = _field_comments(model)
    docs = {}
    for name, info in model.model_fields.items():
        required = info.is_required()
        docs[name] = FieldDoc(
            name=name,
            annotation=_describe_field(info),
            default=MISSING if required else _default(info),
            required=required,
            description=comments.get(name, "") or (info.description or ""),
        )
    return docs


def reference_markdown(model: type[pydantic.BaseModel], *, title: str) -> str:
    """The Markdown reference of a config file described by ``model``.

    A level-1 heading ``title`` and the model's docstring, then one level-2 section per
    TOML table (top-level keys first, then ``[section]``, recursing into nested models as
    ``[section.sub]``), each with a table of key, type, default and meaning (which ends
    with the unit the name carries, ``[Å]``, unless the description already gives it).
    """
    parts = [f"# {title}", ""]
    doc = model_doc(model)
    if doc:
        parts += [doc, ""]
    for section, section_model, optional in _sections(model, ()):
        rows = [d for d in field_docs(section_model).values() if not _is_table(d, section_model)]
        if section:
            parts += [f"## `[{'.'.join(section)}]`", ""]
            doc = model_doc(section_model)
            if doc:
                parts += [doc, ""]
            if optional:
                parts += ["Optional: leave the table out for none.", ""]
        elif rows:
            parts += ["## Top-level keys", ""]
        if rows:
            parts += _table(rows)
    return "\n".join(parts).rstrip() + "\n"


# -- reading the ``#:`` comments ---------------------------------------------------------


def _field_comments(model: type[pydantic.BaseModel]) -> dict[str, str]:
    """``{field: comment}`` for the model and its bases (the subclass wins)."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
            if cls.__module__.startswith("pydantic."):
                continue
            comments.update(_class_comments(cls))
    return comments


def _class_comments(cls: type) -> dict[str, str]:
    """The ``#:`` lines directly above each annotated assignment in the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (built in a REPL, frozen): no comments
        return {}
    lines: dict[int, str] = {}
    full_line: set[int] = set()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for token in tokens:
        if token.type == tokenize.COMMENT and token.string.startswith("#:"):
            row, col = token.start
            lines[row] = token.string[2:].strip()
            if not token.line[:col].strip():
                full_line.add(row)
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    comments = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        row = node.lineno - 1
        while row in full_line:
            above.append(lines[row])
            row -= 1
        text = " ".join(reversed(above))
        if not text and node.end_lineno is not None and node.end_lineno in lines:
            text = lines[node.end_lineno]  # a trailing ``x: int = 1  #: comment``
        if text:
            comments[node.target.id] = text
    return comments


# -- readable types ----------------------------------------------------------------------


def _describe_field(info: FieldInfo) -> str:
    return _describe(info.annotation, list(info.metadata))


def _describe(annotation: object, constraints: list[object] | None = None) -> str:
    """A readable type: ``float > 0``, ``(int >= 1, int >= 1)``, ``"a" | "b"``, ``path``."""
    constraints = list(constraints or [])
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        inner, *extra = args
        for item in extra:
            constraints += item.metadata if isinstance(item, FieldInfo) else [item]
        return _describe(inner, constraints)
    if origin is typing.Literal:
        return " | ".join(_literal(value) for value in args)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_describe(arg, constraints) for arg in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"({_describe(args[0])}, ...)"
        return "(" + ", ".join(_describe(arg) for arg in args) + ")"
    if origin is dict:
        return f"{{{_describe(args[0])}: {_describe(args[1])}}}"
    if origin in (list, set, frozenset):
        return f"[{_describe(args[0])}, ...]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        if issubclass(annotation, pydantic.BaseModel):
            return "table"
        name = "path" if issubclass(annotation, PurePath) else annotation.__name__
        return _constrained(name, constraints)
    return str(annotation).replace("typing.", "")


def _constrained(name: str, constraints: list[object]) -> str:
    """``float`` + [Gt(0), Le(1)] → ``float in (0, 1]``; + [Ge(1)] → ``int >= 1``."""
    lower: tuple[str, str, object] | None = None
    upper: tuple[str, str, object] | None = None
    for item in constraints:
        if isinstance(item, annotated_types.Gt):
            lower = ("(", ">", item.gt)
        elif isinstance(item, annotated_types.Ge):
            lower = ("[", ">=", item.ge)
        elif isinstance(item, annotated_types.Lt):
            upper = (")", "<", item.lt)
        elif isinstance(item, annotated_types.Le):
            upper = ("]", "<=", item.le)
    if lower and upper:
        return f"{name} in {lower[0]}{lower[2]}, {upper[2]}{upper[0]}"
    bound = lower or upper
    return f"{name} {bound[1]} {bound[2]}" if bound else name


def _literal(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _default(info: FieldInfo) -> object:
    if info.default_factory is not None:
        return info.get_default(call_default_factory=True, validated_data={})
    return info.default


# -- the Markdown reference --------------------------------------------------------------


def _nested_model(annotation: object) -> tuple[type[pydantic.BaseModel] | None, bool]:
    """The model a field holds (a TOML table), and whether the table may be left out."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        models = [a for a in args if isinstance(a, type) and issubclass(a, pydantic.BaseModel)]
        if len(models) == 1 and len(args) == 2 and type(None) in args:
            return models[0], True
    return None, False


def _is_table(doc: FieldDoc, model: type[pydantic.BaseModel]) -> bool:
    return _nested_model(model.model_fields[doc.name].annotation)[0] is not None


def _sections(
    model: type[pydantic.BaseModel], prefix: tuple[str, ...], optional: bool = False
) -> list[tuple[tuple[str, ...], type[pydantic.BaseModel], bool]]:
    """(TOML section path, its model, optional) for the model and every nested model."""
    found = [(prefix, model, optional)]
    for name, info in model.model_fields.items():
        nested, maybe = _nested_model(info.annotation)
        if nested is not None:
            found += _sections(nested, (*prefix, name), maybe)
    return found


def _table(rows: list[FieldDoc]) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for doc in rows:
        meaning = doc.description
        symbol = unit(doc.name)
        if symbol and f"[{symbol}" not in meaning:  # the unit, unless the text gives it
            meaning = f"{meaning} [{symbol}]" if meaning else f"[{symbol}]"
        default = "*required*" if doc.required else _toml(doc.default)
        cells = [f"`{doc.name}`", _cell(doc.annotation), default, _cell(meaning)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _toml(value: object) -> str:
    """A default as it would be written in TOML, in a code span (unset: *unset*)."""
    if value is None:
        return "*unset*"
    return f"`{_cell(toml_value(value))}`"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (one line, pipes escaped)."""
    return " ".join(text.split()).replace("|", "\\|")
