"""Grammar-constrained decoding: a per-request token mask that lets through only the tokens a grammar allows
next — a JSON schema (response_format) or a Lark grammar (tool calls: text or ``<tool_call>`` + JSON) —
through llguidance, a maintained constrained-decoding library; we write no grammar compiler.

The engine samples each row in Python (``engine._emit``), so the mask applies the same on the native decode
step, the PyTorch forward and in a batch: disallowed logits become -inf before sampling, the sampled token is
fed to the matcher, and the row ends when the grammar is complete (then only EOS is allowed).
"""

from __future__ import annotations

import json
from functools import cache

import torch

ANY_OBJECT = {"type": "object"}  # response_format {"type": "json_object"}


@cache
def _ll_tokenizer(tokenizer):
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer)


def compact_schema(schema: dict | None) -> dict:
    """``schema`` (default: any JSON object) with no runs of whitespace between tokens."""
    return {"x-guidance": {"whitespace_flexible": False}, **(schema or ANY_OBJECT)}


class GrammarConstraint:
    """Only text the grammar accepts: ``GrammarConstraint.json(tok, schema)`` or ``.lark(tok, text)``."""

    def __init__(self, tokenizer, grammar: str, what: str):
        import llguidance
        import llguidance.torch as lt

        self._lt = lt
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
        if failed:
            raise ValueError(f"{what}: {'; '.join(messages) or 'not a grammar llguidance accepts'}")
        tok = _ll_tokenizer(tokenizer)
        self.matcher = llguidance.LLMatcher(tok, grammar)
        self.bitmask = lt.allocate_token_bitmask(1, tok.vocab_size)

    @classmethod
    def json(cls, tokenizer, schema: dict | None = None) -> GrammarConstraint:
        """Only JSON valid against ``schema`` (default: any JSON object)."""
        import llguidance

        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(compact_schema(schema)))
        except (ValueError, TypeError) as e:
            raise ValueError(f"json schema: {e}") from None
        return cls(tokenizer, grammar, "json schema")

    @classmethod
    def lark(cls, tokenizer, text: str) -> GrammarConstraint:
        """Only text the Lark grammar (llguidance's dialect, with ``%json {...}`` rules) accepts."""
        import llguidance

        try:
            grammar = llguidance.LLMatcher.grammar_from_lark(text)
        except (ValueError, TypeError) as e:
            raise ValueError(f"grammar: {e}") from None
        return cls(tokenizer, grammar, "grammar")

    def mask(self, logits: torch.Tensor) -> None:
        """(V,) logits in place: -inf where the grammar forbids the token."""
        self._lt.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        n = self.bitmask.shape[1] * 32
        view = logits[:n].unsqueeze(0)
        self._lt.apply_token_bitmask_inplace(view, self.bitmask)
        if logits.shape[0] > n:  # the model's padded vocabulary beyond the tokenizer's
            logits[n:] = float("-inf")

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"constrained decoding: token {token} refused ({self.matcher.get_error()})")

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped()
