#!/usr/bin/env bash
# Fuzzes what hostile clients control (cargo fuzz: libFuzzer + AddressSanitizer), each
# target for a bounded time: the quote request JSON, the identifier newtypes, the tariff,
# the `mapped` style's templates and answer pointers.
# The targets live in fuzz/ (its own Cargo workspace); see fuzz/Cargo.toml for what each
# one checks.
#
#   scripts/fuzz.sh                      every target, FUZZ_SECONDS (60) each
#   scripts/fuzz.sh tariff newtypes      only these
#   FUZZ_SECONDS=600 scripts/fuzz.sh     longer
#
# Corpora grow in ~/.cache/osago/fuzz/corpus/<target> (seeded from fuzz/seeds/<target>),
# logs go to ~/.cache/osago/fuzz/logs/<target>.log, and an input that crashes a target is
# written to ~/.cache/osago/fuzz/artifacts/<target>/ and fails the run. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -O -a <target> <crash file>
#
# cargo fuzz passes nightly-only rustc flags (-Zsanitizer=address, …); the stable
# toolchain accepts them under RUSTC_BOOTSTRAP=1, so no nightly toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.13.2
tools="$HOME/.cache/osago/cargo-fuzz-$version"
cache="$HOME/.cache/osago/fuzz"
seconds="${FUZZ_SECONDS:-60}"
export PATH="$tools/bin:$PATH" RUSTC_BOOTSTRAP=1

say() { printf '==> %s\n' "$*"; }

if ! cargo fuzz --version 2>/dev/null | grep -qF "$version"; then
  say "installing cargo-fuzz $version into $tools"
  # Its own temporary build directory, not the project's shared target.
  env -u CARGO_TARGET_DIR cargo install cargo-fuzz --version "$version" --locked --root "$tools"
fi

common=(--fuzz-dir fuzz --target-dir "$HOME/.cache/osago/fuzz-target" -O -a)
if (($#)); then targets=("$@"); else mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz); fi

say "building ${#targets[@]} fuzz targets (release, debug assertions, AddressSanitizer)"
for target in "${targets[@]}"; do
  cargo fuzz build "${common[@]}" "$target"
done

failed=()
for target in "${targets[@]}"; do
  corpus="$cache/corpus/$target" artifacts="$cache/artifacts/$target/" log="$cache/logs/$target.log"
  mkdir -p "$corpus" "$artifacts" "$cache/logs"
  options=(-max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$artifacts")
  [[ -f fuzz/$target.dict ]] && options+=(-dict="fuzz/$target.dict")
  say "fuzzing $target for ${seconds}s (log: $log)"
  start=$(date +%s)
  if cargo fuzz run "${common[@]}" "$target" "$corpus" "fuzz/seeds/$target" -- "${options[@]}" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    say "$target: no finding in $(($(date +%s) - start))s, ${runs:-?} inputs, corpus $(ls "$corpus" | wc -l) files"
  else
    failed+=("$target")
    echo "error: $target failed; the panic and the input:" >&2
    grep -m1 -A3 -E "panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer" "$log" >&2 || tail -n 30 "$log" >&2
    grep -E "Test unit written to" "$log" >&2 || true
  fi
done

if ((${#failed[@]})); then
  echo "error: findings in ${failed[*]}; inputs under $cache/artifacts/" >&2
  exit 1
fi
say "fuzzing passed: ${targets[*]}"
