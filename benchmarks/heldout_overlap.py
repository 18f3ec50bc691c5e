"""Teacher-forced agreement of the release-2 and release-3 runs on the held-out training sequences, with the
distribution overlap sum_v min(p*, q) (the temperature-1 acceptance of one sampled token).

    .venv/bin/python benchmarks/heldout_overlap.py   # needs RUNS/features-v2 and the four runs in ~/.cache
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.target import TargetModel
from core.train.data import load_features
from core.train.loop import TrainConfig, evaluate, holdout_split
from core.drafter import load_drafter
t = TargetModel.load("default", "float32")
data = load_features([Path.home() / ".cache/jakiro-explorer/train/features-v2.safetensors"])
R = Path.home() / ".cache/jakiro-explorer/train/runs"
out = {}
for name in ("jakiro-v2", "eagle-v2", "jakiro-v3", "eagle-v3"):
    meta = json.loads((R / name / "drafter.json").read_text())
    cfg = TrainConfig.from_saved(meta["train_config"])
    d = load_drafter(R / name, t.fingerprint(), t.vocab_size).to(t.device)
    d.bind_head(t.lm_head.weight.float())
    holdout, _ = holdout_split(data, cfg)
    with torch.no_grad():
        out[name] = evaluate(d, t.embed_tokens, data, holdout, cfg)
    print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in out[name].items()}, flush=True)
(Path(__file__).parent / 'results' / 'heldout-overlap-r2-r3.json').write_text(json.dumps(out, indent=1))
