"""Constrained generation: grammars (llama.cpp's GBNF), JSON, and JSON Schema.

A Grammar restricts each generation step to the tokens whose bytes keep the text a prefix of a sentence of the
grammar (the automaton runs in C++, `cpp/src/model/grammar.cc`); the end token is allowed once the text is a
whole sentence, and a generation whose grammar allows nothing more ends at once (finish_reason "stop").
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple, Union

from . import _core

__all__ = ["Grammar", "JSON_GBNF", "json_schema_to_gbnf"]

# Any JSON value: whitespace bounded (one space, or a newline and up to 20 spaces or tabs of indentation)
# and numbers of at most 20 digits before the point and 24 after it, so that a model cannot loop on them forever
_JSON_RULES = r'''
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array  ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" char* "\""
char   ::= [^"\\\x00-\x1F\x7F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= integer ( "." [0-9]{1,24} )? ( [eE] [-+]? [0-9]{1,3} )?
integer ::= "-"? ( "0" | [1-9] [0-9]{0,19} )
boolean ::= "true" | "false"
null   ::= "null"
ws     ::= ( " " | "\n" [ \t]{0,20} )?
'''

JSON_GBNF = "root ::= ws object\n" + _JSON_RULES.strip() + "\n"  # OpenAI's JSON mode: one JSON object


class Grammar:
    """A grammar in llama.cpp's GBNF notation, parsed and checked (ValueError names the line and column):
    rules `name ::= ...`, "literals", [character classes], `.`, groups, `|`, * + ? {m} {m,} {m,n}, # comments.
    The text generated must be a sentence of the rule `root`.

        g = Grammar('root ::= "yes" | "no"')
        g = Grammar.json()                        # any JSON object (OpenAI's JSON mode)
        g = Grammar.from_json_schema({"type": "object", "properties": {"name": {"type": "string"}}})
        model.generate(prompt, grammar=g)
    """

    def __init__(self, gbnf: str, root: str = "root"):
        if not isinstance(gbnf, str):
            raise ValueError(f"grammar: expected GBNF text (a string), got {type(gbnf).__name__}")
        if not isinstance(root, str) or not root:
            raise ValueError("grammar: the root rule's name must be a non-empty string")
        self.gbnf = gbnf
        self.root = root
        self._rules = _core.GrammarRules(gbnf, root)

    @classmethod
    def json(cls) -> "Grammar":
        """One JSON object, as OpenAI's response_format {"type": "json_object"} asks for."""
        return cls(JSON_GBNF)

    @classmethod
    def from_json_schema(cls, schema: Union[Dict[str, Any], bool, str]) -> "Grammar":
        """The JSON values a JSON Schema describes (a dict, or its JSON text); see json_schema_to_gbnf."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise ValueError(f"json_schema: not valid JSON ({e})") from None
        return cls(json_schema_to_gbnf(schema))

    def __repr__(self) -> str:
        return f"Grammar({self.gbnf!r})" if len(self.gbnf) < 200 else f"Grammar(<{len(self.gbnf)} characters>)"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Grammar) and (self.gbnf, self.root) == (other.gbnf, other.root)

    def __hash__(self) -> int:
        return hash((self.gbnf, self.root))


def as_grammar(g: Any, what: str = "grammar") -> Optional[Grammar]:
    """generate()'s grammar argument: None, a Grammar, or GBNF text."""
    if g is None or isinstance(g, Grammar):
        return g
    if isinstance(g, str):
        return Grammar(g)
    raise ValueError(f"argument '{what}' must be a Grammar or GBNF text, got {type(g).__name__}")


# ---- a tokenizer's token bytes ----------------------------------------------------------------------------------

def _byte_decoder() -> Dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character standing for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _decoder_steps(d: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    if not isinstance(d, dict):
        return []
    if d.get("type") == "Sequence":
        return [s for x in d.get("decoders", []) for s in _decoder_steps(x)]
    return [d]


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_bytes(tokenizer: Any, vocab_size: int) -> Tuple[List[bytes], bool]:
    """(the bytes each token id adds to decoded text, b"" for special and unknown ids; whether decoding drops
    the text's first space). From the tokenizer's vocabulary and its decoder's steps (byte-level, SentencePiece's
    "▁" and <0xHH> byte tokens); whatever else a decoder does is taken from decoding the token alone."""
    spec = json.loads(tokenizer.to_str())
    steps = _decoder_steps(spec.get("decoder"))
    kinds = {s.get("type") for s in steps}
    byte_level = "ByteLevel" in kinds
    byte_fallback = "ByteFallback" in kinds
    spm = "Metaspace" in kinds or any(s.get("type") == "Replace" and s.get("content") == " " for s in steps)
    special = {a["id"] for a in spec.get("added_tokens", []) if a.get("special")}
    added = {a["id"]: a["content"] for a in spec.get("added_tokens", []) if not a.get("special")}
    bd = _byte_decoder() if byte_level else {}
    out: List[bytes] = [b""] * vocab_size
    for i in range(vocab_size):
        if i in special:
            continue
        s = tokenizer.id_to_token(i)
        if s is None:
            continue
        if i in added:
            out[i] = added[i].encode("utf-8")
        elif byte_level and all(c in bd for c in s):
            out[i] = bytes(bd[c] for c in s)
        elif byte_fallback and _BYTE_TOKEN.fullmatch(s):
            out[i] = bytes([int(s[3:5], 16)])
        elif spm:
            out[i] = s.replace("\u2581", " ").encode("utf-8")
        else:
            out[i] = tokenizer.decode([i], skip_special_tokens=False).encode("utf-8")
    # does decoding drop the first space? (SentencePiece decoders strip the one they had added)
    strip = False
    for i, b in enumerate(out):
        if len(b) >= 2 and b[:1] == b" " and b[1:2] not in (b" ", b"\n") and b[1] < 0x80:
            strip = not tokenizer.decode([i], skip_special_tokens=False).startswith(" ")
            break
    return out, strip


# ---- JSON Schema --------------------------------------------------------------------------------------------------

_MAX_COUNT = 1_000_000  # the largest repetition count the GBNF parser takes (cpp/src/model/grammar.cc)
_BUILTIN = {"root"} | set(re.findall(r"^(\S+) +::=", _JSON_RULES, re.M))  # rule names the converter's own rules take
_IGNORED = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "format", "minimum",
            "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "readOnly", "writeOnly", "deprecated",
            "strict", "uniqueItems", "contentEncoding", "contentMediaType"}
_REFUSED = {"pattern", "patternProperties", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
            "propertyNames", "contains", "unevaluatedProperties", "unevaluatedItems", "minProperties", "maxProperties"}


def _literal(s: str) -> str:
    """A GBNF string literal matching s exactly."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class _SchemaConverter:
    def __init__(self, root: Any):
        self.root = root
        self.rules: Dict[str, str] = {}
        self.refs: Dict[str, str] = {}

    def add(self, name: str, body: str) -> str:
        base, k = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "r", 0
        n = base
        while n in _BUILTIN or (n in self.rules and self.rules[n] != body):
            k += 1
            n = f"{base}-{k}"
        self.rules[n] = body
        return n

    def resolve(self, ref: str, path: str) -> str:
        if not isinstance(ref, str):
            raise ValueError(f"json_schema at {path}: '$ref' must be a string (#/...), got {type(ref).__name__}")
        if ref in self.refs:
            return self.refs[ref]
        if not ref.startswith("#"):
            raise ValueError(f"json_schema at {path}: only references within the schema (#/...) are supported, got {ref!r}")
        node: Any = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise ValueError(f"json_schema at {path}: the reference {ref!r} names nothing in the schema")
        # reserved first (a schema may refer to itself), under a body no other rule has
        name = self.add("ref-" + ref.split("/")[-1], f"<pending {ref}>")
        self.refs[ref] = name
        self.rules[name] = self.visit(node, ref)
        return name

    def visit(self, s: Any, path: str) -> str:
        """A GBNF expression for the values schema s accepts."""
        if s is True or s == {}:
            return "value"
        if s is False:
            raise ValueError(f"json_schema at {path}: the schema false accepts no value")
        if not isinstance(s, dict):
            raise ValueError(f"json_schema at {path}: expected an object (a schema), got {type(s).__name__}")
        bad = sorted(set(s) & _REFUSED)
        if bad:
            raise ValueError(f"json_schema at {path}: {bad[0]!r} is not supported")
        if "$ref" in s:
            return self.resolve(s["$ref"], path)
        if "const" in s:
            return _literal(json.dumps(s["const"], ensure_ascii=False, separators=(",", ":")))
        if "enum" in s:
            if not isinstance(s["enum"], list) or not s["enum"]:
                raise ValueError(f"json_schema at {path}: 'enum' must be a non-empty list")
            return "(" + " | ".join(_literal(json.dumps(v, ensure_ascii=False, separators=(",", ":")))
                                    for v in s["enum"]) + ")"
        for key in ("anyOf", "oneOf"):
            if key in s:
                alts = s[key]
                if not isinstance(alts, list) or not alts:
                    raise ValueError(f"json_schema at {path}: {key!r} must be a non-empty list")
                rest = {k: v for k, v in s.items() if k != key}
                return "(" + " | ".join(self.visit({**rest, **a} if isinstance(a, dict) else a, f"{path}/{key}/{i}")
                                        for i, a in enumerate(alts)) + ")"
        if "allOf" in s:
            parts = s["allOf"]
            if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
                raise ValueError(f"json_schema at {path}: 'allOf' must be a list of schemas")
            merged = {k: v for k, v in s.items() if k != "allOf"}
            for p in parts:
                p = self._deref(p, path)
                for k, v in p.items():
                    if k == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **v}
                    elif k == "required":
                        merged["required"] = list(merged.get("required", [])) + [r for r in v if r not in merged.get("required", [])]
                    elif k in merged and merged[k] != v and k not in _IGNORED:
                        raise ValueError(f"json_schema at {path}: 'allOf' parts disagree on {k!r}")
                    else:
                        merged[k] = v
            return self.visit(merged, path)
        t = s.get("type")
        if isinstance(t, list):
            if not t:
                raise ValueError(f"json_schema at {path}: 'type' is an empty list")
            return "(" + " | ".join(self.visit({**s, "type": x}, path) for x in t) + ")"
        if t is None:
            if "properties" in s or "additionalProperties" in s or "required" in s:
                t = "object"
            elif "items" in s or "prefixItems" in s:
                t = "array"
            else:
                return "value"
        if t == "object":
            return self.object(s, path)
        if t == "array":
            return self.array(s, path)
        if t == "string":
            return self.string(s, path)
        if t == "integer":
            lo = s.get("minimum", s.get("exclusiveMinimum"))
            return '("0" | [1-9] [0-9]{0,19})' if isinstance(lo, (int, float)) and lo >= 0 else "integer"
        if t == "number":
            return "number"
        if t == "boolean":
            return "boolean"
        if t == "null":
            return "null"
        raise ValueError(f"json_schema at {path}: unknown type {t!r}")

    def _deref(self, s: Any, path: str) -> Dict[str, Any]:
        seen = 0
        while isinstance(s, dict) and "$ref" in s and seen < 32:
            ref = s["$ref"]
            node: Any = self.root
            for part in [p for p in str(ref)[1:].split("/") if p]:
                node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ValueError(f"json_schema at {path}: the reference {ref!r} names no schema")
            s, seen = node, seen + 1
        return s

    @staticmethod
    def bounds(s: Dict[str, Any], path: str, lo_key: str, hi_key: str):
        """A count's bounds, checked. A maximum past what the grammar's repetitions take (_MAX_COUNT) is no bound:
        no generation reaches it; a minimum past it cannot be met."""
        lo, hi = s.get(lo_key, 0), s.get(hi_key)
        for k, v in ((lo_key, lo), (hi_key, hi)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"json_schema at {path}: {k!r} must be a non-negative integer")
        if hi is not None and hi < lo:
            raise ValueError(f"json_schema at {path}: {hi_key!r} below {lo_key!r}")
        if lo > _MAX_COUNT:
            raise ValueError(f"json_schema at {path}: {lo_key!r} {lo} is more than {_MAX_COUNT} (the most a grammar "
                             "repeats)")
        return lo, None if hi is not None and hi > _MAX_COUNT else hi

    def string(self, s: Dict[str, Any], path: str) -> str:
        lo, hi = self.bounds(s, path, "minLength", "maxLength")
        if lo == 0 and hi is None:
            return "string"
        rep = f"{{{lo},}}" if hi is None else f"{{{lo},{hi}}}"
        return f'"\\"" char{rep} "\\""'

    def array(self, s: Dict[str, Any], path: str) -> str:
        lo, hi = self.bounds(s, path, "minItems", "maxItems")
        prefix = s.get("prefixItems")
        items = s.get("items", True)
        if isinstance(items, list):  # draft 4-7 tuples
            prefix, items = items, s.get("additionalItems", True)
        if prefix is not None:
            if not isinstance(prefix, list):
                raise ValueError(f"json_schema at {path}: 'prefixItems' must be a list")
            parts = [self.add(f"{path}-item{i}", self.visit(p, f"{path}/prefixItems/{i}")) for i, p in enumerate(prefix)]
            body = ' ws "," ws '.join(parts)
            if items is not False:
                more = self.add(f"{path}-more", self.visit(items, f"{path}/items"))
                body = f'{body} ( ws "," ws {more} )*' if parts else f'( {more} ( ws "," ws {more} )* )?'
            return f'"[" ws {body} ws "]"' if parts else f'"[" ws {body} ws "]"'
        item = self.add(f"{path}-item", self.visit(items, f"{path}/items"))
        if hi == 0:
            return '"[" ws "]"'
        if lo == 0:
            rest = "*" if hi is None else f"{{0,{hi - 1}}}"
            return f'"[" ws ( {item} ( ws "," ws {item} ){rest} )? ws "]"'
        rest = f"{{{lo - 1},}}" if hi is None else f"{{{lo - 1},{hi - 1}}}"
        return f'"[" ws {item} ( ws "," ws {item} ){rest} ws "]"'

    def object(self, s: Dict[str, Any], path: str) -> str:
        props = s.get("properties", {})
        if not isinstance(props, dict):
            raise ValueError(f"json_schema at {path}: 'properties' must be an object")
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError(f"json_schema at {path}: 'required' must be a list of property names")
        missing = [r for r in required if r not in props]
        extra = s.get("additionalProperties", None if props else True)
        if missing and extra in (None, False):
            raise ValueError(f"json_schema at {path}: required property {missing[0]!r} is not among 'properties'")
        if not props:
            if extra is False:
                return '"{" ws "}"'
            val = "value" if extra in (True, None) else self.add(f"{path}-value", self.visit(extra, f"{path}/additionalProperties"))
            kv = self.add(f"{path}-kv", f'string ws ":" ws {val}')
            return f'"{{" ws ( {kv} ( ws "," ws {kv} )* )? ws "}}"'
        if extra not in (None, False):
            raise ValueError(f"json_schema at {path}: 'additionalProperties' beside 'properties' is not supported "
                             "(the object's properties are the listed ones)")
        names = list(props)
        kvs = [self.add(f"{path}-{n}-kv", f'{_literal(json.dumps(n, ensure_ascii=False))} ws ":" ws '
                        f'{self.visit(props[n], f"{path}/properties/{n}")}') for n in names]
        # rest(k, first): the members from the k-th on, in the listed order; the optional ones may be left out
        memo: Dict[Tuple[int, bool], str] = {}

        def rest(k: int, first: bool) -> str:
            if k == len(names):
                return ""
            if (k, first) in memo:
                return memo[(k, first)]
            lead = "" if first else '"," ws '
            after = rest(k + 1, False)
            take = f"{lead}{kvs[k]} ws {after}".strip()
            if names[k] in required:
                body = take
            else:
                skip = rest(k + 1, first)
                body = f"( {take} ) | ( {skip} )" if skip else f"( {take} )?"
            name = self.add(f"{path}-rest{k}{'f' if first else ''}", body)
            memo[(k, first)] = name
            return name

        return f'"{{" ws {rest(0, True)} "}}"'

    def grammar(self) -> str:
        root = self.visit(self.root, "#")
        lines = [f"root ::= ws {root}"]
        lines += [f"{n} ::= {b}" for n, b in self.rules.items()]
        return "\n".join(lines) + "\n" + _JSON_RULES.strip() + "\n"


def json_schema_to_gbnf(schema: Union[Dict[str, Any], bool]) -> str:
    """A GBNF grammar for the JSON values that schema describes. Supported: type (one or a list), properties
    (in their listed order; those not in `required` may be left out; no others), additionalProperties (a map
    without properties), items / prefixItems, minItems / maxItems, minLength / maxLength, enum, const, anyOf /
    oneOf, allOf (merged), $ref within the schema (recursion too), and integer's minimum >= 0 (no sign). Not
    enforced: format and the other numeric bounds. Refused (ValueError): pattern and the other keywords whose
    values a grammar of this converter cannot keep to."""
    try:
        return _SchemaConverter(schema).grammar()
    except RecursionError:
        raise ValueError("json_schema: nested too deeply") from None
