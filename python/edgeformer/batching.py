"""Sequences that share a model's decode steps: a list of prompts generated together (Model.generate with a
list), and continuous batching (Batcher: requests that join and leave a running batch between steps).

Each sequence decodes on a fork of the model (the same weights, a KV cache of its own); a step runs every
running sequence's next token through the model as one forward (_core.decode_batch), so the weights are read
once per step for all of them."""

from __future__ import annotations

import queue
import threading
import time
import weakref
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from . import _core
from .model import (PREFILL_CHUNK, GenerationResult, TokenLogprob, _head_split, _prefill_chunks, _shared_prefix,
                    _step_result)
from .tokenizer import StreamDecoder


class _Seq:
    """One sequence of a batch: its fork, sampler, text decoder and what it has generated. The caller holds
    the model's lock around prefill() and the batch steps."""

    def __init__(self, model, ids: List[int], max_new_tokens: int, opts, stops: List[str], ignore_eos: bool,
                 logprobs: Optional[int] = None):
        self.model = model
        self.logprobs = logprobs  # None, or how many top tokens each TokenLogprob lists
        self.lps: Optional[List[TokenLogprob]] = None if logprobs is None else []
        self.ids = ids
        self.max_new_tokens = max_new_tokens
        # made by prefill(): a fork copies no weights and reserves its cache as address space; release() lets
        # go of it (the cache's memory) as soon as the sequence ends
        self.fork = None
        self.sampler = _core.Sampler(opts)
        self.decoder = StreamDecoder(model._tok, stops) if model._tok.tokenizer is not None else None
        self.eos = set() if ignore_eos else set(model.eos_token_ids)
        self.new: List[int] = []
        self.history = np.asarray(ids, dtype=np.int32)
        self.finish = "length"
        self.pieces: List[str] = []  # text made since the last drain()
        self.done = max_new_tokens <= 0
        self.prefill_seconds = 0.0
        self.cached = 0  # prompt tokens found in the cache it was given (Batcher's prefix cache)
        self.release = None  # called with (tokens in the cache, prompt length, fork) when it ends well (prefix cache)
        self.t_first: Optional[float] = None  # the first new token's time (None: never prefilled)
        self.t_end: Optional[float] = None

    def prompt_left(self) -> int:
        """Prompt tokens not in the cache yet."""
        return len(self.ids) - (self.fork.n_past if self.fork is not None else 0)

    def prefill(self, budget: Optional[int] = None) -> int:
        """The prompt, and the first new token out of its last position; returns how many prompt tokens it ran.
        budget: at most about this many now (whole PREFILL_CHUNKs, one at least), the rest left for further calls
        (t_first stays None until the prompt is all in). Interrupted (KeyboardInterrupt), it resumes where it
        stopped: the chunks already in the cache stay there."""
        t0 = time.perf_counter()
        if self.fork is None:
            self.fork = self.model._core.fork()
        start = self.fork.n_past
        n = max(_head_split(self.ids), start)  # (a cached prefix may reach into the last piece)
        end = n if budget is None else min(n, start + max(1, budget // PREFILL_CHUNK) * PREFILL_CHUNK)
        _prefill_chunks(self.fork, self.ids[start:end], len(self.ids))
        last = len(self.ids) - n  # the last piece: its forward also gives the first new token
        if end < n or (budget is not None and end > start and end - start + last > budget):
            self.prefill_seconds += time.perf_counter() - t0  # (the last piece would overrun: next call)
            return end - start
        out = self.fork.step(np.asarray(self.ids[n:], dtype=np.int32), self.sampler, self.history,
                             -1 if self.logprobs is None else self.logprobs)
        self.t_first = time.perf_counter()
        self.prefill_seconds += self.t_first - t0
        self.take(out)
        return len(self.ids) - start

    def take(self, out) -> None:
        """Records a new token (with logprobs: the (token, log-probability, top) of Model.step); at the
        sequence's end, flushes the text the decoder still held back."""
        tok, lp = _step_result(out)
        if lp is not None and tok not in self.eos and tok >= 0:  # (as token_ids: no end token, no grammar's -1)
            self.lps.append(lp)
        if not self._alive(tok):
            self.end()

    def end(self, finish: Optional[str] = None, failed: bool = False) -> None:
        """Ends the sequence (with this finish reason, when given): the text held back (an unfinished UTF-8
        character, a possible stop string's beginning) comes out, and the KV cache is let go (to `release`,
        unless it failed)."""
        if finish is not None:
            self.finish = finish
        if self.fork is not None and self.release is not None and not failed and self.fork.n_past > 0:
            self.release((self.ids + self.new)[:self.fork.n_past], len(self.ids), self.fork)
        d = self.decoder
        if d is not None and not d.stopped:
            piece = d.update(self.new, final=True)
            if piece:
                self.pieces.append(piece)
        self.done = True
        self.t_end = time.perf_counter()
        self.fork = None

    def _alive(self, tok: int) -> bool:
        if tok in self.eos or tok < 0:  # (-1: the grammar allows no token)
            self.finish = "eos" if tok >= 0 else "stop"
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
        if self.sampler.grammar_finished:  # nothing but the end can follow
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
        decode = max(0.0, self.t_end - start) if self.t_first is not None and self.t_end is not None else 0.0
        return GenerationResult(text=self.decoder.text if self.decoder is not None else "", token_ids=self.new,
                                finish_reason=self.finish, prompt_tokens=len(self.ids),
                                prefill_seconds=self.prefill_seconds, decode_seconds=decode, logprobs=self.lps,
                                cached_tokens=self.cached)


def step(seqs: List[_Seq]) -> None:
    """One decode step for every sequence in seqs (all running): one forward of len(seqs) rows."""
    ks = [-1 if s.logprobs is None else s.logprobs for s in seqs]
    outs = _core.decode_batch([s.fork for s in seqs], np.asarray([s.new[-1] for s in seqs], np.int32),
                              [s.sampler for s in seqs], [s.history for s in seqs], ks if max(ks) >= 0 else [])
    for s, out in zip(seqs, outs):
        s.take(out)  # a token id, or (token, log-probability, top) for a sequence that asked for logprobs


def device_batch_cap(model) -> int:
    """How many sequences of a device model fit its device's free memory at once (one at least): each holds a
    KV cache of max_context on the device, and activation buffers for a prefill chunk."""
    core, sp = model._core, model.spec
    kv = 2 * sp.n_layers * sp.n_kv_heads * sp.head_dim * core.max_context * (2 if core.kv_dtype in ("f16", "bf16") else 4)
    qd, kd = sp.n_heads * sp.head_dim, sp.n_kv_heads * sp.head_dim
    rows = PREFILL_CHUNK * 4 * (4 * sp.hidden_size + 2 * qd + 2 * kd + 2 * sp.ffn_size)
    free = _core.cuda_device_info(core.device)["free_memory"]
    return max(1, int(free * 0.9) // (kv + rows))


def generate_together(model, prompts: List[List[int]], max_new_tokens: int, options, stops: List[str],
                      ignore_eos: bool, logprobs: Optional[int] = None):
    """Model.generate with a list of prompts: a generator of (prompt index, text piece) that returns the list of
    results. The prompts are prefilled one by one (bound by arithmetic, not memory), then decode together until
    each ends. On a device, as many at a time as its memory holds (device_batch_cap), group after group."""
    cap = len(prompts) if isinstance(model._core, _core.Model) else device_batch_cap(model)
    results: List[GenerationResult] = []
    for g in range(0, len(prompts), cap):
        group = yield from _generate_group(model, prompts[g:g + cap], g, max_new_tokens, options, stops, ignore_eos,
                                           logprobs)
        results += group
    return results


def _generate_group(model, prompts: List[List[int]], first: int, max_new_tokens: int, options, stops: List[str],
                    ignore_eos: bool, logprobs: Optional[int]):
    with model._lock:
        seqs = [_Seq(model, ids, max_new_tokens, options(), stops, ignore_eos, logprobs) for ids in prompts]
        for i, s in enumerate(seqs):
            if not s.done:
                s.prefill()
            yield from ((first + i, p) for p in s.drain())
        t_first = time.perf_counter()
        while True:
            running = [(i, s) for i, s in enumerate(seqs) if not s.done]
            if not running:
                break
            step([s for _, s in running])
            for i, s in running:
                yield from ((first + i, p) for p in s.drain())
        return [s.result(t_first) for s in seqs]  # (every prefill ran before t_first)


class BatchRequest:
    """One request of a Batcher: iterate for its text pieces (blocks until the batch makes them); `.result`
    is its GenerationResult once the iteration ends. cancel() ends it at the next step (or at once, if it
    still waits for room in the batch)."""

    def __init__(self, seq: _Seq, batcher: "Batcher"):
        self._seq = seq
        self._batcher = batcher
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self.result: Optional[GenerationResult] = None
        self._cancelled = False
        self._failed = False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return self._next(None)

    def _next(self, timeout: Optional[float]) -> str:
        item = self._queue.get(timeout=timeout)  # queue.Empty on a timeout
        if isinstance(item, GenerationResult):
            self.result = item
            self._queue.put(item)  # a further next() ends again
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(item)
            raise item
        return item

    def wait(self, timeout: Optional[float] = None) -> Optional[GenerationResult]:
        """Blocks until the request ends and returns its result (the pieces not iterated yet are skipped);
        with a timeout, None if it has not ended by then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.result is None:
            try:
                self._next(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except StopIteration:
                break
            except queue.Empty:
                return None
        return self.result

    def cancel(self) -> None:
        self._cancelled = True
        with self._batcher._cond:
            self._batcher._cond.notify()


PREFIX_COPY_MIN = 32  # the fewest shared tokens a prompt copies out of a kept cache that it does not continue


def _copyable(n: int, ids: List[int]) -> bool:
    """Whether n shared tokens are worth a copy of another cache's for prompt ids: PREFIX_COPY_MIN of them, or
    all of the prompt (but its last token)."""
    return n > 0 and (n >= PREFIX_COPY_MIN or n == len(ids) - 1)


class BatcherClosed(RuntimeError):
    """submit() on a Batcher that is closed (or whose worker failed)."""


class Batcher:
    """Continuous batching over one model (CPU or device): requests submitted from any thread join the running batch
    at its next step, and leave it when they end, so a long generation never holds the others back and a new
    one never waits for the batch to drain. A worker thread runs the steps; a new request's prompt is
    prefilled between two steps. The model's other calls still work meanwhile (they wait for the step).

        with edgeformer.Batcher(model) as b:
            r1 = b.submit("The capital of France is", max_new_tokens=32, temperature=0)
            r2 = b.submit("def fib(n):", max_new_tokens=64)
            for piece in r1: print(piece, end="")
            print(r2.wait().text)

    max_batch: the most sequences decoded together (more wait their turn; on a device, no more than fit its free
    memory with a KV cache of max_context each, see device_batch_cap). prefill_chunk: the prompt tokens of
    long prompts prefilled between two steps, so that a long prompt arriving holds the running requests back a
    chunk at a time rather than for all of it; None prefills each joining prompt whole. It counts whole chunks
    of 256, one at least per round (a prompt's last piece, up to 256 tokens, waits for a round of its own when
    it would overrun). Prompts of one chunk or less start at once, ahead of long ones.
    prefix_cache: the KV caches of up to this many finished requests are kept; a new prompt that begins with the
    tokens one holds (a chat's next turn: the conversation so far) takes it over and prefills only the rest
    (GenerationResult.cached_tokens says how many it found), the most recent first among equal matches. Each
    kept cache holds its tokens' keys and values (2 x layers x kv heads x head size x 2 bytes a token for an f16
    cache); 0 keeps none. On a device they count against max_batch's memory cap.
    close() it (or use `with`); one
    dropped without close() stops its worker within a second. A thread that holds the model's own generation open (a stream
    of model.generate not exhausted) while waiting on a request blocks the worker, which needs the model too.
    A request that fails (its prompt's KV cache cannot be allocated, say) raises in its own iteration only;
    a Ctrl-C that interrupts a step is the main thread's, and the step runs again."""

    def __init__(self, model, max_batch: int = 16, prefill_chunk: Optional[int] = 256, prefix_cache: int = 4):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"argument 'max_batch' must be a positive integer, got {max_batch!r}")
        if prefill_chunk is not None and (isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int)
                                          or prefill_chunk < 1):
            raise ValueError(f"argument 'prefill_chunk' must be a positive integer or None, got {prefill_chunk!r}")
        if isinstance(prefix_cache, bool) or not isinstance(prefix_cache, int) or prefix_cache < 0:
            raise ValueError(f"argument 'prefix_cache' must be a non-negative integer, got {prefix_cache!r}")
        self.prefill_chunk = prefill_chunk
        model._need_decoder("Batcher")
        self.model = model
        # on a device, each running sequence's KV cache is device memory: no more than its free memory holds
        self.max_batch, self.prefix_cache = max_batch, prefix_cache
        if not isinstance(model._core, _core.Model):
            cap = device_batch_cap(model)
            self.max_batch = min(max_batch, cap)
            self.prefix_cache = min(prefix_cache, cap - self.max_batch)
        if model._keys_depend_on_length or not model._rewindable:
            self.prefix_cache = 0
        self._kept: List[tuple] = []  # (tokens in its cache, fork) of finished requests, the most recent last
        self._cond = threading.Condition()
        self._waiting: List[BatchRequest] = []
        self._running: List[BatchRequest] = []
        self._closed = False
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=Batcher._worker, args=(weakref.ref(self), self._cond),
                                        name="edgeformer-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: Union[str, Sequence[int]], max_new_tokens: int = 128, temperature: Optional[float] = None,
               top_k: Optional[int] = None, top_p: Optional[float] = None, min_p: Optional[float] = None,
               repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
               stop: Union[None, str, Sequence[str]] = None, ignore_eos: bool = False,
               logprobs: Optional[int] = None, presence_penalty: Optional[float] = None,
               frequency_penalty: Optional[float] = None, logit_bias: Optional[dict] = None,
               grammar=None) -> BatchRequest:
        """Queues a generation (the arguments of Model.generate, checked here: ValueError); returns its
        BatchRequest. BatcherClosed once the Batcher is closed."""
        m = self.model
        ids, stops, opts = m._generation_args(prompt, max_new_tokens, (temperature, top_k, top_p, min_p,
                                               repetition_penalty, seed, presence_penalty, frequency_penalty,
                                               logit_bias, grammar), stop)
        req = BatchRequest(_Seq(m, ids, max_new_tokens, opts, stops, ignore_eos, m._check_logprobs(logprobs)), self)
        with self._cond:
            if self._closed:
                raise BatcherClosed("Batcher: closed")
            if self._error is not None:
                raise BatcherClosed("Batcher: its worker failed") from self._error
            self._waiting.append(req)
            self._cond.notify()
        return req

    def close(self) -> None:
        """Stops the worker: requests not finished yet end at once, with finish_reason "cancelled"."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _keep(self, tokens: List[int], n_prompt: int, fork) -> None:
        """(worker) A finished request's cache, kept for a later prompt that begins with its tokens."""
        if self.prefix_cache > 0:
            self._kept.append((tokens, n_prompt, fork))
            del self._kept[:-self.prefix_cache]

    def _source(self, seq: _Seq):
        """(worker) The cache sharing the longest usable prefix with seq's prompt (one token at least is left to
        run): (shared tokens, (index in _kept or -1, fork) or None, whether to take it over). A prompt that covers
        a kept request's prompt (its next turn, or the same prompt again: its answer regenerated) takes its cache
        over; one that shares less of it (a system prompt, say), or that shares a running request's prompt (`n`
        choices of one request), copies that part (_copyable), and the other cache stays."""
        best, best_n, take = None, 0, False
        if not self.model._rewindable:  # (a recurrent state keeps all of its tokens or none: no shared prefixes)
            return best_n, best, take
        for i, (tokens, n_prompt, fork) in enumerate(self._kept):
            n = _shared_prefix(tokens, seq.ids)
            over = n >= n_prompt - 1  # (the same prompt again leaves its last token to run)
            if n > 0 and (over or _copyable(n, seq.ids)) and n >= best_n:  # the most recent among equals
                best, best_n, take = (i, fork), n, over
        for r in self._running:  # prompts all in the cache: what it holds (its last token not yet fed back)
            s = r._seq
            if s is not seq and not s.done and s.t_first is not None and s.fork is not None:
                n = _shared_prefix((s.ids + s.new)[:s.fork.n_past], seq.ids)
                if _copyable(n, seq.ids) and n > best_n:
                    best, best_n, take = (-1, s.fork), n, False
        return best_n, best, take

    def _adopt(self, seq: _Seq, source) -> None:
        """(worker) Starts seq from a _source()."""
        best_n, best, take = source
        if best is None:
            return
        if take:
            del self._kept[best[0]]
            seq.fork = best[1]
        else:
            seq.fork = self.model._core.fork()
            seq.fork.copy_cache_from(best[1], best_n)
        seq.fork.truncate(best_n)
        seq.cached = best_n

    @staticmethod
    def _finish(req: BatchRequest) -> None:
        for p in req._seq.drain():
            req._queue.put(p)
        req._queue.put(req._seq.result())

    @staticmethod
    def _fail(req: BatchRequest, e: BaseException) -> None:
        req._seq.end(failed=True)
        req._failed = True
        req._queue.put(e)

    @staticmethod
    def _worker(ref: "weakref.ref[Batcher]", cond: threading.Condition) -> None:
        """The worker thread. It holds the Batcher only while it works: a Batcher dropped without close()
        (nothing can reach its requests then) ends it, and lets go of the model."""
        while True:
            with cond:
                while True:
                    b = ref()
                    if b is None:
                        return
                    if b._has_work():
                        break
                    del b
                    cond.wait(1.0)
            try:
                if not b._round():
                    return
            except BaseException as e:  # the requests waiting on the worker learn of it, and new ones are refused
                with cond:
                    b._error = e
                    for r in b._waiting + b._running:
                        r._queue.put(e)
                return
            finally:
                del b

    def _has_work(self) -> bool:
        """(under _cond) Whether a round has something to do; cancelled requests still waiting for room end."""
        for r in [r for r in self._waiting if r._cancelled]:
            self._waiting.remove(r)
            r._seq.end("cancelled")
            self._finish(r)
        return self._closed or bool(self._waiting) or bool(self._running)

    def _round(self) -> bool:
        """New requests join, cancelled ones leave, one step for all; False once closed."""
        with self._cond:
            if self._closed:
                for r in self._waiting + self._running:
                    r._seq.end("cancelled")
                    self._finish(r)
                self._waiting, self._running = [], []
                self._kept = []
                return False
            room = self.max_batch - len(self._running)
            joining, self._waiting = self._waiting[:room], self._waiting[room:]
            self._running += joining
        # A new prompt starts from the cache sharing most of it (_source), unless it shares more with one that
        # prefills now (`n` choices of one request): then it waits until that prefill ends and copies that part
        # of its cache. A short prompt (one that would start at once) waits only for a prefill that ends this
        # round, not for a long one's chunks.
        starting = [r for r in joining if r._seq.t_first is None and not r._seq.done]
        short = {id(r) for r in starting if self.prefill_chunk is None or r._seq.prompt_left() <= PREFILL_CHUNK}
        later: List[BatchRequest] = []
        for i, r in enumerate(starting):
            if r._seq.fork is not None:  # (a prefill under way)
                continue
            source = self._source(r._seq)
            wait = max([n for q in starting[:i] if q not in later and (id(q) in short or id(r) not in short)
                        for n in (_shared_prefix(q._seq.ids, r._seq.ids),) if _copyable(n, r._seq.ids)], default=0)
            if wait > source[0]:
                later.append(r)
                continue
            try:
                self._adopt(r._seq, source)
            except Exception as e:  # (a device fork's cache that does not fit) this request's failure alone
                self._fail(r, e)
                continue
            r._seq.release = self._keep
        if later:
            with self._cond:
                self._running = [r for r in self._running if r not in later]
                self._waiting = later + self._waiting
            joining = [r for r in joining if r not in later]
        for r in self._running:  # cancelled requests leave before the step
            if r._cancelled and not r._seq.done:
                r._seq.end("cancelled")
        # Prompts with at most one chunk left start at once; the longer ones share this round's budget in their
        # order (out of it, one starts or goes on next round, first in line).
        budget = self.prefill_chunk
        short = [r for r in joining if r._seq.prompt_left() <= PREFILL_CHUNK]
        with self.model._lock:
            for r in short + [r for r in joining if r not in short]:
                limited = budget is not None and r not in short
                if r._seq.done or (limited and budget <= 0):
                    continue
                try:
                    ran = r._seq.prefill(budget if limited else None)
                    if limited:
                        budget -= ran
                except KeyboardInterrupt:  # the main thread's Ctrl-C: resumed at the next round
                    pass
                except Exception as e:  # this request's failure alone
                    self._fail(r, e)
            live = [r for r in self._running if not r._seq.done and r._seq.t_first is not None]
            if live:  # the joiners too: their first token, out of the prefill, is this step's input
                try:
                    step([r._seq for r in live])
                except KeyboardInterrupt:  # the main thread's Ctrl-C: the step runs again
                    pass
                except Exception as e:  # the step's failure: its requests end with it
                    for r in live:
                        self._fail(r, e)
        waiting_prefill = []
        for r in self._running:
            if r._seq.done:
                if not r._failed:
                    self._finish(r)
            else:
                for p in r._seq.drain():
                    r._queue.put(p)
                if r._seq.t_first is None:  # a prefill not finished (a chunk at a time, or interrupted): next round
                    waiting_prefill.append(r)
        with self._cond:
            self._running = [r for r in self._running if not r._seq.done]
            for r in waiting_prefill:  # an unfinished prefill goes on first in the next round
                self._running.remove(r)
            self._waiting = waiting_prefill + self._waiting
        return True
