"""Training sequences and the target features recorded on them.

A training sequence is a chat: token ids plus a loss mask marking the assistant's tokens (the
ones a drafter must learn to propose). Two kinds feed the drafters:
- self-distilled: a prompt answered by the target itself (``selfdistill.py``);
- teacher-forced fixed text: real human conversations, the second speaker as the assistant.
The target runs once over every sequence (teacher forcing) and its last hidden states (and, on request,
the hidden states after some inner layers: the "taps" a drafter with fused features reads) are stored in
safetensors shards in a compact dtype, outside git.
"""
from __future__ import annotations

import bisect
import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from core.target import TargetModel

MAX_LEN = 640


@dataclass
class Sequence:
    ids: list[int]
    loss_mask: list[int]  # 1 where the token is an assistant token
    source: str


@dataclass(frozen=True)
class Rows:
    """[T, W] rows kept in the recorded files they came from (memory-mapped: only the rows read are paged in, and
    training processes reading the same files share one copy in the page cache). Indexed by a row range that
    lies within one file, as every sequence does."""

    parts: tuple[torch.Tensor, ...]  # [T_f, W] per file
    starts: tuple[int, ...]  # first row of each part

    @property
    def width(self) -> int:
        return int(self.parts[0].shape[-1])

    def __getitem__(self, rows: slice) -> torch.Tensor:
        f = bisect.bisect_right(self.starts, rows.start) - 1
        lo = self.starts[f]
        if rows.stop - lo > self.parts[f].shape[0]:
            raise IndexError(f"rows {rows.start}:{rows.stop} cross from one recorded file into the next")
        return self.parts[f][rows.start - lo : rows.stop - lo]


@dataclass
class FeatureSet:
    """All recorded sequences, concatenated (the features stay memory-mapped in their files)."""

    ids: torch.Tensor  # [T] int64
    loss_mask: torch.Tensor  # [T] bool
    hidden: Rows  # [T, H] bfloat16, target's last hidden state at each token
    offsets: torch.Tensor  # [S + 1] int64, sequence s spans offsets[s]:offsets[s+1]
    groups: tuple[int, ...] = ()  # sequences per recorded group (each answer folder, then the rest), in order
    taps: Rows | None = None  # [T, K*H] bfloat16: hidden states after the layers in tap_layers, side by side
    tap_layers: tuple[int, ...] = ()  # K target layers (1-based: the output of layer i); () = no taps

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def sequence(self, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b = int(self.offsets[s]), int(self.offsets[s + 1])
        return self.ids[a:b], self.loss_mask[a:b], self.hidden[a:b]

    def sequence_taps(self, s: int, layers: tuple[int, ...]) -> torch.Tensor:
        """[len, len(layers)*H] the recorded taps of sequence ``s`` for ``layers`` (a subset of tap_layers)."""
        missing = [layer for layer in layers if layer not in self.tap_layers]
        if self.taps is None or missing:
            raise ValueError(f"the features hold taps of layers {list(self.tap_layers)}, not of {missing or list(layers)}: "
                             "record them with `train features --taps`")
        a, b = int(self.offsets[s]), int(self.offsets[s + 1])
        H, taps = self.hidden.width, self.taps[a:b]
        return torch.cat([taps[:, k * H : (k + 1) * H] for k in (self.tap_layers.index(layer) for layer in layers)], -1)


def encode_conversation(target: TargetModel, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Chat-template ids of a conversation and a mask of the assistant tokens (their end marker included).

    Message texts are tokenized with special tokens split, exactly as ``TargetModel.encode_chat`` does.
    """
    sentinels = [f"\u2063MSG{i}\u2063" for i in range(len(messages))]
    rendered = target.tokenizer.apply_chat_template(
        [{"role": m["role"], "content": s} for m, s in zip(messages, sentinels)], tokenize=False
    )
    ids: list[int] = []
    mask: list[int] = []
    rest = rendered
    previous_role = None
    for message, sentinel in zip(messages + [None], sentinels + [None]):
        template_text, rest = rest.split(sentinel, 1) if sentinel else (rest, "")
        piece = target.encode_text(template_text, split_special=False)
        closes_answer = previous_role == "assistant" and piece[:1] and piece[0] in target.stop_token_ids
        ids += piece
        mask += [1] * int(bool(closes_answer)) + [0] * (len(piece) - int(bool(closes_answer)))
        if message is None:
            break
        body = target.encode_text(message["content"], split_special=True)
        ids += body
        mask += [int(message["role"] == "assistant")] * len(body)
        previous_role = message["role"]
    return ids, mask


def self_distilled(answers_dir: Path, prompt_context: int = 160) -> list[Sequence]:
    """Sequences from the answer shards written by ``selfdistill.answer_prompts``.

    Only the last ``prompt_context`` prompt tokens are kept: the loss is on the answer, and a
    long prompt costs feature recording and training time without teaching much more.
    """
    out = []
    for shard in sorted(answers_dir.glob("shard-*.jsonl")):
        for line in shard.open():
            rec = json.loads(line)
            prompt = rec["prompt_ids"][-prompt_context:]
            ids = prompt + rec["answer_ids"]
            mask = [0] * len(prompt) + [1] * len(rec["answer_ids"])
            out.append(Sequence(ids=ids[-MAX_LEN:], loss_mask=mask[-MAX_LEN:], source=rec.get("source", "answers")))
    return out


def chitchat_conversations(target: TargetModel, limit: int, seed: int = 0) -> list[Sequence]:
    """Human conversations from chitchat-dataset as chats (the second speaker is the assistant)."""
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = json.loads((Path(list(spec.submodule_search_locations)[0]) / "dataset.json").read_text())
    convos = list(data.values())
    random.Random(seed).shuffle(convos)
    out = []
    for convo in convos[:limit]:
        messages = []
        for i, turn in enumerate(convo["messages"][:12]):
            text = " ".join(m["text"].strip() for m in turn).strip()
            if text:
                messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
        if len(messages) >= 2:
            ids, mask = encode_conversation(target, messages)
            out.append(Sequence(ids=ids[:MAX_LEN], loss_mask=mask[:MAX_LEN], source="chitchat-fixed"))
    return out


@torch.inference_mode()
def record_features(target: TargetModel, sequences: list[Sequence], path: Path, batch_tokens: int = 8192,
                    metadata: dict[str, str] | None = None, taps: tuple[int, ...] = ()) -> None:
    """Run the target over every sequence (batched, right-padded) and save one safetensors shard (with
    ``metadata``, e.g. the answers per folder it was recorded from). ``taps``: also store the hidden states
    after these layers (1-based), side by side."""
    layers = int(target.config.num_hidden_layers)
    if any(not 1 <= layer < layers for layer in taps):
        raise ValueError(f"--taps must name inner layers between 1 and {layers - 1}, got {list(taps)}")
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].ids))
    lengths = torch.tensor([len(s.ids) for s in sequences])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    width_h = int(target.config.hidden_size)
    # written in place, batch by batch: one copy of the features in memory, not two
    hidden = torch.empty(int(offsets[-1]), width_h, dtype=torch.bfloat16)  # [T, H]
    tapped = torch.empty(int(offsets[-1]), len(taps) * width_h, dtype=torch.bfloat16) if taps else None  # [T, K*H]
    i = 0
    with tqdm(total=int(offsets[-1]), unit="tok", desc="features", mininterval=10) as bar:
        while i < len(order):
            j = i
            while j < len(order) and (j - i + 1) * len(sequences[order[j]].ids) <= batch_tokens:
                j += 1
            j = max(j, i + 1)
            batch = [sequences[k] for k in order[i:j]]
            width = max(len(s.ids) for s in batch)
            ids = torch.tensor([s.ids + [0] * (width - len(s.ids)) for s in batch])
            attn = torch.tensor([[1] * len(s.ids) + [0] * (width - len(s.ids)) for s in batch])
            out = target.decoder(input_ids=ids.to(target.device), attention_mask=attn.to(target.device),
                                 output_hidden_states=bool(taps))
            inner = torch.cat([out.hidden_states[layer] for layer in taps], dim=-1) if taps else None  # [B, L, K*H]
            for row, k in enumerate(order[i:j]):
                a, n = int(offsets[k]), len(sequences[k].ids)
                hidden[a : a + n] = out.last_hidden_state[row, :n].to(torch.bfloat16).cpu()
                if tapped is not None and inner is not None:
                    tapped[a : a + n] = inner[row, :n].to(torch.bfloat16).cpu()
            bar.update(sum(len(s.ids) for s in batch))
            i = j
    tensors = {
        "ids": torch.tensor([t for s in sequences for t in s.ids], dtype=torch.int64),
        "loss_mask": torch.tensor([t for s in sequences for t in s.loss_mask], dtype=torch.bool),
        "hidden": hidden,
        "offsets": offsets,
    }
    if tapped is not None:
        tensors["taps"] = tapped
        metadata = {**(metadata or {}), "tap_layers": json.dumps(list(taps))}
    save_file(tensors, str(path), metadata=metadata)


def load_features(paths: list[Path]) -> FeatureSet:
    """The recorded files, concatenated. Taps are kept when every file holds the same ones (else dropped, and a
    drafter with fused features refuses to train on them)."""
    tap_sets = {recorded_taps(p) for p in paths}
    tap_layers = tap_sets.pop() if len(tap_sets) == 1 else ()
    parts = [_mapped(p) for p in paths]
    offsets, base, groups, starts = [torch.zeros(1, dtype=torch.int64)], 0, [], []
    for path, part in zip(paths, parts):
        starts.append(base)  # the file's first token
        offsets.append(part["offsets"][1:] + base)
        base += int(part["offsets"][-1])
        groups += recorded_groups(path, part["offsets"].numel() - 1)
    return FeatureSet(
        ids=torch.cat([p["ids"] for p in parts]),
        loss_mask=torch.cat([p["loss_mask"] for p in parts]),
        hidden=Rows(tuple(p["hidden"] for p in parts), tuple(starts)),
        offsets=torch.cat(offsets),
        groups=tuple(groups),
        taps=Rows(tuple(p["taps"] for p in parts), tuple(starts)) if tap_layers else None,
        tap_layers=tap_layers,
    )


_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "I64": torch.int64, "BOOL": torch.bool}


def _mapped(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as views of the memory-mapped file (private: nothing is written back,
    nothing is read until used). The format: an 8-byte header length, a JSON header of dtypes, shapes and byte
    ranges, then the data (safetensors lays tensors out by alignment, so each view is aligned)."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    raw = torch.from_file(str(path), shared=False, size=Path(path).stat().st_size, dtype=torch.uint8)
    out = {}
    for name, info in header.items():
        if name != "__metadata__":
            a, b = info["data_offsets"]
            out[name] = raw[8 + n + a : 8 + n + b].view(_DTYPES[info["dtype"]]).view(info["shape"])
    return out


def recorded_taps(features: Path) -> tuple[int, ...]:
    """The inner layers whose hidden states a features file holds (``()`` for none)."""
    with safe_open(str(features), framework="pt") as fh:
        text = (fh.metadata() or {}).get("tap_layers")
    return tuple(int(layer) for layer in json.loads(text)) if text else ()


def recorded_counts(features: Path) -> dict[str, int] | None:
    """Answers per folder that a features file was recorded from, in recording order (``None`` for files
    recorded before this was stored)."""
    if not Path(features).is_file():
        raise ValueError(f"features file {features} does not exist")
    with safe_open(str(features), framework="pt") as fh:
        text = (fh.metadata() or {}).get("answer_counts")
    return {str(k): int(v) for k, v in json.loads(text).items()} if text else None


def recorded_groups(path: Path, sequences: int) -> list[int]:
    """Sequences per answer folder a features file was recorded from, then the rest (teacher-forced text); a
    file recorded before the folders were stored is one group."""
    sizes = list((recorded_counts(path) or {}).values())
    if sum(sizes) > sequences:
        raise ValueError(f"{path}: its metadata counts {sum(sizes)} answers but it holds {sequences} sequences")
    rest = sequences - sum(sizes)
    return [n for n in sizes if n] + ([rest] if rest else [])
