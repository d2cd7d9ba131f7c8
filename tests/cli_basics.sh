#!/usr/bin/env bash
# The mtl command line: help and usage errors, train with snapshots, resume, fine-tuning, the JSON
# log, test, describe and time. Usage: cli_basics.sh MTL_BINARY SOURCE_DIR
. "$(dirname "$0")/support/cli_lib.sh" "$@"

expect_rc 0 "mtl --help" "$mtl" --help
expect_grep "train" "$work/out" "help lists commands"
expect_rc 2 "no command" "$mtl"
expect_rc 2 "unknown command" "$mtl" frobnicate
for cmd in train test describe time; do
  expect_rc 0 "$cmd --help" "$mtl" "$cmd" --help
  expect_grep "usage: mtl $cmd" "$work/out" "$cmd usage"
done
expect_rc 2 "train without solver" "$mtl" train
expect_grep "usage: mtl train" "$work/err" "usage on bad arguments"
expect_rc 2 "unknown option" "$mtl" train --solver x --bogus
expect_rc 2 "bad iterations" "$mtl" time --model x --iterations -3
expect_rc 1 "missing solver file" "$mtl" train --solver "$work/none.prototxt"
expect_grep "none.prototxt" "$work/err" "missing file named"

cp "$src/tests/data/tiny_net.prototxt" "$src/tests/data/tiny_solver.prototxt" "$work/"
expect_rc 0 "train" "$mtl" train --solver "$work/tiny_solver.prototxt" --log "$work/log.jsonl"
expect_grep "loss1 = .* (\* 0.5 = .* loss)" "$work/out" "per-task loss with weight"
expect_grep "lr = " "$work/out" "learning rate shown"
[ -f "$work/tiny_iter_10.mtlsnap" ] && ok || bad "snapshot at iteration 10"
[ -f "$work/tiny_iter_20.mtlsnap" ] && ok || bad "snapshot at the end"
ls "$work"/*.tmp >/dev/null 2>&1 && bad "temporary snapshot left behind" || ok
expect_grep '"phase":"train"' "$work/log.jsonl" "json log train lines"
expect_grep '"phase":"test"' "$work/log.jsonl" "json log test lines"
if /usr/bin/python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$work/log.jsonl"; then ok; else bad "json log parses"; fi

# resume from 10 reaches the same final loss as the straight run
grep -o '"iter":20,"phase":"train"[^}]*"loss":[^,]*' "$work/log.jsonl" > "$work/straight"
expect_rc 0 "resume" "$mtl" train --solver "$work/tiny_solver.prototxt" --resume "$work/tiny_iter_10.mtlsnap" --log "$work/log2.jsonl"
grep -o '"iter":20,"phase":"train"[^}]*"loss":[^,]*' "$work/log2.jsonl" > "$work/resumed"
if [ -s "$work/straight" ] && cmp -s "$work/straight" "$work/resumed"; then ok; else bad "resumed run differs: $(cat "$work/straight") vs $(cat "$work/resumed")"; fi

expect_rc 0 "fine-tune" "$mtl" train --solver "$work/tiny_solver.prototxt" --weights "$work/tiny_iter_20.mtlsnap" --max-iter 2
expect_grep "trunk" "$work/out" "weights report names layers"
printf 'garbage' > "$work/bad.mtlsnap"
expect_rc 1 "corrupt snapshot" "$mtl" train --solver "$work/tiny_solver.prototxt" --resume "$work/bad.mtlsnap"
expect_grep "bad.mtlsnap" "$work/err" "corrupt snapshot named"

expect_rc 0 "test" "$mtl" test --model "$work/tiny_net.prototxt" --weights "$work/tiny_iter_20.mtlsnap" --iterations 3
expect_grep "loss2 = .* (\* 0.5" "$work/out" "test prints task losses"
expect_rc 0 "describe" "$mtl" describe "$work/tiny_net.prototxt"
expect_grep "shared trunk" "$work/out" "describe task tree"
expect_grep "task loss1" "$work/out" "describe per task"
expect_rc 0 "time" "$mtl" time --model "$work/tiny_net.prototxt" --iterations 3
expect_grep "Average Forward-Backward" "$work/out" "time totals"
printf 'layer { name: "a" type: "ReLU" bottom: "x" }\n' > "$work/broken.prototxt"
expect_rc 1 "broken net" "$mtl" describe "$work/broken.prototxt"
expect_grep "broken.prototxt:1" "$work/err" "error names file and line"

cli_finish
