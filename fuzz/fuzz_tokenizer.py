#!/usr/bin/env python3
"""Fuzz text in and out: arbitrary bytes / str through a small tokenizer (tokenizer.json files this
harness makes with the tokenizers library and loads with edgeformer.tokenizer.TokenizerInfo, as a checkpoint
directory's), encode and decode, and edgeformer.tokenizer.StreamDecoder fed the growing prefixes of the ids
exactly as Model.generate feeds it (stop strings included).

Input layout (no FuzzedDataProvider, so that replaying needs no atheris):
    byte 0: tokenizer (% 3: byte-level BPE, SentencePiece-style BPE with byte fallback, WordPiece) and
            mode (// 3 % 4: encode the text; ids from the raw bytes; encode + raw ids appended; the text
            decoded with surrogateescape, i.e. a str holding lone surrogates)
    byte 1: number of stop strings (% 4); bytes 2-7: where in the decoded text they are cut from
    the rest: the text (UTF-8, errors replaced) or the raw ids (little-endian uint16, modulo vocab + 8)

Findings: any exception (but a ValueError from encoding a str with lone surrogates: every other str is a
valid prompt, and decode takes any id); the pieces joined differ from the decoder's text; without a stop, that text differs from decode(ids);
with stops, the text holds a stop string, or is not the decoded text cut at the earliest stop.

    python fuzz/fuzz_tokenizer.py --make-seeds          # writes fuzz/corpus/tokenizer/
    python fuzz/fuzz_tokenizer.py fuzz/corpus/tokenizer -max_total_time=60
"""

from __future__ import annotations

import json
import os
import sys
from typing import List

from edgeformer.tokenizer import StreamDecoder, TokenizerInfo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "tokenizer"
TEXT = ("The quick brown fox jumps over the lazy dog. Don't stop: it's 12.5% off! A journey of a thousand miles "
        "begins with a single step. Unicode: café, naïve, 日本語, emoji 🙂, Ελληνικά.  Tabs\tand\nnewlines. <s> ok")
KINDS = ("bytelevel", "spm", "wordpiece")
_TOKS = {}


def _write(d: str, tok, config: dict) -> TokenizerInfo:
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return TokenizerInfo(d)  # the project's loader, as edgeformer.load uses it


def _bytelevel(d):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT] * 4, tr)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return _write(d, tok, {"bos_token": "<s>", "eos_token": "</s>"})


def _spm(d):
    """LLaMA-2 style: "\u2581" for spaces, BPE with byte fallback, the decoder strips one leading space."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    norm = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t0 = Tokenizer(models.BPE())
    t0.normalizer = norm
    t0.train_from_iterator([TEXT] * 4, trainers.BpeTrainer(vocab_size=120, show_progress=False))
    data = json.loads(t0.to_str())
    trained = data["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t in sorted(trained, key=trained.get):
        vocab.setdefault(t, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = norm
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return _write(d, tok, {"bos_token": "<s>", "eos_token": "</s>"})


def _wordpiece(d):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.train_from_iterator([TEXT] * 4, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return _write(d, tok, {"cls_token": "[CLS]", "sep_token": "[SEP]"})


def tokenizer(kind: str) -> TokenizerInfo:
    if kind not in _TOKS:
        _TOKS[kind] = {"bytelevel": _bytelevel, "spm": _spm, "wordpiece": _wordpiece}[kind](common.scratch(kind))
    return _TOKS[kind]


def decode_input(data: bytes):
    """(kind, ids or None, text, stop cut positions, mode) for an input."""
    head, rest = (data[:8] + bytes(8))[:8], data[8:]
    kind = KINDS[head[0] % 3]
    mode = head[0] // 3 % 4
    text = rest.decode("utf-8", "surrogateescape" if mode == 3 else "replace")
    cuts = [(head[2 + 2 * i], head[3 + 2 * i] % 6 + 1) for i in range(head[1] % 4)]
    return kind, mode, text, rest, cuts


def _run(data: bytes) -> None:
    kind, mode, text, rest, cuts = decode_input(data)
    info = tokenizer(kind)
    V = info.tokenizer.get_vocab_size()
    if mode == 1:
        ids = [int.from_bytes(rest[i:i + 2], "little") % (V + 8) for i in range(0, len(rest) - 1, 2)]
    else:
        try:
            ids = info.encode(text)
        except ValueError:
            if mode == 3:  # a str with lone surrogates is not valid Unicode: a ValueError is the contract
                common.feature(kind, "rejected")
                return
            raise  # any other text is valid
        if mode == 2:
            ids = ids + [b % (V + 8) for b in rest[:8]]
    full = info.decode(ids)
    if not isinstance(full, str):
        raise common.Finding(f"decode returned {type(full).__name__}")
    stops: List[str] = []
    for a, n in cuts:  # stop strings cut from the text, so that they do occur
        if full:
            a %= len(full)
            stops.append(full[a:a + n])
    common.feature(kind, mode, len(stops), common.bucket(len(ids)), common.bucket(len(full)))
    dec = StreamDecoder(info, stops)
    pieces = []
    k = 0
    for k in range(1, len(ids) + 1):  # as Model._generate: one token at a time, then a final update
        pieces.append(dec.update(ids[:k]))
        if dec.stopped:
            break
    if not dec.stopped:
        pieces.append(dec.update(ids, final=True))
    joined = "".join(pieces)
    common.feature(kind, "stopped" if dec.stopped else "ran out", sum(1 for p in pieces if p))
    if joined != dec.text:
        raise common.Finding(f"StreamDecoder pieces joined {joined!r:.200} differ from its text {dec.text!r:.200} "
                             f"(ids {ids[:40]}, stops {stops})")
    live = [s for s in stops if s]
    if not dec.stopped:
        # streamed text is never taken back: where the decoder rewrote what was already streamed (a byte-
        # fallback run made invalid by a later byte), the text is what was streamed, then the rest of decode()
        before = "".join(pieces[:-1])
        if not full.startswith(before):
            full = before + full[len(before):]
        if dec.text != full:
            raise common.Finding(f"StreamDecoder text {dec.text!r:.200} differs from decode(ids) {full!r:.200} "
                                 f"(ids {ids[:40]}, stops {stops})")
        return
    consumed = info.decode(ids[:k])
    before = "".join(pieces[:-1])  # streamed text is never taken back (see above)
    if not consumed.startswith(before):
        consumed = before + consumed[len(before):]
    earliest = min(i for i in (consumed.find(s) for s in live) if i >= 0)
    cut = max(earliest, len(before))  # a stop inside text already streamed cannot take it back
    if dec.text != consumed[:cut] or (cut == earliest and any(s in dec.text for s in live)):
        raise common.Finding(f"StreamDecoder stopped with text {dec.text!r:.200}; the text before the earliest "
                             f"stop is {consumed[:cut]!r:.200} (stops {stops}, ids {ids[:40]})")


def check(data: bytes) -> None:
    _run(data)  # no ValueError allowed either, but for lone surrogates (inside _run)


def make_seeds(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    texts = {
        "plain": TEXT.encode(),
        "cjk_emoji": "日本語のテキスト 🙂🙂 naïve café".encode(),
        "specials": b"<s></s>[CLS] hello [SEP]<unk> <0x41>",
        "whitespace": b"  a  \t\n\n   b ",
        "wordpiece_cleanup": b"a ' b do n't it 's you 're . ! ?",
        "broken_utf8": b"ab\xe6\x97cd\xf0\x9f\x99 e\xff",
        "empty": b"",
    }
    n = 0
    for name, t in texts.items():
        for kind in range(3):
            mode = 0  # mode 3 (lone surrogates) is left to the fuzzer: it is a known finding
            nstops = 0 if name == "wordpiece_cleanup" else (n % 3) + (1 if name == "plain" else 0)
            head = bytes([kind + 3 * mode, nstops, 5, 2, 17, 1, 40, 3])
            with open(os.path.join(out_dir, f"{name}_{KINDS[kind]}"), "wb") as f:
                f.write(head + t)
            n += 1
    for kind in range(3):  # raw ids, including some past the vocabulary
        ids = [1, 2, 0, 5, 300, 40, 41, 3, 287, 290, 65535, 7]
        with open(os.path.join(out_dir, f"raw_ids_{KINDS[kind]}"), "wb") as f:
            f.write(bytes([kind + 3, 1, 0, 2, 0, 0, 0, 0]) + b"".join(i.to_bytes(2, "little") for i in ids))


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-seeds"]:
        make_seeds(os.path.join(common.CORPUS_DIR, NAME))
    else:
        for k in KINDS:
            tokenizer(k)  # built once, before fuzzing
        common.fuzz_main(NAME, check)
