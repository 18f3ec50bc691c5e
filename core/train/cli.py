"""``python -m core train answers|features|fit`` (the three resumable stages of drafter training), and
``vocab``, ``eval``, ``score`` to re-pick and measure trained drafters."""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, fields
from pathlib import Path

from core.models import DEFAULT_TARGET, cache_dir

ANSWER_SETS = {"chat": "answers", "broad": "answers-broad", "creative": "answers-creative",
               "knowledge": "answers-knowledge", "requests": "answers-requests"}  # prompt set -> folder


def add_parser(subparsers) -> None:
    train = subparsers.add_parser("train", help="build training data and train a drafter")
    stages = train.add_subparsers(dest="stage", required=True)
    default_root = cache_dir() / "train"  # features and checkpoints: large, outside git
    data_dir = Path(__file__).resolve().parents[2] / "assets" / "train-data"  # answers: small, committed
    answer_folders = [data_dir / folder for folder in ANSWER_SETS.values()]

    ans = stages.add_parser("answers", help="self-distillation: the target answers the training prompts")
    ans.add_argument("--target", default=DEFAULT_TARGET)
    ans.add_argument("--dtype", default="bfloat16")
    ans.add_argument("--set", choices=list(ANSWER_SETS), default="chat",
                     help="chat: conversation, docs, quotes, templates; broad: coding, extraction, science, "
                          "humanities, reasoning; creative: writing, role-play, advice, editing; knowledge: "
                          "explanations and essays in nine fields, comparisons, debates, worked math; requests: "
                          "multi-part requests (letters, posts, plans, role-play, extraction from a given text, "
                          "analysis, teaching) with constraints on length, format and tone")
    ans.add_argument("--prompts", type=int, default=6000, help="how many prompts to build (resumes)")
    ans.add_argument("--batch-size", type=int, default=32)
    ans.add_argument("--max-new-tokens", type=int, default=160)
    ans.add_argument("--temperature", type=float, default=0.0,
                     help="0: greedy answers; above 0: answers sampled from the target's whole distribution at this "
                          "temperature (new continuations of the same prompts; at most 2)")
    ans.add_argument("--seed", type=int, default=0, help="sampled answers: each batch draws from seed + its first index")
    ans.add_argument("--out", type=Path, default=None,
                     help="default: assets/train-data/answers[-broad|-creative|-knowledge|-requests], with "
                          "-t<temperature> appended for sampled answers")
    ans.set_defaults(func=cmd_answers)

    feat = stages.add_parser("features", help="record the target's features on the training sequences")
    feat.add_argument("--target", default=DEFAULT_TARGET)
    feat.add_argument("--dtype", default="auto", help="the target's dtype while recording (auto: bfloat16 where "
                                                       "the hardware has it, else float32)")
    feat.add_argument("--answers", type=Path, nargs="+", default=answer_folders,
                      help="answer folders (missing ones are skipped)")
    feat.add_argument("--chitchat", type=int, default=0, help="also teacher-force this many human conversations")
    feat.add_argument("--prompt-context", type=int, default=160, help="prompt tokens kept before each answer")
    feat.add_argument("--out", type=Path, default=default_root / "features.safetensors")
    feat.add_argument("--limit", type=int, default=None, help="only the first N sequences of each answer folder")
    feat.add_argument("--taps", default="", help="also record the hidden states after these inner layers (1-based, "
                                                 "comma-separated, e.g. 3,15,22), for drafters with fused features")
    feat.set_defaults(func=cmd_features)

    voc = stages.add_parser("vocab", help="pick a trained drafter's draft vocabulary again from the answers")
    voc.add_argument("--target", default=DEFAULT_TARGET)
    voc.add_argument("--drafter", type=Path, required=True, help="a drafter folder (e.g. assets/drafters/jakiro)")
    voc.add_argument("--out", type=Path, required=True, help="where the drafter with the new vocabulary goes")
    voc.add_argument("--size", type=int, default=8192, help="tokens in the new draft vocabulary")
    voc.add_argument("--answers", type=Path, nargs="+", default=answer_folders)
    voc.add_argument("--holdout-every", type=int, default=50, help="leave out these held-out answers when counting")
    voc.set_defaults(func=cmd_vocab)

    ev = stages.add_parser("eval", help="tau of a drafter on the held-out slice of the training prompts")
    ev.add_argument("--target", default=DEFAULT_TARGET)
    ev.add_argument("--dtype", default="bfloat16")
    ev.add_argument("--drafter", nargs="+", required=True, help="jakiro, eagle or drafter folders")
    ev.add_argument("--answers", type=Path, nargs="+", default=answer_folders)
    ev.add_argument("--every", type=int, default=50, help="the training loop's holdout_every")
    ev.add_argument("--holdout-scheme", default="per-folder", choices=["per-folder", "global"],
                    help="the training run's holdout_scheme (releases 1-3: global)")
    ev.add_argument("--limit", type=int, default=30)
    ev.add_argument("--folder", default=None, help="only held-out prompts from this answer folder (e.g. answers-broad)")
    ev.add_argument("--features", type=Path, default=None,
                    help="the features file the drafters were trained on: held-out prompts are counted over the "
                         "answers it was recorded from, not the answers appended since")
    ev.add_argument("--counts", default=None,
                    help="answers per folder at recording time, for older features files: answers=N,answers-broad=M")
    ev.add_argument("--max-new-tokens", type=int, default=96)
    ev.add_argument("--json", type=Path, default=None)
    ev.set_defaults(func=cmd_eval)

    sc = stages.add_parser("score", help="teacher-forced agreement by tree depth on the held-out recorded features")
    sc.add_argument("--target", default=DEFAULT_TARGET)
    sc.add_argument("--drafter", nargs="+", required=True, help="jakiro, eagle or drafter folders")
    sc.add_argument("--features", type=Path, nargs="+", required=True)
    sc.add_argument("--passes", type=int, default=5, help="score nodes down to this depth (own predictions)")
    sc.add_argument("--holdout-every", type=int, default=50, help="the training loop's holdout_every")
    sc.add_argument("--json", type=Path, default=None)
    sc.set_defaults(func=cmd_score)

    fit = stages.add_parser("fit", help="train (or resume) a drafter on recorded features")
    fit.add_argument("--target", default=DEFAULT_TARGET)
    fit.add_argument("--features", type=Path, nargs="+", default=[default_root / "features.safetensors"])
    fit.add_argument("--run", type=Path, required=True, help="checkpoint folder (resumes when it exists)")
    fit.add_argument("--export", type=Path, default=None, help="copy the final drafter here (e.g. assets/drafters/jakiro)")
    fit.add_argument("--init", type=Path, default=None,
                     help="start a new run from this trained drafter folder (e.g. assets/drafters/jakiro): a warm "
                          "start with a fresh optimizer and schedule; a dense one with --ffn moe is upcycled (its "
                          "MLP split into the two experts, the same function)")
    fit.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    from core.train.loop import HOLDOUT_SCHEMES, PRECISIONS, TrainConfig

    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "ffn":
            fit.add_argument(flag, required=True, choices=["dense", "moe"])
        elif f.name == "holdout_scheme":
            fit.add_argument(flag, default=f.default, choices=list(HOLDOUT_SCHEMES))
        elif f.name == "precision":
            fit.add_argument(flag, default=f.default, choices=list(PRECISIONS),
                             help="bf16 mixed precision, fp32, or auto: bf16 where the hardware has it")
        elif f.name == "feature_layers":
            fit.add_argument(flag, type=parse_layers, default=f.default,
                             help="inner target layers fused into the drafter's input, e.g. 3,15,22 (EAGLE-3)")
        else:
            fit.add_argument(flag, type=type(f.default), default=f.default)
    fit.set_defaults(func=cmd_fit)


def cmd_answers(args: argparse.Namespace) -> int:
    from core.target import TargetModel
    from core.train.broad import build_broad_prompts
    from core.train.creative import build_creative_prompts
    from core.train.knowledge import build_knowledge_prompts
    from core.train.prompts import build_prompts
    from core.train.requests import build_request_prompts
    from core.train.selfdistill import answer_prompts

    build = {"chat": build_prompts, "broad": build_broad_prompts, "creative": build_creative_prompts,
             "knowledge": build_knowledge_prompts, "requests": build_request_prompts}[args.set]
    if not (math.isfinite(args.temperature) and 0.0 <= args.temperature <= 2.0):
        raise ValueError(f"--temperature must be a number in [0, 2], got {args.temperature}")
    folder = ANSWER_SETS[args.set] + (f"-t{args.temperature:g}" if args.temperature > 0 else "")
    out = args.out or Path(__file__).resolve().parents[2] / "assets" / "train-data" / folder
    target = TargetModel.load(args.target, args.dtype)
    answer_prompts(target, build(args.prompts), out, args.batch_size, args.max_new_tokens,
                   temperature=args.temperature, seed=args.seed)
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from core.target import TargetModel
    from core.train.data import chitchat_conversations, record_features, self_distilled

    target = TargetModel.load(args.target, args.dtype)
    per_folder = {folder.name: self_distilled(folder, args.prompt_context)[: args.limit]
                  for folder in args.answers if folder.is_dir()}
    sequences = [s for seqs in per_folder.values() for s in seqs]
    if args.chitchat:
        sequences += chitchat_conversations(target, args.chitchat)
    if not sequences:
        raise ValueError(f"no training sequences: run `python -m core train answers` first (looked in {args.answers})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    counts = {name: len(seqs) for name, seqs in per_folder.items()}
    record_features(target, sequences, args.out, metadata={"answer_counts": json.dumps(counts),
                                                            "target_dtype": str(target.dtype).removeprefix("torch.")},
                    taps=parse_layers(args.taps))
    tokens = sum(len(s.ids) for s in sequences)
    print(f"recorded {len(sequences)} sequences, {tokens} tokens -> {args.out}")
    return 0


def parse_layers(text: str) -> tuple[int, ...]:
    """``"3,15,22"`` -> ``(3, 15, 22)``; ``""`` -> ``()``."""
    try:
        layers = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise ValueError(f"layers must be comma-separated numbers such as 3,15,22, got {text!r}") from err
    if len(set(layers)) != len(layers) or list(layers) != sorted(layers):
        raise ValueError(f"layers must be distinct and increasing, got {text!r}")
    return layers


def cmd_vocab(args: argparse.Namespace) -> int:
    from core.drafter import load_drafter, save_drafter
    from core.target import TargetModel
    from core.train.vocab import coverage, ranked_vocabulary, training_token_counts, with_vocabulary

    if not 16 <= args.size <= 65536 or args.holdout_every < 2:
        raise ValueError("--size must be between 16 and 65536 and --holdout-every at least 2")
    target = TargetModel.load(args.target, "float32")
    drafter = load_drafter(args.drafter, target.fingerprint(), target.vocab_size)
    counts = training_token_counts(args.answers, args.holdout_every)
    if not counts:
        raise ValueError(f"no answers found in {[str(a) for a in args.answers]}")
    ids = ranked_vocabulary(counts, args.size, sorted(target.stop_token_ids))
    meta = json.loads((args.drafter / "drafter.json").read_text())
    before, after = coverage(counts, drafter.vocab_ids), coverage(counts, ids)
    meta["vocabulary"] = {"size": ids.numel(), "answer_tokens_counted": sum(counts.values()),
                          "folders": [a.name for a in args.answers if a.is_dir()], "holdout_every": args.holdout_every,
                          "coverage_before": round(before, 4), "coverage": round(after, 4)}
    meta.pop("config", None)
    save_drafter(with_vocabulary(drafter, ids), args.out, extra=meta)
    print(f"{args.out}: {ids.numel()} draft tokens cover {after:.1%} of the training answers' tokens "
          f"(the old vocabulary: {before:.1%})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from core.config import TreeConfig
    from core.engine import SpecDecoder
    from core.registry import build_proposer
    from core.target import TargetModel
    from core.train.data import recorded_counts
    from core.train.heldout import heldout_prompts, heldout_tau, parse_counts

    counts = recorded_counts(args.features) if args.features else None
    if args.features and counts is None:
        raise ValueError(f"{args.features} does not say which answers it was recorded from (recorded before "
                         "that was stored): pass the counts instead, e.g. --counts answers=2368,answers-broad=1440")
    if args.counts:  # overrides what the features file says
        counts = parse_counts(args.counts)
    target = TargetModel.load(args.target, args.dtype)
    prompts = heldout_prompts(args.answers, args.every, args.limit, args.folder, counts,
                              per_folder=args.holdout_scheme == "per-folder")
    if not prompts:
        raise ValueError(f"no held-out prompts in {[str(a) for a in args.answers]}")
    results = {}
    for spec in args.drafter:
        proposer = build_proposer(spec, target)
        moe = bool(proposer and proposer.drafter.cfg.is_moe)
        tree = TreeConfig(schedule="hybrid" if moe else "standard")
        results[spec] = heldout_tau(SpecDecoder(target, proposer), prompts, tree, args.max_new_tokens)
        print(json.dumps({spec: results[spec]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from core.drafter import load_drafter
    from core.registry import spec_folder
    from core.target import TargetModel
    from core.train.data import load_features
    from core.train.loop import TrainConfig, evaluate, holdout_split

    if not 2 <= args.passes <= 8 or args.holdout_every < 2:
        raise ValueError("--passes must be between 2 and 8 and --holdout-every at least 2")
    target = TargetModel.load(args.target, "float32")
    data = load_features(args.features)
    results = {}
    for spec in args.drafter:
        drafter = load_drafter(spec_folder(spec), target.fingerprint(), target.vocab_size).to(target.device)
        drafter.bind_head(target.lm_head.weight.float())
        cfg = TrainConfig(ffn="moe" if drafter.cfg.is_moe else "dense", holdout_every=args.holdout_every)
        holdout, _ = holdout_split(data, cfg)
        results[spec] = evaluate(drafter, target.embed_tokens, data, holdout, cfg, passes=args.passes)
        print(json.dumps({spec: results[spec]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import shutil

    from core.target import TargetModel
    from core.train.data import load_features
    from core.train.loop import TrainConfig, train

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    target = TargetModel.load(args.target, "float32")
    data = load_features(args.features)
    state = train(target, data, cfg, args.run, args.max_minutes, args.init)
    print(json.dumps({"step": state["step"], "done": state["done"], "final": state["final"]}))
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
        for name in ("drafter.safetensors", "drafter.json"):
            shutil.copy2(args.run / name, args.export / name)
        meta = json.loads((args.export / "drafter.json").read_text())
        meta["recipe"] = {"train_config": asdict(cfg), "features": [str(p) for p in args.features],
                          "sequences": len(data), "tokens": int(data.ids.numel()),
                          "assistant_tokens": int(data.loss_mask.sum())}
        (args.export / "drafter.json").write_text(json.dumps(meta, indent=2) + "\n")
    return 0
