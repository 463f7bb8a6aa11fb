"""Tokenizer (HF `tokenizers`, from tokenizer.json), special tokens and the chat template."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _token_str(v: Any) -> Optional[str]:
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


class TokenizerInfo:
    """The tokenizer plus what tokenizer_config.json says about it."""

    @classmethod
    def from_parts(cls, tokenizer: Any, config: Dict[str, Any], chat_template: Optional[str]) -> "TokenizerInfo":
        """A tokenizer built elsewhere (from a GGUF file's metadata) with its tokenizer_config fields."""
        info = cls.__new__(cls)
        info.tokenizer = tokenizer
        info.config = dict(config)
        info.bos_token = _token_str(config.get("bos_token"))
        info.eos_token = _token_str(config.get("eos_token"))
        info.chat_template = chat_template
        return info

    def __init__(self, model_dir: str):
        self.tokenizer = None
        self.config: Dict[str, Any] = {}
        path = os.path.join(model_dir, "tokenizer.json")
        if os.path.exists(path):
            from tokenizers import Tokenizer

            try:
                self.tokenizer = Tokenizer.from_file(path)
            except Exception as e:  # the tokenizers library raises its own exception type
                raise ValueError(f"{path}: cannot read the tokenizer ({e})") from None
            # as transformers does per call: no padding or truncation unless asked for
            self.tokenizer.no_padding()
            self.tokenizer.no_truncation()
        cfg_path = os.path.join(model_dir, "tokenizer_config.json")
        if os.path.exists(cfg_path):
            self.config = _read_json(cfg_path)
        self.bos_token = _token_str(self.config.get("bos_token"))
        self.eos_token = _token_str(self.config.get("eos_token"))
        self.chat_template = self._template(self.config.get("chat_template"))
        jinja_path = os.path.join(model_dir, "chat_template.jinja")
        if self.chat_template is None and os.path.exists(jinja_path):
            with open(jinja_path, encoding="utf-8") as f:
                self.chat_template = f.read()

    @staticmethod
    def _template(t: Any) -> Optional[str]:
        if isinstance(t, str):
            return t
        if isinstance(t, list):  # [{"name": "default", "template": "..."}, ...]
            named = {e.get("name"): e.get("template") for e in t if isinstance(e, dict)}
            return named.get("default") or next(iter(named.values()), None)
        return None

    def token_id(self, token: Optional[str]) -> Optional[int]:
        if token is None or self.tokenizer is None:
            return None
        return self.tokenizer.token_to_id(token)

    def require(self) -> Any:
        if self.tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer.json: pass token ids instead of text")
        return self.tokenizer

    def truncating(self, limit: int) -> Any:
        """A copy of the tokenizer that cuts what it encodes to limit tokens (a pair: the longer text first, as
        transformers' truncation=True), keeping the special tokens; made once per limit."""
        cached = getattr(self, "_truncating", None)
        if cached is None or cached[0] != limit:
            from tokenizers import Tokenizer

            t = Tokenizer.from_str(self.require().to_str())
            t.enable_truncation(limit)
            cached = self._truncating = (limit, t)
        return cached[1]

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        try:
            return self.require().encode(text, add_special_tokens=add_special_tokens).ids
        except (TypeError, UnicodeEncodeError) as e:  # lone surrogates and the like
            raise ValueError(f"prompt: not valid Unicode text ({e})") from None

    def decode(self, ids: List[int]) -> str:
        return self.require().decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: List[Dict[str, Any]], add_generation_prompt: bool = True,
                            tools: Optional[List[Dict[str, Any]]] = None) -> str:
        if not self.chat_template:
            raise ValueError("this checkpoint has no chat_template in tokenizer_config.json")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ValueError("messages: expected a list of {'role': ..., 'content': ...} dicts")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(msg):
            raise ValueError(f"chat template: {msg}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
            tools=tools,
        )


class StreamDecoder:
    """Turns a growing list of token ids into text pieces that never split a UTF-8 character, and holds
    back any tail that could still become one of the stop strings."""

    def __init__(self, info: TokenizerInfo, stop: List[str]):
        self.info = info
        self.stop = [s for s in stop if s]
        self.emitted = 0  # characters of text already handed out
        self.text = ""
        self.stopped = False

    def update(self, ids: List[int], final: bool = False) -> str:
        """The next piece of text after ids grew. final: the generation ended (emit everything left)."""
        text = self.info.decode(ids)
        out = self.text[: self.emitted]
        if not text.startswith(out):
            # the decoder rewrote text already streamed (a byte-fallback run turned invalid by a later byte):
            # what was streamed stays, the rest of the new text continues after it
            text = out + text[len(out):]
        self.text = text
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:  # the earliest stop string wins, whichever comes first in the list
            self.text = text[: max(min(hits), self.emitted)]  # (what was streamed is never taken back)
            self.stopped = True
        end = len(self.text)
        if not final and not self.stopped:
            # a replacement character may still become a real one (or several): hold it and what follows
            bad = self.text.find("\ufffd", self.emitted)
            if bad >= 0:
                end = bad
            # and hold back a tail that could still grow into a stop string
            hold = 0
            for s in self.stop:
                for k in range(min(len(s) - 1, end), 0, -1):
                    if self.text[end - k : end] == s[:k]:
                        hold = max(hold, k)
                        break
            end -= hold
        piece = self.text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece

