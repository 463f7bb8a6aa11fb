"""Sequences that share a model's decode steps: a list of prompts generated together (Model.generate with a
list), and continuous batching (Batcher: requests that join and leave a running batch between steps).

Each sequence decodes on a fork of the model (the same weights, a KV cache of its own); a step runs every
running sequence's next token through the model as one forward (_core.decode_batch), so the weights are read
once per step for all of them."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from . import _core
from .model import GenerationResult, _head_split, _prefill_chunks
from .tokenizer import StreamDecoder


class _Seq:
    """One sequence of a batch: its fork, sampler, text decoder and what it has generated. The caller holds
    the model's lock around prefill() and the batch steps."""

    def __init__(self, model, ids: List[int], max_new_tokens: int, opts, stops: List[str], ignore_eos: bool):
        self.model = model
        self.ids = ids
        self.max_new_tokens = max_new_tokens
        # a fork copies no weights and reserves its cache as address space: the cache's memory goes back with it
        self.fork = model._core.fork()
        self.sampler = _core.Sampler(opts)
        self.decoder = StreamDecoder(model._tok, stops) if model._tok.tokenizer is not None else None
        self.eos = set() if ignore_eos else set(model.eos_token_ids)
        self.new: List[int] = []
        self.history = np.asarray(ids, dtype=np.int32)
        self.finish = "length"
        self.pieces: List[str] = []  # text made since the last drain()
        self.done = max_new_tokens <= 0
        self.prefill_seconds = 0.0
        self.t_first = self.t_end = time.perf_counter()

    def prefill(self) -> None:
        """The prompt, and the first new token out of its last position."""
        t0 = time.perf_counter()
        n = _head_split(self.ids)
        _prefill_chunks(self.fork, self.ids[:n])
        tok = self.fork.step(np.asarray(self.ids[n:], dtype=np.int32), self.sampler, self.history)
        self.t_first = time.perf_counter()
        self.prefill_seconds = self.t_first - t0
        self.take(tok)

    def take(self, tok: int) -> None:
        """Records a new token; at the sequence's end, flushes the text a UTF-8 character still held back."""
        if self._alive(tok):
            return
        d = self.decoder
        if d is not None and not d.stopped:
            piece = d.update(self.new, final=True)
            if piece:
                self.pieces.append(piece)
        self.done = True
        self.t_end = time.perf_counter()

    def _alive(self, tok: int) -> bool:
        if tok in self.eos:
            self.finish = "eos"
            return False
        self.new.append(tok)
        self.history = np.append(self.history, np.int32(tok))
        d = self.decoder
        if d is not None:
            piece = d.update(self.new)
            if piece:
                self.pieces.append(piece)
            if d.stopped:
                self.finish = "stop"
                return False
        if len(self.new) >= self.max_new_tokens:
            return False
        if self.fork.n_past + 1 > self.model.max_context:
            self.finish = "context"
            return False
        return True

    def drain(self) -> List[str]:
        out, self.pieces = self.pieces, []
        return out

    def result(self, decode_start: Optional[float] = None) -> GenerationResult:
        """decode_start: when decoding began (default: this sequence's first token)."""
        start = self.t_first if decode_start is None else decode_start
        return GenerationResult(text=self.decoder.text if self.decoder is not None else "", token_ids=self.new,
                                finish_reason=self.finish, prompt_tokens=len(self.ids),
                                prefill_seconds=self.prefill_seconds, decode_seconds=max(0.0, self.t_end - start))


def step(seqs: List[_Seq]) -> None:
    """One decode step for every sequence in seqs (all running): one forward of len(seqs) rows."""
    toks = _core.decode_batch([s.fork for s in seqs], np.asarray([s.new[-1] for s in seqs], np.int32),
                              [s.sampler for s in seqs], [s.history for s in seqs])
    for s, tok in zip(seqs, toks):
        s.take(int(tok))


def generate_together(model, prompts: List[List[int]], max_new_tokens: int, options, stops: List[str],
                      ignore_eos: bool):
    """Model.generate with a list of prompts on the CPU: a generator of (prompt index, text piece) that returns
    the list of results. The prompts are prefilled one by one (bound by arithmetic, not memory), then decode
    together until each ends."""
    with model._lock:
        seqs = [_Seq(model, ids, max_new_tokens, options(), stops, ignore_eos) for ids in prompts]
        for i, s in enumerate(seqs):
            if not s.done:
                s.prefill()
            yield from ((i, p) for p in s.drain())
        t_first = time.perf_counter()
        while True:
            running = [(i, s) for i, s in enumerate(seqs) if not s.done]
            if not running:
                break
            step([s for _, s in running])
            for i, s in running:
                yield from ((i, p) for p in s.drain())
        return [s.result(max(t_first, s.t_first)) for s in seqs]


class BatchRequest:
    """One request of a Batcher: iterate for its text pieces (blocks until the batch makes them); `.result`
    is its GenerationResult once the iteration ends. cancel() ends it at the next step."""

    def __init__(self, seq: _Seq):
        self._seq = seq
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self.result: Optional[GenerationResult] = None
        self._cancelled = False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        item = self._queue.get()
        if isinstance(item, GenerationResult):
            self.result = item
            self._queue.put(item)  # a further next() ends again
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(item)
            raise item
        return item

    def wait(self) -> GenerationResult:
        """Blocks until the request ends; returns its result."""
        for _ in self:
            pass
        return self.result

    def cancel(self) -> None:
        self._cancelled = True


class Batcher:
    """Continuous batching over one model (CPU): requests submitted from any thread join the running batch
    at its next step, and leave it when they end, so a long generation never holds the others back and a new
    one never waits for the batch to drain. A worker thread runs the steps; a new request's prompt is
    prefilled between two steps. The model's other calls still work meanwhile (they wait for the step).

        with edgeformer.Batcher(model) as b:
            r1 = b.submit("The capital of France is", max_new_tokens=32, temperature=0)
            r2 = b.submit("def fib(n):", max_new_tokens=64)
            for piece in r1: print(piece, end="")
            print(r2.wait().text)

    max_batch: the most sequences decoded together (more wait their turn)."""

    def __init__(self, model, max_batch: int = 16):
        if not isinstance(model._core, _core.Model):
            raise ValueError("Batcher: continuous batching runs on the CPU (a device model generates one prompt "
                             "at a time)")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"argument 'max_batch' must be a positive integer, got {max_batch!r}")
        model._need_decoder("Batcher")
        self.model = model
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._waiting: List[BatchRequest] = []
        self._running: List[BatchRequest] = []
        self._closed = False
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._work, name="edgeformer-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: Union[str, Sequence[int]], max_new_tokens: int = 128, temperature: Optional[float] = None,
               top_k: Optional[int] = None, top_p: Optional[float] = None, min_p: Optional[float] = None,
               repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
               stop: Union[None, str, Sequence[str]] = None, ignore_eos: bool = False) -> BatchRequest:
        """Queues a generation (the arguments of Model.generate, checked here); returns its BatchRequest."""
        m = self.model
        ids, stops, opts = m._generation_args(prompt, max_new_tokens, temperature, top_k, top_p, min_p,
                                               repetition_penalty, seed, stop)
        req = BatchRequest(_Seq(m, ids, max_new_tokens, opts, stops, ignore_eos))
        with self._cond:
            if self._closed:
                raise ValueError("Batcher: closed")
            if self._error is not None:
                raise RuntimeError("Batcher: its worker failed") from self._error
            self._waiting.append(req)
            self._cond.notify()
        return req

    def close(self) -> None:
        """Stops the worker: requests not finished yet end at once, with finish_reason "cancelled"."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _finish(self, req: BatchRequest) -> None:
        for p in req._seq.drain():
            req._queue.put(p)
        req._queue.put(req._seq.result())

    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._running:
                        self._cond.wait()
                    if self._closed:
                        for r in self._waiting + self._running:
                            r._seq.finish = "cancelled"
                            self._finish(r)
                        return
                    room = self.max_batch - len(self._running)
                    joining, self._waiting = self._waiting[:room], self._waiting[room:]
                for r in self._running + joining:  # cancelled requests leave before the step
                    if r._cancelled and not r._seq.done:
                        r._seq.done, r._seq.finish, r._seq.t_end = True, "cancelled", time.perf_counter()
                with self.model._lock:
                    for r in joining:
                        if not r._seq.done:
                            r._seq.prefill()
                    live = [r._seq for r in self._running + joining if not r._seq.done]
                    if live:  # the joiners too: their first token, out of the prefill, is this step's input
                        step(live)
                ended = []
                for r in self._running + joining:
                    if r._seq.done:
                        ended.append(r)
                        self._finish(r)
                    else:
                        for p in r._seq.drain():
                            r._queue.put(p)
                self._running = [r for r in self._running + joining if r not in ended]
        except BaseException as e:  # the requests waiting on the worker learn of it, and new ones are refused
            with self._cond:
                self._error = e
                for r in self._waiting + self._running:
                    r._queue.put(e)
