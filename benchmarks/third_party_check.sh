#!/usr/bin/env bash
# Run unmodified third-party M-Pesa SDKs (paymentsds Python and JavaScript) against `mpesa-sandbox serve` on the
# REAL ports (offset 0: both SDKs hard-code 18352/18353/18354). Loopback only, bounded in time.
#
#   benchmarks/third_party_check.sh            # everything: venv + npm install in $WORK, simulator, checks
#   SKIP_NODE=1 benchmarks/third_party_check.sh
#
# Needs network access to PyPI (and npm) the first time; the venv and node_modules are reused afterwards.
# The SDKs are not patched. To record what they send and get, the drivers observe the HTTP library underneath
# (a wrapper around requests.Session.send in Python, axios interceptors in node) and pass everything through.
# Results: $WORK/results-python.json, $WORK/results-node.json, and a summary on stdout. Exit 1 if a step's HTTP
# status or response code differs from the simulator's scenario table.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/tmp/kulipa-third-party}"
PY_SDK="${PY_SDK:-paymentsds-mpesa==0.1a10}"
JS_SDK="${JS_SDK:-@paymentsds/mpesa@0.1.0-alpha-9}"
SANDBOX="$REPO/.venv/bin/mpesa-sandbox"
PORTS=(18352 18353 18354 18345 18349 19323)
mkdir -p "$WORK"

# 1. Nothing may be listening on the real ports (the SDKs cannot be pointed elsewhere).
for port in "${PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; the paymentsds SDKs cannot use other ports, stop it first" >&2
    exit 2
  fi
done

# 2. Throwaway installs (not the project venv).
if [ ! -x "$WORK/venv/bin/python" ]; then python3 -m venv "$WORK/venv"; fi
timeout 300 "$WORK/venv/bin/pip" install --quiet --disable-pip-version-check "$PY_SDK"
RUN_NODE=0
if [ -z "${SKIP_NODE:-}" ] && command -v node >/dev/null && command -v npm >/dev/null; then
  mkdir -p "$WORK/node"
  if [ ! -f "$WORK/node/package.json" ]; then (cd "$WORK/node" && npm init -y >/dev/null); fi
  (cd "$WORK/node" && timeout 300 npm install --silent --no-audit --no-fund "$JS_SDK")
  RUN_NODE=1
fi

# 3. The simulator on the real ports, its own key in $WORK.
"$SANDBOX" serve --answer-delay 0 --private-key "$WORK/private_key.pem" >"$WORK/sandbox.log" 2>&1 &
SANDBOX_PID=$!
cleanup() {
  if kill -0 "$SANDBOX_PID" 2>/dev/null; then
    kill -TERM "$SANDBOX_PID"
    for _ in $(seq 1 100); do kill -0 "$SANDBOX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SANDBOX_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # exit runs the EXIT trap
ready=0
for _ in $(seq 1 300); do  # poll up to 30 s (the first start generates an RSA 4096 key)
  if ! kill -0 "$SANDBOX_PID" 2>/dev/null; then cat "$WORK/sandbox.log" >&2; exit 1; fi
  if grep -q '^Ready' "$WORK/sandbox.log" 2>/dev/null \
     && (exec 3<>/dev/tcp/127.0.0.1/18352) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/18354) 2>/dev/null; then
    ready=1; break
  fi
  sleep 0.1
done
[ "$ready" = 1 ] || { echo "simulator did not start" >&2; cat "$WORK/sandbox.log" >&2; exit 1; }

export MPESA_API_KEY="kulipa-sandbox-api-key-000000001"
MPESA_PUBLIC_KEY="$("$SANDBOX" public-key --private-key "$WORK/private_key.pem")"
export MPESA_PUBLIC_KEY
export RUN_ID="R$(date +%s | tail -c 6)"

# 4. Python SDK driver.
cat >"$WORK/check_python.py" <<'PY'
import json, os, sys
import requests
from importlib.metadata import version
from paymentsds.mpesa import Client

exchanges = []
_send = requests.sessions.Session.send

def observed_send(self, request, **kwargs):  # observe only: the SDK and requests run unchanged
    response = _send(self, request, **kwargs)
    headers = dict(request.headers)
    if "Authorization" in headers:
        headers["Authorization"] = headers["Authorization"][:17] + "...(%d chars)" % len(headers["Authorization"])
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    exchanges.append({"request": {"method": request.method, "url": request.url, "headers": headers, "body": body},
                      "response": {"status": response.status_code, "body": response.text}})
    return response

requests.sessions.Session.send = observed_send

client = Client(api_key=os.environ["MPESA_API_KEY"], public_key=os.environ["MPESA_PUBLIC_KEY"],
                service_provider_code="171717", initiator_identifier="MPesa2018", security_credential="Mpesa2019",
                host="http://127.0.0.1")
run = os.environ["RUN_ID"] + "P"
steps = []

def step(name, call, data, expect_status, expect_code, expect_tx_status=None):
    before = len(exchanges)
    try:
        r = call(data)
        sdk = {"success": r.success, "status": {"code": r.status.code, "description": r.status.description},
               "data": r.data}
    except Exception as exc:  # what the SDK raised
        sdk = {"exception": f"{type(exc).__name__}: {exc}"}
    ex = exchanges[before] if len(exchanges) > before else None
    got_status = ex["response"]["status"] if ex else None
    try:
        body = json.loads(ex["response"]["body"]) if ex else {}
    except ValueError:
        body = {}
    match = got_status == expect_status and body.get("output_ResponseCode") == expect_code
    if expect_tx_status is not None:
        match = match and body.get("output_ResponseTransactionStatus") == expect_tx_status
    steps.append({"step": name, "intent": data, "expected": [expect_status, expect_code, expect_tx_status],
                  "sdk_result": sdk, "exchange": ex, "match": match})
    return body

ok = step("c2b 258840000001 (success)", client.receive,
          {"from": "258840000001", "amount": "10", "reference": run + "1", "transaction": "T12344C"}, 201, "INS-0")
step("c2b 258840000002 (insufficient)", client.receive,
     {"from": "258840000002", "amount": "10", "reference": run + "2", "transaction": "T12344C"}, 422, "INS-2006")
step("c2b 258840000003 (cancelled)", client.receive,
     {"from": "258840000003", "amount": "10", "reference": run + "3", "transaction": "T12344C"}, 401, "INS-5")
tx = ok.get("output_TransactionID", "missing")
for suffix, status in (("1", "Completed"), ("2", "Cancelled"), ("3", "Cancelled")):
    step(f"query {run + suffix}", client.query, {"subject": run + suffix, "reference": run + "Q" + suffix},
         200, "INS-0", status)
step(f"revert {tx}", client.revert, {"transaction": tx, "amount": "10", "reference": run + "V1"}, 201, "INS-0")
after = step(f"query {tx} after reversal", client.query, {"subject": tx, "reference": run + "Q4"}, 200, "INS-0",
             "Completed")
print(json.dumps({"sdk": "paymentsds-mpesa (PyPI)", "version": version("paymentsds-mpesa"),
                  "requests": version("requests"), "python": sys.version.split()[0],
                  "reversed_after": after.get("output_Reversed"), "steps": steps}, indent=2))
PY

echo "== paymentsds-mpesa (Python)"
timeout 120 "$WORK/venv/bin/python" "$WORK/check_python.py" >"$WORK/results-python.json"

# 5. JavaScript SDK driver.
if [ "$RUN_NODE" = 1 ]; then
  cat >"$WORK/node/check_node.mjs" <<'JS'
import axios from "axios"; // the very instance the SDK imports
import { readFileSync } from "node:fs";
import { Client } from "@paymentsds/mpesa";

const exchanges = [];
const redact = (h) => {
  const out = { ...h };
  for (const k of Object.keys(out)) if (k.toLowerCase() === "authorization") out[k] = `${out[k].slice(0, 17)}...(${out[k].length} chars)`;
  for (const k of ["common", "get", "post", "put", "delete", "head", "patch"]) delete out[k];
  return out;
};
const record = (config, status, data) => exchanges.push({
  request: { method: config.method, url: `${config.baseURL || ""}${config.url}`, params: config.params || null,
             headers: redact(config.headers || {}), body: config.data ?? null },
  response: { status, body: typeof data === "string" ? data : JSON.stringify(data) },
});
axios.interceptors.response.use(
  (r) => { record(r.config, r.status, r.data); return r; },
  (e) => { if (e.response) record(e.response.config, e.response.status, e.response.data);
           else record(e.config || {}, null, String(e)); return Promise.reject(e); });

const client = new Client({
  apiKey: process.env.MPESA_API_KEY, publicKey: process.env.MPESA_PUBLIC_KEY, serviceProviderCode: "171717",
  initiatorIdentifier: "MPesa2018", securityCredential: "Mpesa2019", host: "http://127.0.0.1",
});
const run = `${process.env.RUN_ID}N`;
const steps = [];
async function step(name, call, data, expectStatus, expectCode, expectTx = null) {
  const before = exchanges.length;
  let sdk;
  try { sdk = { resolved: await call(data) }; }
  catch (e) { sdk = e instanceof Error ? { thrown: `${e.name}: ${e.message}` } : { rejected: e }; }
  const ex = exchanges[before] || null;
  let body = {};
  try { body = ex ? JSON.parse(ex.response.body) : {}; } catch { body = {}; }
  let match = ex !== null && ex.response.status === expectStatus && body.output_ResponseCode === expectCode;
  if (expectTx !== null) match = match && body.output_ResponseTransactionStatus === expectTx;
  steps.push({ step: name, intent: { ...data }, expected: [expectStatus, expectCode, expectTx], sdk_result: sdk,
               exchange: ex, match });
  return body;
}
const ok = await step("c2b 258840000001 (success)", (d) => client.receive(d),
  { from: "258840000001", amount: "10", reference: `${run}1`, transaction: "T12344C" }, 201, "INS-0");
await step("c2b 258840000002 (insufficient)", (d) => client.receive(d),
  { from: "258840000002", amount: "10", reference: `${run}2`, transaction: "T12344C" }, 422, "INS-2006");
await step("c2b 258840000003 (cancelled)", (d) => client.receive(d),
  { from: "258840000003", amount: "10", reference: `${run}3`, transaction: "T12344C" }, 401, "INS-5");
const tx = ok.output_TransactionID || "missing";
for (const [suffix, status] of [["1", "Completed"], ["2", "Cancelled"], ["3", "Cancelled"]]) {
  await step(`query ${run}${suffix}`, (d) => client.query(d), { subject: `${run}${suffix}`, reference: `${run}Q${suffix}` },
    200, "INS-0", status);
}
await step(`revert ${tx}`, (d) => client.revert(d), { transaction: tx, amount: "10", reference: `${run}V1` }, 201, "INS-0");
const after = await step(`query ${tx} after reversal`, (d) => client.query(d), { subject: tx, reference: `${run}Q4` },
  200, "INS-0", "Completed");
const pkg = (name) => JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url))).version;
console.log(JSON.stringify({ sdk: "@paymentsds/mpesa (npm)", version: pkg("@paymentsds/mpesa"), axios: pkg("axios"),
  node: process.version, reversed_after: after.output_Reversed, steps }, null, 2));
JS
  echo "== @paymentsds/mpesa (node)"
  (cd "$WORK/node" && timeout 120 node check_node.mjs >"$WORK/results-node.json")
fi

# 6. Summary: one line per step, and what the simulator recorded.
"$WORK/venv/bin/python" - "$WORK" "$RUN_NODE" <<'PY'
import json, sys, urllib.request
work, run_node = sys.argv[1], sys.argv[2] == "1"
failed = 0
for name in ["python"] + (["node"] if run_node else []):
    report = json.load(open(f"{work}/results-{name}.json"))
    print(f"{report['sdk']} {report['version']}")
    for s in report["steps"]:
        ex = s["exchange"] or {}
        resp = ex.get("response", {})
        try:
            code = json.loads(resp.get("body") or "{}").get("output_ResponseCode")
        except ValueError:
            code = "?"
        failed += not s["match"]
        print(f"  {'ok  ' if s['match'] else 'DIFF'} {s['step']:<40} HTTP {resp.get('status')} {code}"
              f"  expected {s['expected']}")
with urllib.request.urlopen("http://127.0.0.1:18352/sandbox/transactions", timeout=10) as r:
    txs = json.load(r)["transactions"]
print("simulator transactions:")
for t in txs:
    print("  ", {k: t.get(k) for k in ("kind", "third_party_reference", "msisdn", "status", "query_status",
                                      "result_code", "reversed_amount")})
sys.exit(1 if failed else 0)
PY
