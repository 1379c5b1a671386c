"""Render a Helm chart without helm: the Go-template subset the AIOS chart uses.

`helm` cannot be installed on the machines that develop and test this project, so the chart
is rendered here by a small, strict implementation of Go's text/template plus the Sprig/Helm
functions the chart calls. It follows Helm's rules where they matter for manifests:

- values: the chart's values.yaml, overridden by the caller's values (maps merge deeply,
  `null` removes a key), validated against values.schema.json; numbers behave as Helm's
  float64 values (`{{ 3 }}` prints "3", 1000000 prints "1e+06", toYaml writes integers);
- subcharts under charts/: rendered with their own values.yaml overridden by the parent's
  `<subchart>:` values plus `global`; skipped when the dependency's `condition` is false;
- `define`d templates are shared by the parent and its subcharts; files starting with `_`
  only define; NOTES.txt is rendered separately;
- a missing map key is nil (prints nothing); a field of nil is an error, as in helm;
- `lookup` finds nothing (as `helm template` without a cluster) and `randAlphaNum` is random.

Supported: actions with `{{-`/`-}}` trimming and comments; `if`/`else if`/`else`, `range`
(lists, maps in key order, integers; one or two variables; `else`), `with` (and `else`),
`define`, `template`, `include`; variables (`$`, `$x := ...`, `$x = ...`) with Go's scoping;
pipelines and parenthesised expressions with field access; the functions in FUNCTIONS. Any
other function or construct is an error naming the template and line, never a silent guess.

Library: `render_chart(chart_dir, values) -> {template path: text}`, `render_manifests(...)`
-> list of objects. CLI (like `helm template`):

    python deploy/helm/render.py deploy/helm/aios [-f values.yaml] [--set a.b=c]
        [--name RELEASE] [--namespace NS] [--upgrade] [--show-only templates/x.yaml] [--notes]
"""

from __future__ import annotations

import argparse
import base64
import copy
import decimal
import hashlib
import json
import re
import secrets
import string
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_INCLUDE_DEPTH = 1000  # as helm: a recursive include is an error, not a hang


class RenderError(Exception):
    """The chart cannot be rendered with these values (what helm would also refuse)."""


# ---------------------------------------------------------------------------- lexing ----
@dataclass
class _Token:
    kind: str  # "text" | "action" | "comment"
    value: str
    line: int
    ltrim: bool = False
    rtrim: bool = False


def _lex(source: str, name: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start < 0:
            tokens.append(_Token("text", source[pos:], source.count("\n", 0, pos) + 1))
            break
        tokens.append(_Token("text", source[pos:start], source.count("\n", 0, pos) + 1))
        line = source.count("\n", 0, start) + 1
        inner_start = start + 2
        ltrim = source.startswith("- ", inner_start) or source.startswith("-\n", inner_start)
        if ltrim:
            inner_start += 1
        body = source[inner_start:].lstrip(" \t\r\n")
        if body.startswith("/*"):
            end_comment = source.find("*/", inner_start)
            if end_comment < 0:
                raise RenderError(f"{name}:{line}: unclosed comment")
            close = re.compile(r"\s*(-\s*)?\}\}").match(source, end_comment + 2)
            if not close:
                raise RenderError(f"{name}:{line}: comment must end with */}}}}")
            rtrim = close.group(1) is not None
            tokens.append(_Token("comment", "", line, ltrim, rtrim))
            pos = close.end()
            continue
        end = _find_action_end(source, inner_start, name, line)
        inner = source[inner_start:end]
        rtrim = bool(re.search(r"\s-$", inner)) or inner == "-"
        if rtrim:
            inner = inner[:-1]
        tokens.append(_Token("action", inner.strip(), line, ltrim, rtrim))
        pos = end + 2
    # Apply trimming to the neighbouring text.
    for i, tok in enumerate(tokens):
        if tok.kind == "text":
            continue
        if tok.ltrim and i > 0 and tokens[i - 1].kind == "text":
            tokens[i - 1].value = tokens[i - 1].value.rstrip(" \t\r\n")
        if tok.rtrim and i + 1 < len(tokens) and tokens[i + 1].kind == "text":
            tokens[i + 1].value = tokens[i + 1].value.lstrip(" \t\r\n")
    return tokens


def _find_action_end(source: str, pos: int, name: str, line: int) -> int:
    quote: str | None = None
    i = pos
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"`'":
            quote = ch
        elif source.startswith("}}", i):
            return i
        i += 1
    raise RenderError(f"{name}:{line}: unclosed action")


_EXPR_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?|\.\d+))
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<variable>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_CHAIN = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _tokenize_expr(text: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _EXPR_TOKEN.match(text, pos)
        if not match:
            raise RenderError(f"{where}: cannot parse {text[pos:]!r}")
        kind = match.lastgroup or ""
        value = match.group()
        pos = match.end()
        if kind == "ws":
            continue
        if kind in {"variable", "rparen"}:
            # `$x.a.b` and `(expr).a` carry a field chain right after them.
            chain = _CHAIN.match(text, pos)
            if chain:
                out.append((kind, value))
                out.append(("chain", chain.group()))
                pos = chain.end()
                continue
        out.append((kind, value))
    return out


# ---------------------------------------------------------------------------- parsing ---
@dataclass
class _Pipeline:
    commands: list[list[Any]]  # each command: list of operands
    declare: list[str] = field(default_factory=list)  # `$a := ...` / `$a, $b := ...`
    assign: bool = False  # `$a = ...`


@dataclass
class _Node:
    kind: str  # text | action | if | range | with | template
    line: int
    text: str = ""
    pipe: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)
    name: str = ""
    src: str = ""  # the file the node comes from (a define's file, not the includer's)


class _Parser:
    def __init__(self, tokens: list[_Token], name: str, defines: dict[str, list[_Node]]):
        self.tokens = tokens
        self.i = 0
        self.name = name
        self.defines = defines

    def where(self, line: int) -> str:
        return f"{self.name}:{line}"

    def parse(self) -> list[_Node]:
        nodes, stop = self._block(top=True)
        if stop is not None:
            raise RenderError(f"{self.where(stop.line)}: unexpected {{{{{stop.value}}}}}")
        for body in [nodes, *self.defines.values()]:
            _mark_source(body, self.name)
        return nodes

    def _block(self, top: bool = False) -> tuple[list[_Node], _Token | None]:
        nodes: list[_Node] = []
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            self.i += 1
            if tok.kind == "text":
                if tok.value:
                    nodes.append(_Node("text", tok.line, text=tok.value))
                continue
            if tok.kind == "comment":
                continue
            word = tok.value.split(None, 1)[0] if tok.value else ""
            rest = tok.value[len(word) :].strip()
            if word in {"end", "else"}:
                if top:
                    raise RenderError(f"{self.where(tok.line)}: unexpected {{{{{tok.value}}}}}")
                return nodes, tok
            if word in {"if", "with"}:
                nodes.append(self._conditional(word, rest, tok.line))
            elif word == "range":
                nodes.append(self._range(rest, tok.line))
            elif word == "define":
                name = self._string_arg(rest, tok.line)
                body, stop = self._block()
                if stop is None or stop.value != "end":
                    raise RenderError(f"{self.where(tok.line)}: define {name!r} has no end")
                self.defines[name] = body
            elif word == "template":
                parts = _tokenize_expr(rest, self.where(tok.line))
                if not parts or parts[0][0] not in {"string", "raw"}:
                    raise RenderError(f"{self.where(tok.line)}: template needs a name")
                name = _literal(*parts[0])
                pipe = self._pipeline_from(parts[1:], tok.line) if len(parts) > 1 else None
                nodes.append(_Node("template", tok.line, name=name, pipe=pipe))
            elif word in {"block", "break", "continue"}:
                raise RenderError(f"{self.where(tok.line)}: {word!r} is not supported")
            else:
                nodes.append(_Node("action", tok.line, pipe=self._pipeline(tok.value, tok.line)))
        return nodes, None

    def _conditional(self, word: str, rest: str, line: int) -> _Node:
        node = _Node(word, line, pipe=self._pipeline(rest, line))
        node.body, stop = self._block()
        if stop is None:
            raise RenderError(f"{self.where(line)}: {word} has no end")
        if stop.value == "end":
            return node
        # else / else if / else with
        tail = stop.value[len("else") :].strip()
        if tail:
            sub_word = tail.split(None, 1)[0]
            if sub_word != word:
                raise RenderError(f"{self.where(stop.line)}: 'else {sub_word}' inside {word}")
            node.orelse = [self._conditional(word, tail[len(sub_word) :].strip(), stop.line)]
            return node
        node.orelse, stop = self._block()
        if stop is None or stop.value != "end":
            raise RenderError(f"{self.where(line)}: {word} ... else has no end")
        return node

    def _range(self, rest: str, line: int) -> _Node:
        node = _Node("range", line, pipe=self._pipeline(rest, line))
        node.body, stop = self._block()
        if stop is None:
            raise RenderError(f"{self.where(line)}: range has no end")
        if stop.value == "else":
            node.orelse, stop = self._block()
        if stop is None or stop.value != "end":
            raise RenderError(f"{self.where(line)}: range has no end")
        return node

    def _string_arg(self, rest: str, line: int) -> str:
        parts = _tokenize_expr(rest, self.where(line))
        if len(parts) != 1 or parts[0][0] not in {"string", "raw"}:
            raise RenderError(f"{self.where(line)}: expected one quoted name")
        return _literal(*parts[0])

    def _pipeline(self, text: str, line: int) -> _Pipeline:
        return self._pipeline_from(_tokenize_expr(text, self.where(line)), line)

    def _pipeline_from(self, parts: list[tuple[str, str]], line: int) -> _Pipeline:
        declare: list[str] = []
        assign = False
        # `$a := `, `$a, $b := `, `$a = `
        for j, (kind, _value) in enumerate(parts[:4]):
            if kind in {"declare", "assign"}:
                names = [v for k, v in parts[:j] if k == "variable"]
                if not names or any(k not in {"variable", "comma"} for k, _ in parts[:j]):
                    raise RenderError(f"{self.where(line)}: bad variable declaration")
                declare, assign, parts = names, kind == "assign", parts[j + 1 :]
                break
        pipe = _Pipeline(self._commands(parts, line), declare, assign)
        if not pipe.commands:
            raise RenderError(f"{self.where(line)}: empty pipeline")
        return pipe

    def _commands(self, parts: list[tuple[str, str]], line: int) -> list[list[Any]]:
        commands: list[list[Any]] = [[]]
        depth = 0
        group: list[tuple[str, str]] = []
        j = 0
        while j < len(parts):
            kind, value = parts[j]
            if depth:
                if kind == "lparen":
                    depth += 1
                elif kind == "rparen":
                    depth -= 1
                    if depth == 0:
                        chain = None
                        if j + 1 < len(parts) and parts[j + 1][0] == "chain":
                            chain = parts[j + 1][1]
                            j += 1
                        sub = _Pipeline(self._commands(group, line))
                        commands[-1].append(("paren", sub, chain))
                        group = []
                        j += 1
                        continue
                group.append((kind, value))
            elif kind == "lparen":
                depth = 1
            elif kind == "rparen":
                raise RenderError(f"{self.where(line)}: unbalanced ')'")
            elif kind == "pipe":
                commands.append([])
            elif kind == "variable":
                chain = None
                if j + 1 < len(parts) and parts[j + 1][0] == "chain":
                    chain = parts[j + 1][1]
                    j += 1
                commands[-1].append(("var", value, chain))
            elif kind in {"string", "raw", "char", "number"}:
                commands[-1].append(("lit", _literal(kind, value)))
            elif kind == "field":
                commands[-1].append(("field", value))
            elif kind == "dot":
                commands[-1].append(("dot",))
            elif kind == "ident":
                if value in {"true", "false"}:
                    commands[-1].append(("lit", value == "true"))
                elif value == "nil":
                    commands[-1].append(("lit", None))
                else:
                    commands[-1].append(("func", value))
            else:
                raise RenderError(f"{self.where(line)}: unexpected {value!r}")
            j += 1
        if depth:
            raise RenderError(f"{self.where(line)}: unbalanced '('")
        if any(not c for c in commands):
            raise RenderError(f"{self.where(line)}: empty command in pipeline")
        return commands


def _mark_source(nodes: list[_Node], name: str) -> None:
    for node in nodes:
        if not node.src:
            node.src = name
            _mark_source(node.body, name)
            _mark_source(node.orelse, name)


def _literal(kind: str, value: str) -> Any:
    if kind == "string":
        return (
            json.loads(value)
            if "\\x" not in value
            else value[1:-1].encode().decode("unicode_escape")
        )
    if kind == "raw":
        return value[1:-1]
    if kind == "char":
        return ord(value[1:-1].encode().decode("unicode_escape"))
    if kind == "number":
        if re.fullmatch(r"-?0[xX][0-9a-fA-F]+", value):
            return int(value, 16)
        if re.fullmatch(r"-?\d+", value):
            return int(value)
        return float(value)
    raise RenderError(f"not a literal: {value}")


# ------------------------------------------------------------------- Go value helpers ----
def _truth(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | dict | tuple):
        return len(value) > 0
    return True


def _go_float(value: float) -> str:
    """fmt's %v of a float64: shortest digits, exponent form outside [1e-4, 1e6)."""
    if value != value or value in (float("inf"), float("-inf")):
        return {True: "NaN"}.get(value != value, "+Inf" if value > 0 else "-Inf")
    if value == 0:
        return "0"
    dec = decimal.Decimal(repr(value))
    sign, digits, exponent = dec.as_tuple()
    digits_str = "".join(map(str, digits)).rstrip("0") or "0"
    exp10 = len("".join(map(str, digits))) + int(exponent) - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits_str[0] + ("." + digits_str[1:] if len(digits_str) > 1 else "")
        return f"{'-' if sign else ''}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"
    text = format(dec, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _strval(value: Any) -> str:
    """What Go's fmt %v (and Sprig's strval) makes of a value."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        inner = " ".join(f"{k}:{_strval(value[k])}" for k in sorted(value))
        return f"map[{inner}]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_strval(v) for v in value) + "]"
    return str(value)


def _empty(value: Any) -> bool:
    return not _truth(value)


def _go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    return {
        bool: "bool",
        int: "int",
        float: "float64",
        str: "string",
        dict: "map[string]interface {}",
        list: "[]interface {}",
    }.get(type(value), type(value).__name__)


def _to_plain(value: Any) -> Any:
    """The JSON round trip helm's toYaml/toJson make: integral floats become integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


class _GoStyleEmitter(yaml.emitter.Emitter):
    """Quotes with double quotes where PyYAML would use single ones, as go-yaml does."""

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


class _GoStyleDumper(
    _GoStyleEmitter,
    yaml.serializer.Serializer,
    yaml.representer.SafeRepresenter,
    yaml.resolver.Resolver,
):
    def __init__(self, stream: Any, **kwargs: Any) -> None:
        _GoStyleEmitter.__init__(
            self,
            stream,
            canonical=kwargs.get("canonical"),
            indent=kwargs.get("indent"),
            width=kwargs.get("width"),
            allow_unicode=kwargs.get("allow_unicode"),
            line_break=kwargs.get("line_break"),
        )
        yaml.serializer.Serializer.__init__(
            self,
            encoding=kwargs.get("encoding"),
            explicit_start=kwargs.get("explicit_start"),
            explicit_end=kwargs.get("explicit_end"),
            version=kwargs.get("version"),
            tags=kwargs.get("tags"),
        )
        yaml.representer.SafeRepresenter.__init__(
            self,
            default_style=kwargs.get("default_style"),
            default_flow_style=kwargs.get("default_flow_style", False),
            sort_keys=kwargs.get("sort_keys", True),
        )
        yaml.resolver.Resolver.__init__(self)


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    text = yaml.dump(
        _to_plain(value),
        Dumper=_GoStyleDumper,
        default_flow_style=False,
        sort_keys=True,
        width=2**31,
        allow_unicode=True,
    )
    if text.endswith("\n...\n"):  # a bare scalar document
        text = text[: -len("...\n")]
    return text.rstrip("\n")


def _values_numbers(value: Any) -> Any:
    """Helm reads values through JSON: every number is a float64."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _values_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_values_numbers(v) for v in value]
    return value


# ------------------------------------------------------------------------- functions ----
def _fn_default(default: Any, *given: Any) -> Any:
    if not given or _empty(given[0]):
        return default
    return given[0]


def _fn_quote(*args: Any) -> str:
    return " ".join(json.dumps(_strval(a), ensure_ascii=False) for a in args if a is not None)


def _fn_squote(*args: Any) -> str:
    return " ".join(f"'{_strval(a)}'" for a in args if a is not None)


def _fn_indent(spaces: Any, text: Any) -> str:
    pad = " " * int(spaces)
    return pad + _strval(text).replace("\n", "\n" + pad)


def _fn_nindent(spaces: Any, text: Any) -> str:
    return "\n" + _fn_indent(spaces, text)


def _fn_required(message: Any, value: Any = None) -> Any:
    if value is None or (isinstance(value, str) and value == ""):
        raise RenderError(_strval(message))
    return value


def _fn_fail(message: Any) -> Any:
    raise RenderError(_strval(message))


def _fn_trunc(count: Any, text: Any) -> str:
    text, count = _strval(text), int(count)
    if count < 0 and len(text) + count > 0:
        return text[len(text) + count :]
    if count >= 0 and len(text) > count:
        return text[:count]
    return text


def _fn_printf(fmt: Any, *args: Any) -> str:
    fmt = _strval(fmt)
    out: list[str] = []
    queue = list(args)
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        verb = fmt[i + 1] if i + 1 < len(fmt) else ""
        i += 2
        if verb == "%":
            out.append("%")
            continue
        if not queue:
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = queue.pop(0)
        if verb == "v":
            out.append(_strval(arg))
        elif verb == "s":
            out.append(arg if isinstance(arg, str) else f"%!s({_go_type(arg)}={_strval(arg)})")
        elif verb == "d":
            ok = isinstance(arg, int) and not isinstance(arg, bool)
            out.append(str(arg) if ok else f"%!d({_go_type(arg)}={_strval(arg)})")
        elif verb == "q":
            out.append(json.dumps(_strval(arg), ensure_ascii=False))
        else:
            raise RenderError(f"printf verb %{verb} is not supported")
    if queue:
        out.append("%!(EXTRA " + ", ".join(f"{_go_type(a)}={_strval(a)}" for a in queue) + ")")
    return "".join(out)


def _fn_print(*args: Any) -> str:
    # fmt.Sprint: a space between operands when neither side is a string.
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += _strval(arg)
    return out


def _compare(name: str, a: Any, b: Any) -> None:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if type(a) is not type(b):
            raise RenderError(f"{name}: incompatible types for comparison")
    elif isinstance(a, numeric) and isinstance(b, numeric) and type(a) is not type(b):
        raise RenderError(f"{name}: incompatible types for comparison ({a!r}, {b!r})")


def _fn_eq(first: Any, *others: Any) -> bool:
    for other in others:
        if first is not None and other is not None:
            _compare("eq", first, other)
        if first == other:
            return True
    return False


def _fn_ne(a: Any, b: Any) -> bool:
    return not _fn_eq(a, b)


def _ordered(name: str, op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        _compare(name, a, b)
        return op(a, b)

    return compare


def _fn_dict(*pairs: Any) -> dict:
    if len(pairs) % 2:
        pairs = (*pairs, "")
    return {_strval(pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}


def _fn_get(mapping: Any, key: Any) -> Any:
    if not isinstance(mapping, dict):
        raise RenderError(f"get: not a map: {_go_type(mapping)}")
    return mapping.get(_strval(key), "")


def _fn_index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, dict):
            item = item.get(_strval(key))
        elif isinstance(item, list | tuple | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise RenderError(f"index: cannot index slice with {_go_type(key)}")
            if not 0 <= key < len(item):
                raise RenderError(f"index: index out of range: {key}")
            item = item[key]
        elif item is None:
            raise RenderError("index of untyped nil")
        else:
            raise RenderError(f"index: can't index item of type {_go_type(item)}")
    return item


def _fn_has_key(mapping: Any, key: Any) -> bool:
    return isinstance(mapping, dict) and _strval(key) in mapping


def _fn_append(items: Any, value: Any) -> list:
    if not isinstance(items, list | tuple):
        raise RenderError(f"append: cannot append to {_go_type(items)}")
    return [*items, value]


def _fn_join(sep: Any, items: Any) -> str:
    if isinstance(items, str):
        return items
    return _strval(sep).join(_strval(i) for i in (items or []) if i is not None)


def _fn_ternary(true_value: Any, false_value: Any, condition: Any) -> Any:
    return true_value if _truth(condition) else false_value


def _fn_coalesce(*values: Any) -> Any:
    for value in values:
        if not _empty(value):
            return value
    return None


def _fn_len(value: Any) -> int:
    if value is None or not hasattr(value, "__len__"):
        raise RenderError(f"len of {_go_type(value)}")
    return len(value)


def _fn_to_json(value: Any) -> str:
    return json.dumps(_to_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fn_rand_alpha_num(count: Any) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(int(count)))


def _fn_lookup(api_version: Any, kind: Any, namespace: Any, name: Any) -> dict:
    return {}  # `helm template` has no cluster to look in: lookup finds nothing


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
    "not": lambda a: not _truth(a),
    "eq": _fn_eq,
    "ne": _fn_ne,
    "lt": _ordered("lt", lambda a, b: a < b),
    "le": _ordered("le", lambda a, b: a <= b),
    "gt": _ordered("gt", lambda a, b: a > b),
    "ge": _ordered("ge", lambda a, b: a >= b),
    "len": _fn_len,
    "index": _fn_index,
    "print": _fn_print,
    "printf": _fn_printf,
    "default": _fn_default,
    "empty": _empty,
    "coalesce": _fn_coalesce,
    "ternary": _fn_ternary,
    "required": _fn_required,
    "fail": _fn_fail,
    "quote": _fn_quote,
    "squote": _fn_squote,
    "toString": _strval,
    "toYaml": _to_yaml,
    "toJson": _fn_to_json,
    "indent": _fn_indent,
    "nindent": _fn_nindent,
    "trunc": _fn_trunc,
    "trim": lambda s: _strval(s).strip(),
    "trimSuffix": lambda suffix, s: _strval(s).removesuffix(_strval(suffix)),
    "trimPrefix": lambda prefix, s: _strval(s).removeprefix(_strval(prefix)),
    "lower": lambda s: _strval(s).lower(),
    "upper": lambda s: _strval(s).upper(),
    "replace": lambda old, new, s: _strval(s).replace(_strval(old), _strval(new)),
    "contains": lambda sub, s: _strval(sub) in _strval(s),
    "hasPrefix": lambda prefix, s: _strval(s).startswith(_strval(prefix)),
    "hasSuffix": lambda suffix, s: _strval(s).endswith(_strval(suffix)),
    "b64enc": lambda s: base64.b64encode(_strval(s).encode()).decode(),
    "b64dec": lambda s: base64.b64decode(_strval(s)).decode(),
    "sha256sum": lambda s: hashlib.sha256(_strval(s).encode()).hexdigest(),
    "list": lambda *items: list(items),
    "append": _fn_append,
    "join": _fn_join,
    "dict": _fn_dict,
    "get": _fn_get,
    "hasKey": _fn_has_key,
    "int": lambda v: int(float(v)) if v not in (None, "") else 0,
    "randAlphaNum": _fn_rand_alpha_num,
    "lookup": _fn_lookup,
}


# ------------------------------------------------------------------------ evaluation ----
@dataclass
class _Scope:
    root: Any
    frames: list[dict[str, Any]]

    def lookup(self, name: str, where: str) -> Any:
        if name == "$":
            return self.root
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise RenderError(f"{where}: undefined variable {name}")

    def set(self, name: str, value: Any, where: str) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise RenderError(f"{where}: undefined variable {name}")


class _Renderer:
    def __init__(self, defines: dict[str, list[_Node]], name: str):
        self.defines = defines
        self.name = name
        self.depth = 0

    def render(self, nodes: list[_Node], dot: Any, scope: _Scope) -> str:
        out: list[str] = []
        for node in nodes:
            self._node(node, dot, scope, out)
        return "".join(out)

    def _where(self, node: _Node) -> str:
        return f"{node.src or self.name}:{node.line}"

    def _node(self, node: _Node, dot: Any, scope: _Scope, out: list[str]) -> None:
        where = self._where(node)
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "action":
            value = self._pipeline(node.pipe, dot, scope, where)
            if not node.pipe.declare:
                out.append(_strval(value))
        elif node.kind in {"if", "with"}:
            scope.frames.append({})
            try:
                value = self._pipeline(node.pipe, dot, scope, where)
                if _truth(value):
                    out.append(self.render(node.body, value if node.kind == "with" else dot, scope))
                else:
                    out.append(self.render(node.orelse, dot, scope))
            finally:
                scope.frames.pop()
        elif node.kind == "range":
            self._range(node, dot, scope, out, where)
        elif node.kind == "template":
            data = self._pipeline(node.pipe, dot, scope, where) if node.pipe else None
            out.append(self.include(node.name, data, where))

    def _range(self, node: _Node, dot: Any, scope: _Scope, out: list[str], where: str) -> None:
        pipe = node.pipe
        names = pipe.declare
        pipe_value = self._pipeline(_Pipeline(pipe.commands), dot, scope, where)
        if pipe_value is None:
            items: list[tuple[Any, Any]] = []
        elif isinstance(pipe_value, dict):
            items = [(k, pipe_value[k]) for k in sorted(pipe_value)]
        elif isinstance(pipe_value, list | tuple):
            items = list(enumerate(pipe_value))
        elif isinstance(pipe_value, int) and not isinstance(pipe_value, bool):
            items = [(i, i) for i in range(pipe_value)]
        else:
            raise RenderError(f"{where}: range can't iterate over {_strval(pipe_value)}")
        if not items:
            out.append(self.render(node.orelse, dot, scope))
            return
        for key, item in items:
            frame: dict[str, Any] = {}
            if len(names) == 1:
                frame[names[0]] = item
            elif len(names) == 2:
                frame[names[0]], frame[names[1]] = key, item
            scope.frames.append(frame)
            try:
                out.append(self.render(node.body, item, scope))
            finally:
                scope.frames.pop()

    def include(self, name: str, data: Any, where: str) -> str:
        body = self.defines.get(name)
        if body is None:
            raise RenderError(f"{where}: no template {name!r}")
        self.depth += 1
        if self.depth > MAX_INCLUDE_DEPTH:
            raise RenderError(f"{where}: include of {name!r} nested too deeply")
        try:
            return self.render(body, data, _Scope(root=data, frames=[{}]))
        finally:
            self.depth -= 1

    def _pipeline(self, pipe: _Pipeline, dot: Any, scope: _Scope, where: str) -> Any:
        value: Any = None
        for index, command in enumerate(pipe.commands):
            # Each later command gets the previous result as its last argument, nil included.
            value = self._command(command, dot, scope, where, piped=index > 0, value=value)
        if pipe.declare:
            if pipe.assign:
                scope.set(pipe.declare[0], value, where)
            elif len(pipe.declare) == 1:
                scope.frames[-1][pipe.declare[0]] = value
            else:
                raise RenderError(f"{where}: two variables only in range")
        return value

    def _command(
        self, command: list[Any], dot: Any, scope: _Scope, where: str, *, piped: bool, value: Any
    ) -> Any:
        head = command[0]
        if head[0] == "func":
            args = [self._operand(op, dot, scope, where) for op in command[1:]]
            if piped:
                args.append(value)
            return self._call(head[1], args, where)
        if len(command) > 1 or piped:
            raise RenderError(f"{where}: can't give arguments to a non-function")
        return self._operand(head, dot, scope, where)

    def _call(self, name: str, args: list[Any], where: str) -> Any:
        if name in {"include", "tpl"}:
            if name == "tpl":
                raise RenderError(f"{where}: tpl is not supported")
            if len(args) != 2:
                raise RenderError(f"{where}: include needs a name and a value")
            return self.include(_strval(args[0]), args[1], where)
        function = FUNCTIONS.get(name)
        if function is None:
            raise RenderError(f'{where}: function "{name}" not defined')
        try:
            return function(*args)
        except RenderError as exc:
            raise RenderError(f"{where}: {exc}") from None
        except TypeError as exc:
            raise RenderError(f"{where}: wrong arguments for {name}: {exc}") from None

    def _operand(self, op: tuple, dot: Any, scope: _Scope, where: str) -> Any:
        kind = op[0]
        if kind == "lit":
            return op[1]
        if kind == "dot":
            return dot
        if kind == "field":
            return self._fields(dot, op[1], where)
        if kind == "var":
            value = scope.lookup(op[1], where)
            return self._fields(value, op[2], where) if op[2] else value
        if kind == "paren":
            value = self._pipeline(op[1], dot, scope, where)
            return self._fields(value, op[2], where) if op[2] else value
        if kind == "func":
            return self._call(op[1], [], where)
        raise RenderError(f"{where}: cannot evaluate {op!r}")

    @staticmethod
    def _fields(value: Any, chain: str, where: str) -> Any:
        for name in chain.strip(".").split("."):
            if isinstance(value, dict):
                value = value.get(name)
            elif value is None:
                raise RenderError(f"{where}: nil pointer evaluating interface {{}}.{name}")
            else:
                raise RenderError(f"{where}: can't evaluate field {name} in type {_go_type(value)}")
        return value


# --------------------------------------------------------------------------- charts -----
@dataclass
class Chart:
    """A chart directory: metadata, default values, templates, subcharts."""

    path: Path
    metadata: dict[str, Any]
    values: dict[str, Any]
    schema: dict[str, Any] | None
    templates: dict[str, str]  # path relative to the chart, e.g. "templates/web.yaml"
    subcharts: dict[str, Chart]

    @classmethod
    def load(cls, path: str | Path) -> Chart:
        path = Path(path)
        chart_file = path / "Chart.yaml"
        if not chart_file.is_file():
            raise RenderError(f"{path}: no Chart.yaml")
        metadata = yaml.safe_load(chart_file.read_text()) or {}
        values_file = path / "values.yaml"
        values = (yaml.safe_load(values_file.read_text()) or {}) if values_file.is_file() else {}
        schema_file = path / "values.schema.json"
        schema = json.loads(schema_file.read_text()) if schema_file.is_file() else None
        templates = {
            str(p.relative_to(path)): p.read_text()
            for p in sorted((path / "templates").rglob("*"))
            if p.is_file()
        }
        subcharts = {}
        charts_dir = path / "charts"
        if charts_dir.is_dir():
            for sub in sorted(charts_dir.iterdir()):
                if (sub / "Chart.yaml").is_file():
                    chart = cls.load(sub)
                    subcharts[chart.metadata["name"]] = chart
        for dep in metadata.get("dependencies") or []:
            if dep.get("name") not in subcharts:
                raise RenderError(
                    f"{path}: dependency {dep.get('name')!r} is missing in charts/ "
                    "(run `helm dependency build`)"
                )
        return cls(path, metadata, values, schema, templates, subcharts)


def merge_values(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Helm's coalescing: maps merge deeply, anything else replaces, null deletes."""
    result = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_values(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _validate_schema(chart: Chart, values: dict[str, Any]) -> None:
    if not chart.schema:
        return
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(chart.schema, jsonschema.Draft7Validator)
    errors = sorted(validator_cls(chart.schema).iter_errors(_to_plain(values)), key=str)
    if errors:
        lines = [
            f"- at '/{'/'.join(str(p) for p in e.absolute_path)}': {e.message}" for e in errors
        ]
        raise RenderError(
            f"values don't meet the specifications of the schema(s) in the following chart(s):\n"
            f"{chart.metadata.get('name')}:\n" + "\n".join(lines)
        )


def _chart_object(metadata: dict[str, Any]) -> dict[str, Any]:
    keys = {
        "name": "Name",
        "version": "Version",
        "appVersion": "AppVersion",
        "description": "Description",
        "type": "Type",
        "apiVersion": "APIVersion",
        "kubeVersion": "KubeVersion",
        "keywords": "Keywords",
    }
    return {target: metadata.get(source) for source, target in keys.items()}


def _condition_enabled(condition: str | None, values: dict[str, Any]) -> bool:
    if not condition:
        return True
    for path in condition.split(","):
        node: Any = values
        for part in path.strip().split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool):
            return node
    return True


@dataclass
class _Unit:
    prefix: str  # "aios/" or "aios/charts/postgresql/"
    chart: Chart
    values: dict[str, Any]


def _units(chart: Chart, values: dict[str, Any], prefix: str) -> Iterator[_Unit]:
    yield _Unit(prefix, chart, values)
    deps = {d["name"]: d for d in chart.metadata.get("dependencies") or []}
    for name, sub in chart.subcharts.items():
        if not _condition_enabled(deps.get(name, {}).get("condition"), values):
            continue
        sub_values = merge_values(_values_numbers(sub.values), values.get(name) or {})
        sub_values["global"] = merge_values(sub_values.get("global") or {}, values.get("global"))
        _validate_schema(sub, sub_values)
        yield from _units(sub, sub_values, f"{prefix}charts/{name}/")


def render_chart(
    chart_dir: str | Path,
    values: dict[str, Any] | None = None,
    *,
    release_name: str = "aios",
    namespace: str = "default",
    is_upgrade: bool = False,
    revision: int = 1,
    include_notes: bool = False,
    kube_version: str = "v1.34.0",
) -> dict[str, str]:
    """Render every template of the chart (and enabled subcharts) like `helm template`.

    Returns {"<chart>/templates/x.yaml": text} for templates that are not partials (and
    NOTES.txt when include_notes). Raises RenderError for what helm would refuse.
    """
    chart = Chart.load(chart_dir)
    root_values = merge_values(_values_numbers(chart.values), _values_numbers(values or {}))
    root_values.setdefault("global", {})
    for name, sub in chart.subcharts.items():
        # helm coalesces a subchart's defaults (and the globals) into the parent's values.
        root_values[name] = merge_values(_values_numbers(sub.values), root_values.get(name) or {})
        root_values[name]["global"] = merge_values(
            root_values[name].get("global") or {}, root_values["global"]
        )
    _validate_schema(chart, root_values)
    release = {
        "Name": release_name,
        "Namespace": namespace,
        "Service": "Helm",
        "IsInstall": not is_upgrade,
        "IsUpgrade": is_upgrade,
        "Revision": revision,
    }
    major, minor = [*re.findall(r"\d+", kube_version), "0", "0"][:2]
    capabilities = {
        "KubeVersion": {"Version": kube_version, "Major": major, "Minor": minor},
        "APIVersions": [],
    }
    units = list(_units(chart, root_values, f"{chart.metadata['name']}/"))
    defines: dict[str, list[_Node]] = {}
    parsed: list[tuple[str, list[_Node], _Unit]] = []
    # Parse every template first: defines are global across the parent and its subcharts.
    for unit in units:
        for rel, source in unit.chart.templates.items():
            name = unit.prefix + rel
            nodes = _Parser(_lex(source, name), name, defines).parse()
            parsed.append((name, nodes, unit))
    rendered: dict[str, str] = {}
    for name, nodes, unit in parsed:
        base = Path(name).name
        if base.startswith("_"):
            continue
        is_notes = base == "NOTES.txt"
        if is_notes and (not include_notes or unit.chart is not chart):
            continue
        if not is_notes and not base.endswith((".yaml", ".yml", ".tpl", ".json")):
            continue
        root = {
            "Values": unit.values,
            "Release": release,
            "Chart": _chart_object(unit.chart.metadata),
            "Capabilities": capabilities,
            "Template": {"Name": name, "BasePath": unit.prefix + "templates"},
        }
        text = _Renderer(defines, name).render(nodes, root, _Scope(root=root, frames=[{}]))
        rendered[name] = text.replace("<no value>", "")
    return rendered


def split_documents(text: str) -> list[dict[str, Any]]:
    """The objects of a rendered template (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_manifests(chart_dir: str | Path, values: dict[str, Any] | None = None, **kw: Any):
    """Every object the chart renders, in template order (hooks included)."""
    objects: list[dict[str, Any]] = []
    for name, text in render_chart(chart_dir, values, **kw).items():
        if name.endswith("NOTES.txt"):
            continue
        try:
            objects.extend(split_documents(text))
        except yaml.YAMLError as exc:
            raise RenderError(f"{name}: rendered text is not YAML: {exc}") from None
    return objects


# ------------------------------------------------------------------------------ CLI -----
def _parse_set(assignment: str) -> dict[str, Any]:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise RenderError(f"--set expects key=value, got {assignment!r}")
    value: Any = yaml.safe_load(raw) if raw else ""
    if isinstance(value, dict | list) or (isinstance(value, str) and raw != value):
        value = raw
    result: dict[str, Any] = {}
    node = result
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="render.py", description="Render a chart like `helm template`, without helm."
    )
    parser.add_argument("chart")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--name", default="aios")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--upgrade", action="store_true")
    parser.add_argument("--show-only", action="append", default=[])
    parser.add_argument("--notes", action="store_true", help="print NOTES.txt only")
    args = parser.parse_args(argv)
    try:
        values: dict[str, Any] = {}
        for path in args.values:
            values = merge_values(values, yaml.safe_load(Path(path).read_text()) or {})
        for assignment in args.set:
            values = merge_values(values, _parse_set(assignment))
        rendered = render_chart(
            args.chart,
            values,
            release_name=args.name,
            namespace=args.namespace,
            is_upgrade=args.upgrade,
            include_notes=args.notes,
        )
    except (RenderError, OSError, yaml.YAMLError) as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    for name, text in rendered.items():
        if args.notes:
            if name.endswith("NOTES.txt"):
                sys.stdout.write(text.strip() + "\n")
            continue
        if args.show_only and not any(name.endswith(s) for s in args.show_only):
            continue
        if text.strip():
            sys.stdout.write(f"---\n# Source: {name}\n{text.strip(chr(10))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
