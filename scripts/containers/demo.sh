# shellcheck shell=bash
# The README's verify steps against a running API, shared by the container tests: the original
# demo's POST (201 with a PaymentId), then GET until the risk engine's decision is recorded.

DEMO_BODY='{"amount": 70.5, "currency": "USD",
  "userId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10",
  "payeeId": "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d",
  "paymentMethodId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"}'

# POSTs the demo payment to BASE_URL with KEY; prints its PaymentId, fails unless 201.
demo_post() { # base_url key
  local response status
  response=$(curl -s --max-time 10 -w '\n%{http_code}' -X POST "$1/payments" \
    -H "Content-Type: application/json" -H "Authorization: $2" -d "$DEMO_BODY")
  status=${response##*$'\n'}
  if [[ "$status" != 201 ]]; then
    echo "error: POST $1/payments answered $status: ${response%$'\n'*}" >&2
    return 1
  fi
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])["PaymentId"])' "${response%$'\n'*}"
}

# GETs the payment until the risk decision is recorded (30 s at most); prints its outcome.
demo_await_decision() { # base_url key payment_id
  local outcome="" i
  for ((i = 0; i < 150; i++)); do
    outcome=$(curl -s --max-time 5 "$1/payments/$3" -H "Authorization: $2" |
      python3 -c 'import json, sys; print((json.load(sys.stdin).get("decision") or {}).get("outcome", ""))' 2>/dev/null || true)
    if [[ -n "$outcome" ]]; then
      echo "$outcome"
      return 0
    fi
    sleep 0.2
  done
  echo "error: payment $3 has no risk decision after 30 s" >&2
  return 1
}

# Waits until URL answers 200 (SECONDS at most).
await_ok() { # url seconds what
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    curl -sf --max-time 2 -o /dev/null "$1" && return 0
    sleep 0.2
  done
  echo "error: $3: $1 did not answer 200 within $2 s" >&2
  return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
