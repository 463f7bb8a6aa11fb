"""Function calling (OpenAI's `tools`): the tool list the chat template renders, the grammar that forces a call
(tool_choice "required" or a named function), and the tool calls read back from a reply.

A reply's calls are recognized in the forms chat models are trained to write them in: Hermes / Qwen's
`<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks, Mistral's `[TOOL_CALLS] [{...}, ...]`, and a reply
that is nothing but one JSON object (or a list of them) with a "name" and "arguments" (or Llama 3.1's
"parameters"), after an optional `<|python_tag|>`. Only functions the request named count as calls.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Dict, List, Optional, Tuple

from .grammar import Grammar

__all__ = ["check_tools", "tool_choice", "forced_grammar", "parse_tool_calls", "template_messages"]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def check_tools(tools: Any, what: str = "tools") -> List[Dict[str, Any]]:
    """OpenAI's tool list, checked: [{"type": "function", "function": {"name", "description"?, "parameters"?}}]."""
    if not isinstance(tools, list) or not tools:
        raise ValueError(f"argument '{what}': expected a non-empty list of tools")
    out, seen = [], set()
    for i, t in enumerate(tools):
        f = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(f, dict):
            raise ValueError(f"argument '{what}[{i}]': expected {{'type': 'function', 'function': {{...}}}}")
        name = f.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"argument '{what}[{i}].function.name': expected 1-64 letters, digits, '_', '.' or '-'")
        if name in seen:
            raise ValueError(f"argument '{what}[{i}].function.name': {name!r} twice")
        seen.add(name)
        params = f.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise ValueError(f"argument '{what}[{i}].function.parameters': expected a JSON Schema object")
        out.append({"type": "function", "function": {**f, "parameters": params}})
    return out


def tool_choice(choice: Any, tools: List[Dict[str, Any]], what: str = "tool_choice") -> Tuple[str, Optional[str]]:
    """("none" | "auto" | "required", the forced function's name or None)."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice or "auto", None
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name not in [t["function"]["name"] for t in tools]:
            raise ValueError(f"argument '{what}': no tool named {name!r}")
        return "required", name
    raise ValueError(f"argument '{what}': expected 'none', 'auto', 'required' or "
                     "{'type': 'function', 'function': {'name': ...}}")


def forced_grammar(tools: List[Dict[str, Any]], only: Optional[str] = None) -> Grammar:
    """One call, as a JSON object {"name": ..., "arguments": {...}} whose arguments the function's parameters
    schema accepts (of the function `only`, when given)."""
    alts = [{"type": "object", "properties": {"name": {"const": t["function"]["name"]},
                                              "arguments": t["function"]["parameters"]},
             "required": ["name", "arguments"]}
            for t in tools if only is None or t["function"]["name"] == only]
    return Grammar.from_json_schema(alts[0] if len(alts) == 1 else {"anyOf": alts})


def template_messages(messages: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Messages as chat templates expect them: an assistant's tool_calls with their arguments as objects
    (OpenAI sends them as JSON text; the templates write them out with tojson)."""
    if not isinstance(messages, list):
        return messages  # (apply_chat_template says what is wrong with it)
    out = []
    for m in messages:
        calls = m.get("tool_calls") if isinstance(m, dict) else None
        if isinstance(calls, list):
            fixed = []
            for c in calls:
                f = dict(c.get("function") or {}) if isinstance(c, dict) else {}
                if isinstance(f.get("arguments"), str):
                    try:
                        f["arguments"] = json.loads(f["arguments"])
                    except json.JSONDecodeError:
                        pass
                fixed.append({**c, "function": f} if isinstance(c, dict) else c)
            m = {**m, "tool_calls": fixed}
        out.append(m)
    return out


def _call(obj: Any, names: set) -> Optional[Dict[str, Any]]:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters"))
    if not isinstance(name, str) or name not in names or not isinstance(args, (dict, str)):
        return None
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
        if not isinstance(args, dict):
            return None
    return {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


def _calls(obj: Any, names: set) -> Optional[List[Dict[str, Any]]]:
    items = obj if isinstance(obj, list) else [obj]
    calls = [_call(o, names) for o in items]
    return calls if calls and all(c is not None for c in calls) else None


_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def parse_tool_calls(text: str, tools: List[Dict[str, Any]]) -> Tuple[Optional[str], List[Dict[str, Any]]]:
    """(the reply's text outside its tool calls, or None when it is only calls; the calls, OpenAI's form with
    ids and JSON-text arguments). No recognizable call to a requested function: (text, [])."""
    names = {t["function"]["name"] for t in tools}
    blocks = _TAGGED.findall(text)
    if blocks:
        calls = []
        for b in blocks:
            try:
                c = _calls(json.loads(b), names)
            except (json.JSONDecodeError, RecursionError):
                c = None
            if c is None:
                return text, []
            calls += c
        rest = _TAGGED.sub("", text).strip()
        return rest or None, calls
    s = text.strip()
    for tag in ("[TOOL_CALLS]", "<|python_tag|>"):
        if s.startswith(tag):
            s = s[len(tag):].strip()
    if s[:1] in ("{", "["):
        try:
            calls = _calls(json.loads(s), names)
        except (json.JSONDecodeError, RecursionError):
            calls = None
        if calls:
            return None, calls
    return text, []
