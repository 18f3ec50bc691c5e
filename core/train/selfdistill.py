"""Self-distillation data: the target answers the training prompts itself (batched, greedy or sampled).

Shards of JSON lines (prompt ids + answer ids) are appended under the output folder; a rerun
skips prompts already answered, so the job resumes where it stopped, even when it was killed in the
middle of writing a line (the unfinished line is dropped). Sampled answers (temperature > 0) give the same
prompts new continuations, drawn from the target's own distribution: more contexts to learn from, labelled by
the target's features like greedy ones.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from core.target import TargetModel


def done_count(out_dir: Path) -> int:
    return sum(1 for shard in out_dir.glob("shard-*.jsonl") for _ in shard.open())


def drop_unfinished_line(shard: Path) -> bool:
    """Truncate ``shard`` after its last newline (a killed writer may leave half a line); True if it did."""
    data = shard.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep == len(data):
        return False
    with shard.open("r+b") as fh:
        fh.truncate(keep)
    return True


def check_resumable(out_dir: Path, prompts: list[dict], temperature: float = 0.0) -> int:
    """The number of prompts already answered in ``out_dir``; raise ValueError unless they are the first ones of
    ``prompts``, in order, answered at ``temperature``: resuming appends ``prompts[done:]``, so a prompt list
    built differently (say, without a text source that was installed when the answers were made) would silently
    repeat or skip prompts, and a folder would mix greedy and sampled answers."""
    records = [json.loads(line) for shard in sorted(out_dir.glob("shard-*.jsonl")) for line in shard.open()]
    mixed = {r.get("temperature", 0.0) for r in records} - {temperature}
    if mixed:
        raise ValueError(f"{out_dir} holds answers made at temperature {sorted(mixed)[0]:g}, not {temperature:g}: "
                         "answer into another folder (--out)")
    answered = [r["prompt"] for r in records]
    if len(answered) > len(prompts):
        raise ValueError(f"{out_dir} holds {len(answered)} answers but only {len(prompts)} prompts were built")
    for i, (done, built) in enumerate(zip(answered, prompts)):
        if done != built["prompt"]:
            raise ValueError(
                f"{out_dir}: answer {i} was made for another prompt than the one built now ({done[:60]!r} vs "
                f"{built['prompt'][:60]!r}): a text source is missing or changed (make train-setup installs them)"
            )
    return len(answered)


def answer_prompts(
    target: TargetModel, prompts: list[dict], out_dir: Path, batch_size: int = 32, max_new_tokens: int = 160,
    log_every: int = 1, temperature: float = 0.0, seed: int = 0,
) -> None:
    """Append the target's answers to ``out_dir/shard-*.jsonl``, resuming after the answered ones: greedy, or
    sampled at ``temperature`` from the whole distribution (no top-k or top-p), each batch seeded from ``seed``
    and its first prompt's index, so a rerun of the same batches draws the same answers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for shard in sorted(out_dir.glob("shard-*.jsonl")):
        if drop_unfinished_line(shard):
            print(f"{shard}: dropped an unfinished last line (the previous run was killed while writing)")
    start = check_resumable(out_dir, prompts, temperature)
    sampled = temperature > 0
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if sampled else \
        {"do_sample": False}
    made = {"temperature": temperature} if sampled else {}  # each sampled line says how it was made
    todo = prompts[start:]
    pad = target.tokenizer.pad_token_id if target.tokenizer.pad_token_id is not None else 0
    stops = sorted(target.stop_token_ids)
    t0, tokens = time.time(), 0
    for b in range(0, len(todo), batch_size):
        batch = todo[b : b + batch_size]
        ids = [target.encode_chat(p["prompt"])[-768:] for p in batch]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])  # [b, width] left-padded
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        if sampled:
            torch.manual_seed(seed + start + b)
        with torch.inference_mode():
            out = target.model.generate(
                input_ids=input_ids.to(target.device), attention_mask=attention.to(target.device),
                max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad, **sampling,
            )
        shard = out_dir / f"shard-{(start + b) // 1024:04d}.jsonl"
        lines = []
        for prompt, pids, row in zip(batch, ids, out[:, width:].tolist()):
            answer = []
            for tok in row:
                answer.append(tok)
                if tok in target.stop_token_ids:
                    break
            tokens += len(answer)
            lines.append(json.dumps({**prompt, "prompt_ids": pids, "answer_ids": answer, **made}) + "\n")
        with shard.open("a") as fh:
            fh.write("".join(lines))  # one write per batch
        if (b // batch_size) % log_every == 0:
            rate = tokens / (time.time() - t0)
            print(f"answered {start + b + len(batch)}/{len(prompts)} prompts, {rate:.0f} answer tokens/s", flush=True)
