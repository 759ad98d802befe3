#!/usr/bin/env bash
# pochta_instance.sh -- create (or recreate) the Pochta instance the benchmarks run against.
#
#   bench/pochta_instance.sh [DIR]        (default DIR: /tmp/pochta-bench)
#
# It runs `pochta init` (listeners on 127.0.0.1: mta 2525, submission 2587/2465, imap
# 2143/2993, pop3 2110/2995), adds the benchmark mailbox bench@example.test with password
# bench-pass-123, and appends the benchmark overrides:
#   - inbound SPF/DKIM/DMARC checks off: the machine has no network, so every real DNS
#     lookup would time out; the Postfix+Dovecot reference does no such checks either;
#   - DKIM signing off on submission (the reference does not sign);
#   - max_connections(_per_ip) and the per-role pools raised: every benchmark client comes
#     from 127.0.0.1;
#   - the per-account submission rate limits (300 messages/hour by default) raised, so
#     the submission benchmark measures sessions, not the limiter.
# With AUTH_CACHE_SECONDS=N set, also writes [auth] cache_seconds = N (0: argon2id on every
# login, the way the Dovecot reference verifies SHA512-CRYPT on every login).
# Everything else (`[storage] fsync = "optimized"`: every message fsynced before the reply,
# flag changes and expunges not; argon2id parameters, TLS) stays at its default.
# Start the server afterwards with
#   .venv/bin/pochta -c DIR/pochta.toml serve
set -euo pipefail
DIR="${1:-/tmp/pochta-bench}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POCHTA="${POCHTA:-$ROOT/.venv/bin/pochta}"
USER_ADDR="${BENCH_USER:-bench@example.test}"
USER_PASS="${BENCH_PASS:-bench-pass-123}"

rm -rf -- "$DIR"
"$POCHTA" init --dir "$DIR" --hostname mail.example.test --domain example.test >/dev/null
printf '%s\n' "$USER_PASS" | "$POCHTA" -c "$DIR/pochta.toml" user add "$USER_ADDR" --password-stdin
cat >>"$DIR/pochta.toml" <<'TOML'

# --- benchmark overrides (bench/pochta_instance.sh) ---
[spf]
check = false

[dkim]
verify = false
sign = false

[dmarc]
check = false

[limits]
max_connections = 20000
max_connections_per_ip = 20000
mta_max_connections = 5000
mta_max_connections_per_ip = 5000
submission_max_connections = 5000
submission_max_connections_per_ip = 5000
imap_max_connections = 5000
imap_max_connections_per_ip = 5000
pop3_max_connections = 5000
pop3_max_connections_per_ip = 5000

[submission]
messages_per_hour = 100000000
recipients_per_hour = 100000000
TOML
if [ -n "${SPAM_BENCH:-}" ]; then
  # screening and the learning filter on (bench/smtp_inbound.py --targets pochta-spam):
  # ports moved by +1000 so it runs beside the plain instance; DNS from bench/dns_local.py
  sed -i 's/^port = 2/port = 3/' "$DIR/pochta.toml"
  cat >>"$DIR/pochta.toml" <<'TOML'

[dns]
nameservers = ["127.0.0.2"]

[screening]
dnsbl_sites = ["zen.bench.test=127.0.0.[2..11]*3", "bl.bench.test*2"]
dnswl_sites = ["wl.bench.test"]
fcrdns = true

[spam]
bayes_min_trained = 20
TOML
  "$ROOT/.venv/bin/python" -c "
import sys; sys.path.insert(0, '$ROOT')
from pathlib import Path
from tests.spam.corpus import corpus
for sub in ('spam', 'ham'):
    Path('$DIR/corpus', sub).mkdir(parents=True, exist_ok=True)
for i, (data, spam) in enumerate(corpus(seed=1, count=400)):
    Path('$DIR/corpus', 'spam' if spam else 'ham', f'{i}.eml').write_bytes(data)
"
  "$POCHTA" -c "$DIR/pochta.toml" spam train "$USER_ADDR" --spam "$DIR/corpus/spam" \
    --ham "$DIR/corpus/ham"
fi
if [ -n "${AUTH_CACHE_SECONDS:-}" ]; then
  printf '\n[auth]\ncache_seconds = %s\n' "$AUTH_CACHE_SECONDS" >>"$DIR/pochta.toml"
fi
echo "instance ready: $DIR/pochta.toml (user $USER_ADDR)"
