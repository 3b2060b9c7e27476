"""Grammar-constrained sampling that checks the grammar on the drawn token first.

Runs inside the embedded model's server process (see `detente.local_server`), never in detente's.

llama-cpp-python's `Llama` puts the JSON grammar in its sampler chain (penalties, grammar,
top-k, typical, top-p, min-p, temperature, draw), so at every generated token the grammar
is matched against all 49,152 tokens of SmolLM2's vocabulary: about 6 ms a token on this
project's machine, a third of the time generating a token costs. `GrammarLast` draws a token
with the chain minus the grammar, asks the grammar about that one token, and applies the grammar
to the whole vocabulary only when the token is refused, then draws again: what llama.cpp's own
server does (`common_sampler_sample`). The answer is as grammatical as before (every token is
one the grammar accepts); where the unconstrained draw is refused, the token is drawn exactly as
before. A draw that the grammar accepts at once comes from the chain's distribution over all
tokens rather than over the grammatical ones only, so a seed gives other answers than the
plain chain gave.

`install()` replaces `Llama._init_sampler` (the chain `Llama.generate` builds once per
completion); a llama-cpp-python whose internals differ leaves it as is.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

_installed = False


class GrammarLast:
    """A sampler with `Llama`'s chain interface (`sample(ctx, idx)`, `close()`)."""

    def __init__(self, llama: Any, free: Any, grammar: Any) -> None:
        from llama_cpp import llama_cpp

        c: Any = llama_cpp
        self._c = c
        self.free = free  # the chain without the grammar (a `LlamaSampler`)
        self.grammar: Any = c.llama_sampler_init_grammar(
            llama._model.vocab, grammar._grammar.encode("utf-8"),
            grammar._root.encode("utf-8"))
        if not self.grammar:
            raise ValueError("llama.cpp refused the grammar")
        self.n_vocab = int(llama._n_vocab)
        self._buffer: Any = (c.llama_token_data * self.n_vocab)()
        layout = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        if layout.itemsize != ctypes.sizeof(c.llama_token_data):
            raise ValueError("unexpected llama_token_data layout")
        self._rows = np.frombuffer(memoryview(self._buffer), dtype=layout)
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._one: Any = (c.llama_token_data * 1)()
        self._all: Any = c.llama_token_data_array(data=self._buffer, size=self.n_vocab,
                                             selected=-1, sorted=False)
        self._single: Any = c.llama_token_data_array(data=self._one, size=1, selected=-1,
                                                sorted=False)

    def _candidates(self, logits: Any) -> None:
        self._rows["id"] = self._ids
        self._rows["logit"] = logits
        self._rows["p"] = 0.0
        self._all.data = ctypes.cast(self._buffer, type(self._all.data))
        self._all.size, self._all.selected, self._all.sorted = self.n_vocab, -1, False

    def _draw(self) -> int:
        self._c.llama_sampler_apply(self.free.sampler, ctypes.byref(self._all))
        if self._all.selected < 0:
            raise RuntimeError("the sampler chain selected no token")
        return int(self._all.data[self._all.selected].id)

    def _grammatical(self, token: int) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        self._single.size, self._single.selected, self._single.sorted = 1, -1, False
        self._c.llama_sampler_apply(self.grammar, ctypes.byref(self._single))
        return not math.isinf(self._one[0].logit)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        c = self._c
        row = c.llama_get_logits_ith(ctx.ctx, idx)
        if not row:  # llama.cpp kept no logits there: an error for this request, not a crash
            raise RuntimeError(f"llama.cpp has no logits for output {idx}")
        logits = np.ctypeslib.as_array(row, shape=(self.n_vocab,))
        self._candidates(logits)
        token = self._draw()
        if not self._grammatical(token):
            self._candidates(logits)
            c.llama_sampler_apply(self.grammar, ctypes.byref(self._all))
            token = self._draw()
        c.llama_sampler_accept(self.grammar, token)
        c.llama_sampler_accept(self.free.sampler, token)
        return token

    def accept(self, token: int) -> None:
        self._c.llama_sampler_accept(self.grammar, token)
        self._c.llama_sampler_accept(self.free.sampler, token)

    def reset(self) -> None:
        self._c.llama_sampler_reset(self.grammar)
        self.free.reset()

    def close(self) -> None:
        if self.grammar:
            self._c.llama_sampler_free(self.grammar)
            self.grammar = None
        self.free.close()

    def __del__(self) -> None:
        self.close()


def install() -> bool:
    """Make `Llama` sample with `GrammarLast` whenever a grammar is given; False if this
    llama-cpp-python's internals are not the ones it was written for."""
    global _installed
    if _installed:
        return True
    import llama_cpp
    from llama_cpp import llama_cpp as low

    c: Any = low

    needed = ("llama_sampler_init_grammar", "llama_sampler_apply", "llama_sampler_accept",
              "llama_sampler_free", "llama_sampler_reset", "llama_get_logits_ith",
              "llama_token_data", "llama_token_data_array")
    if not all(hasattr(c, name) for name in needed) or not hasattr(llama_cpp.Llama,
                                                                   "_init_sampler"):
        return False
    chain: Any = llama_cpp.Llama._init_sampler

    def init_sampler(self: Any, *args: Any, grammar: Any = None, **kwargs: Any) -> Any:
        free = chain(self, *args, grammar=None, **kwargs)
        if grammar is None:
            return free
        return GrammarLast(self, free, grammar)

    setattr(llama_cpp.Llama, "_init_sampler", init_sampler)  # noqa: B010
    _installed = True
    return True
