#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS each, default 60)
# with cargo-fuzz, on the stable toolchain (`--sanitizer none`: libFuzzer's
# coverage-guided search without AddressSanitizer, which needs nightly;
# Rust's own bounds and overflow checks stay on with debug assertions).
# The corpus under fuzz/corpus/<target> grows and is kept (commit it);
# crashes land in fuzz/artifacts/<target>. Not part of CI's default run.
# Before committing a grown corpus, shrink it:
#   cargo fuzz cmin --sanitizer none --debug-assertions <target> corpus/<target>
#
#   fuzz/run.sh                 # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh admission_review
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t: ${seconds}s" >&2
  if ! cargo fuzz run --sanitizer none --debug-assertions "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1; then
    echo "fuzz/run.sh: $t FOUND A CRASH: see fuzz/artifacts/$t" >&2
    status=1
  fi
done
exit $status
