"""The target model adapter: any stock Hugging Face causal LM, driven one forward at a time.

The adapter owns no decoding state. Callers pass the KV cache, the positions and (for a draft
tree) the ancestor mask explicitly; ``forward`` returns the logits and the last hidden states
(after the final norm, what the drafter learns from).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from core.hardware import resolve_dtype_name
from core.kv import keep_accepted
from core.layout import LAYOUTS, choose_layout, kernel_of, layout_of, set_layout, swap
from core.models import resolve_target

DTYPE_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A prompt longer than this many characters per token of the model's context is refused before it is tokenized
# (English averages ~4 characters per token), so a huge paste cannot keep the one model worker busy.
PROMPT_CHARS_PER_TOKEN = 16
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class PromptError(ValueError):
    """The prompt cannot be decoded from (empty, not valid Unicode, or longer than the model's context)."""


class TargetLoadError(ValueError):
    """A target model cannot be loaded; the message says what to do."""


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """Validate a dtype name for ``device`` (float16 on the CPU is slow and lossy, so refused); ``auto`` is bfloat16
    where ``device`` computes it natively and float32 elsewhere (``core.hardware``)."""
    name = resolve_dtype_name(name, device)
    if name not in DTYPE_BY_NAME:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BY_NAME)} or auto, got {name!r}")
    if name == "float16" and device.type == "cpu":
        raise ValueError("float16 is not supported on the CPU; use float32 or bfloat16")
    return DTYPE_BY_NAME[name]


@dataclass
class TargetOutput:
    logits: torch.Tensor  # [q, vocab] float32
    hidden: torch.Tensor  # [q, hidden] model dtype, last hidden state after the final norm
    taps: torch.Tensor | None = None  # [q, K*hidden] hidden states after the requested inner layers, side by side

    def drafter_features(self) -> torch.Tensor:
        """[q, (K+1)*hidden]: the taps, then the last hidden state (what ``Drafter.target_features`` reads)."""
        return self.hidden if self.taps is None else torch.cat([self.taps, self.hidden], dim=-1)


class TargetModel:
    """A loaded target: model, tokenizer and the facts the engine needs about them."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_id: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.config = model.config
        self.decoder = model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self._head = nn.ModuleDict({"lm_head": self.lm_head})  # the head in its kernel (core.layout; ``logits``)
        self.embed_tokens = model.get_input_embeddings()
        self.stop_token_ids = _stop_token_ids(model, tokenizer)
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
        self.layout = "stock; head: stock"  # the kernels of the linear layers and head (core.layout), and why

    def set_layout(self, layout: str, head: str | None = None) -> str:
        """Mutates the model: its decoder's linear layers, and the head, computed by ``layout`` and ``head`` (one of
        ``core.layout.KERNELS``, or "auto": the fastest here, timed now; only float32 on a CPU, where they can
        differ; ``head`` defaults to ``layout``). Returns what was kept, and why."""
        head = layout if head is None else head
        for name in (layout, head):
            if name not in LAYOUTS:
                raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {name!r}")
        timed = self.device.type == "cpu" and self.dtype == torch.float32
        if head == "auto" and timed:  # first: the decoder's probe forwards then run on the head kept
            self._head["lm_head"] = self.lm_head  # timed from the model's own head, which stock keeps (tied)
            head_note = choose_layout(self._head, self._head_probe()).describe("probe products")
        else:
            head = "stock" if head == "auto" else head
            self._head["lm_head"] = swap(self.lm_head, head)  # from the model's own head: a tied weight stays tied
            head_note = head
        if layout == "auto" and timed:
            note = choose_layout(self.decoder, self._layout_probe()).describe()
        else:
            note = "stock" if layout == "auto" else layout
            set_layout(self.decoder, note)
        self.layout = f"{note}; head: {head_note}"
        return self.layout

    @property
    def kernels(self) -> tuple[str | None, str | None]:
        """The kernels the decoder's linear layers and the head compute with now (``set_layout``)."""
        return layout_of(self.decoder), kernel_of(self._head["lm_head"])

    def _head_probe(self, tree: int = 16) -> Callable[[], None]:
        """The head's products a decode cycle makes: over one hidden state, and over a tree of ``tree``."""
        hidden = torch.randn(tree, self.hidden_size, generator=torch.Generator().manual_seed(0))  # [tree, hidden]

        @torch.inference_mode()  # as decoding runs it (``forward``)
        def probe() -> None:
            for n in (1, tree):
                self.logits(hidden[:n])

        return probe

    def _layout_probe(self, context: int = 64, tree: int = 16) -> Callable[[], None]:
        """Forwards a decode cycle makes: one token, and a tree of ``tree`` tokens, after ``context`` tokens."""
        cache = self.new_cache()
        self.forward(torch.arange(context) * 7919 % self.vocab_size, torch.arange(context), cache)
        mask = torch.ones(tree, tree, dtype=torch.bool).tril()

        def probe() -> None:
            for n in (1, tree):
                tokens = (torch.arange(n) * 104729 + 13) % self.vocab_size  # [n]
                self.forward(tokens, context + torch.arange(n), cache, mask[:n, :n] if n > 1 else None)
                keep_accepted(cache, context, torch.zeros(0, dtype=torch.int64))

        return probe

    @classmethod
    def load(
        cls, name_or_path: str, dtype: str = "float32", device: str | None = None, trust_remote_code: bool = False,
        layout: str = "auto",
    ) -> "TargetModel":
        """Load by hub id (must be in the local HF cache when offline), local folder, or the default alias; its
        linear layers in ``layout`` (see ``set_layout``).

        Weights load from safetensors only; model code shipped with a checkpoint runs only with
        ``trust_remote_code``. Raises ``TargetLoadError`` saying what to do when the checkpoint cannot be used.
        """
        dev = torch.device(device) if device else pick_device()
        torch_dtype = pick_dtype(dtype, dev)
        path = resolve_target(name_or_path)
        _refuse_pickle_only(path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True
            )
        except OSError as err:
            raise TargetLoadError(
                f"cannot load target model {name_or_path!r}: {_first_line(err)}. Give a local folder with a "
                "safetensors checkpoint, or a hub id that is already in the local cache"
            ) from err
        except (SafetensorError, RuntimeError, ValueError) as err:
            advice = ("pass --trust-remote-code only if you trust the code in that folder"
                      if "trust_remote_code" in str(err) else
                      "the files look damaged (a download or copy cut short) or do not match its config.json: "
                      "download or convert the model again, or give another --target")
            raise TargetLoadError(f"cannot load target model {name_or_path!r} ({_first_line(err)}): {advice}") from err
        target = cls(model.to(dev), tokenizer, name_or_path)
        target.set_layout(layout)
        return target

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.lm_head.weight.shape[0])

    def fingerprint(self) -> str:
        """A short hash of the token embedding: identifies the target a drafter was trained for.

        Taken after rounding to bfloat16, so the same checkpoint loaded in float32 or bfloat16 matches.
        """
        weight = self.embed_tokens.weight.detach()
        probe = weight[:: max(1, weight.shape[0] // 64), :16].to(torch.bfloat16).float().cpu()
        return hashlib.sha256(probe.numpy().tobytes() + str(tuple(weight.shape)).encode()).hexdigest()[:16]

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.config)

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,  # [q] int64
        positions: torch.Tensor,  # [q] int64, absolute positions
        cache: DynamicCache,  # grows by q entries (mutated)
        tree_mask: torch.Tensor | None = None,  # [q, q] bool, True where node i may see node j
        taps: tuple[int, ...] = (),  # inner layers (1-based) whose hidden states to return as well
    ) -> TargetOutput:
        """One forward over ``q`` new tokens appended after the cache; causal unless ``tree_mask`` is given."""
        past = cache.get_seq_length()
        mask = None if tree_mask is None else self._additive_mask(tree_mask, past)
        out = self.decoder(
            input_ids=input_ids[None].to(self.device),
            position_ids=positions[None].to(self.device),
            attention_mask=mask,
            cache=cache,
            use_cache=True,
            output_hidden_states=bool(taps),
        )
        hidden = out.last_hidden_state[0]  # [q, hidden]
        logits = self.logits(hidden)  # [q, vocab]
        inner = torch.cat([out.hidden_states[layer][0] for layer in taps], dim=-1) if taps else None  # [q, K*hidden]
        return TargetOutput(logits=logits, hidden=hidden, taps=inner)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[q, vocab] float32 logits of ``hidden`` [q, hidden] (the model's own lm_head, bias included), computed
        by the head's kernel (``set_layout``): MKL's kernel for ``x @ W.T`` with W [vocab, hidden] is slow at the
        few rows a tree verifies on some CPUs (session 22's Intel Xeon: 12.8 ms at 7 rows against 7.5 ms on a
        transposed copy), and the transposed copy on others (session 26's AMD EPYC: 48-64 ms at 4-16 rows,
        against 33-45 stock and 14-25 with oneDNN's kernel)."""
        return self._head["lm_head"](hidden).float()

    def _additive_mask(self, tree_mask: torch.Tensor, past: int) -> torch.Tensor:
        """[1, 1, q, past + q] additive mask: the whole prefix is visible, tree nodes see their ancestors."""
        q = tree_mask.shape[0]
        visible = torch.ones(q, past + q, dtype=torch.bool, device=self.device)
        visible[:, past:] = tree_mask.to(self.device)
        mask = torch.zeros(q, past + q, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~visible, torch.finfo(self.dtype).min)
        return mask[None, None]

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Frozen token embeddings: [n] -> [n, hidden]."""
        return self.embed_tokens(token_ids.to(self.device))

    def encode_chat(self, prompt: str) -> list[int]:
        """Token ids of ``prompt`` as one user turn, ready for the assistant's answer.

        The user's text is tokenized with special tokens split, so typed markers such as
        ``<|im_end|>`` stay plain text and cannot end the turn or inject a role. Raises ``PromptError``
        for an empty prompt, one that is not valid Unicode, or one longer than the context.
        """
        check_prompt(prompt, self.max_context * PROMPT_CHARS_PER_TOKEN)
        sentinel = "\u2063JAKIRO_USER_TEXT\u2063"
        if self.tokenizer.chat_template:
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": sentinel}], tokenize=False, add_generation_prompt=True
            )
        else:
            rendered = sentinel
        before, after = rendered.split(sentinel)
        ids = self.encode_text(before, split_special=False)
        ids += self.encode_text(prompt, split_special=True)
        ids += self.encode_text(after, split_special=False)
        if len(ids) >= self.max_context:
            raise PromptError(
                f"the prompt is {len(ids)} tokens long but the model's context is {self.max_context} tokens: shorten it"
            )
        return ids

    def encode_text(self, text: str, split_special: bool) -> list[int]:
        """Token ids of plain text (no template); ``split_special`` keeps typed markers as text."""
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=split_special)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        """Readable text of one token (special tokens kept, so an end-of-turn is visible)."""
        return self.tokenizer.decode([token_id], skip_special_tokens=False)


def check_prompt(prompt: str, max_chars: int) -> None:
    """Raise ``PromptError`` unless ``prompt`` is non-blank text of at most ``max_chars`` characters that can be
    encoded as UTF-8 (no lone surrogates, which arrive from bytes that were not UTF-8 or from broken JSON)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("the prompt is empty: type a question or instruction")
    if len(prompt) > max_chars:
        raise PromptError(f"the prompt is {len(prompt):,} characters long; the limit is {max_chars:,}: shorten it")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise PromptError(
            f"the prompt is not valid Unicode text: character {err.start + 1} is a lone surrogate "
            f"(U+{ord(prompt[err.start]):04X}), usually from text that was not UTF-8: type or paste that part again"
        ) from None


def _refuse_pickle_only(path: str) -> None:
    """A local folder whose weights are pickles only is refused: unpickling a checkpoint can run code."""
    if not os.path.isdir(path):
        return
    names = os.listdir(path)
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = sorted(n for n in names if n.endswith(PICKLE_WEIGHTS))
    if pickles:
        raise TargetLoadError(
            f"{path} holds only pickle weights ({', '.join(pickles)}), which are never loaded because unpickling "
            "can run code: convert the checkpoint to safetensors (save_pretrained(..., safe_serialization=True) "
            "where you trust it), or give another --target"
        )


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")


def _stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    ids: set[int] = set()
    for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(marker) if marker in tokenizer.get_vocab() else None
        if isinstance(tid, int):
            ids.add(tid)
    return frozenset(ids)
