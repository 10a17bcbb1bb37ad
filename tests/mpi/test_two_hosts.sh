#!/usr/bin/env bash
# test_two_hosts.sh — a two-"host" pipeline and a network partition: two network namespaces, one
# rank in each, started by mpirun through an rsh agent that enters the namespace. A management
# link carries the launcher's traffic and a data link the ranks' (btl tcp), as on a cluster.
# (1) SmolLM2's greedy tokens of a batch over the data link equal one rank's; (2) the data link
# is cut mid-decode of a 12-request batch with peer_timeout_s=5: the job ends within 5 + 10 s
# with a rank-tagged sentence naming the silent peer, no process is left in either namespace,
# and the results written so far are whole JSON lines; (3) with the link restored, --resume
# completes the batch: every id exactly once, tokens equal to one rank's. Needs root and `ip`
# (iproute2); exits 77 (skipped) where namespaces cannot be made.
set -u

BIN=${OMNIKV_BIN:?OMNIKV_BIN must name the omnikv binary}
CACHE=${OMNIKV_CACHE:-$HOME/.cache/omnikv}
SMOL=$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
T=$(mktemp -d /tmp/okv_two_hosts.XXXXXX)
ID=$$
NS_A=okv2h_a_$ID
NS_B=okv2h_b_$ID
# veth names are at most 15 bytes
M_A=okvm${ID}a
M_B=okvm${ID}b
D_A=okvd${ID}a
D_B=okvd${ID}b
MGMT_A=10.231.1.1
MGMT_B=10.231.1.2
DATA_A=10.231.2.1
DATA_B=10.231.2.2
MPI_PID=

cleanup() {
    if [ -n "$MPI_PID" ] && kill -0 "$MPI_PID" 2>/dev/null; then kill -9 "$MPI_PID"; fi
    for ns in "$NS_A" "$NS_B"; do
        if ip netns list 2>/dev/null | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
            ip netns del "$ns" 2>/dev/null
        fi
    done
    # deleting a namespace deletes the veth ends inside it; these catch a half-made set-up
    ip link del "$M_A" 2>/dev/null
    ip link del "$D_A" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

skip() {
    echo "SKIP: $*"
    exit 77
}
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root"
command -v ip >/dev/null || skip "iproute2's ip is not installed"
[ -f "$SMOL" ] || { echo "FAIL: the default model $SMOL is missing; run scripts/setup.sh --test" >&2; exit 1; }

# ---- two namespaces, a management and a data link ------------------------------------------------
make_hosts() {
    ip netns add "$NS_A" && ip netns add "$NS_B" || return 1
    ip link add "$M_A" type veth peer name "$M_B" || return 1
    ip link add "$D_A" type veth peer name "$D_B" || return 1
    ip link set "$M_A" netns "$NS_A" && ip link set "$D_A" netns "$NS_A" || return 1
    ip link set "$M_B" netns "$NS_B" && ip link set "$D_B" netns "$NS_B" || return 1
    ip -n "$NS_A" addr add "$MGMT_A/24" dev "$M_A" && ip -n "$NS_A" addr add "$DATA_A/24" dev "$D_A" &&
        ip -n "$NS_B" addr add "$MGMT_B/24" dev "$M_B" && ip -n "$NS_B" addr add "$DATA_B/24" dev "$D_B" ||
        return 1
    for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up || return 1; done
    ip -n "$NS_A" link set "$M_A" up && ip -n "$NS_A" link set "$D_A" up &&
        ip -n "$NS_B" link set "$M_B" up && ip -n "$NS_B" link set "$D_B" up
}
make_hosts 2>"$T/ns.err" || skip "cannot make network namespaces here: $(head -c 300 "$T/ns.err")"

# mpirun runs an rsh agent as `AGENT HOST COMMAND...`, the command being one shell line (as ssh
# takes it), so the agent hands it to sh inside the host's namespace.
cat >"$T/agent.sh" <<EOF
#!/bin/sh
host=\$1
shift
case \$host in
$MGMT_A) ns=$NS_A ;;
$MGMT_B) ns=$NS_B ;;
*) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
EOF
chmod +x "$T/agent.sh"

FAILS=0
CHECKS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
MPI=(ip netns exec "$NS_A" mpirun --allow-run-as-root -np 2 --host "$MGMT_A,$MGMT_B"
     --mca plm_rsh_agent "$T/agent.sh" --mca oob_tcp_if_include "$MGMT_A/24"
     --mca btl tcp,self --mca btl_tcp_if_include "$DATA_A/24" -x OMNIKV_LOG)
export OMNIKV_LOG=info

python3 - "$T" <<'EOF'
import json, sys
topics = ["rivers", "the moon", "bread", "chess", "winter", "bees", "trains", "glass", "maps",
          "clocks", "salt", "owls"]
with open(f"{sys.argv[1]}/req4.jsonl", "w") as f:
    for i, t in enumerate(topics[:4]):
        f.write(json.dumps({"id": f"e{i}", "prompt": f"Write two sentences about {t}."}) + "\n")
with open(f"{sys.argv[1]}/req12.jsonl", "w") as f:
    for i, t in enumerate(topics):
        f.write(json.dumps({"id": f"r{i}", "prompt": f"Tell me a short story about {t}."}) + "\n")
EOF
COMMON=(-m "$SMOL" --set threads=1 --set max_context_len=256 --set ignore_eos=true)

# same A B WHAT: every request has the same tokens in both result files, each id once.
same() {
    CHECKS=$((CHECKS + 1))
    python3 - "$1" "$2" "$3" <<'EOF' || fail "$3"
import json, sys
def load(p):
    recs = [json.loads(l) for l in open(p)]
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), f"{p}: an id appears twice: {sorted(ids)}"
    assert all("error" not in r for r in recs), f"{p}: error records"
    return {r["id"]: r["tokens"] for r in recs}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), f"ids {sorted(a)} vs {sorted(b)}"
bad = [k for k in a if a[k] != b[k]]
assert not bad, f"tokens differ for {bad}"
print(f"ok: {sys.argv[3]}: {len(a)} requests, {sum(map(len, a.values()))} tokens identical")
EOF
}

# ---- (1) two hosts give one rank's tokens --------------------------------------------------------
CHECKS=$((CHECKS + 1))
timeout 120 "$BIN" run "${COMMON[@]}" -f "$T/req4.jsonl" -n 16 --set max_batch=2 -o "$T/one4.jsonl" \
    2>"$T/one4.err" || fail "one rank: $(tail -c 400 "$T/one4.err")"
CHECKS=$((CHECKS + 1))
timeout 120 "${MPI[@]}" "$BIN" run "${COMMON[@]}" -f "$T/req4.jsonl" -n 16 --set max_batch=2 \
    -o "$T/two4.jsonl" 2>"$T/two4.err" || fail "two hosts: $(tail -c 800 "$T/two4.err")"
CHECKS=$((CHECKS + 1))
grep -q "rank 1: layers .* on " "$T/two4.err" || fail "rank 1 did not report its layers"
same "$T/one4.jsonl" "$T/two4.jsonl" "two namespaces over the data link vs one rank"

# ---- (2) the data link is cut mid-decode ---------------------------------------------------------
# One request at a time, so results reach the file one by one while the batch runs for seconds.
CUT=(-f "$T/req12.jsonl" -n 24 --set max_batch=1)
"${MPI[@]}" "$BIN" run "${COMMON[@]}" "${CUT[@]}" --set peer_timeout_s=5 -o "$T/cut.jsonl" \
    2>"$T/cut.err" &
MPI_PID=$!
lines=0
for _ in $(seq 1 1200); do
    [ -f "$T/cut.jsonl" ] && lines=$(wc -l <"$T/cut.jsonl")
    [ "$lines" -ge 3 ] && break
    kill -0 "$MPI_PID" 2>/dev/null || break
    sleep 0.05
done
CHECKS=$((CHECKS + 1))
if [ "$lines" -lt 3 ] || ! kill -0 "$MPI_PID" 2>/dev/null; then
    fail "the batch did not reach mid-decode (or finished first): $lines results; $(tail -c 600 "$T/cut.err")"
else
    ip -n "$NS_A" link set "$D_A" down
    t0=$(date +%s.%N)
    for _ in $(seq 1 300); do
        kill -0 "$MPI_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$MPI_PID" 2>/dev/null; then
        fail "mpirun still runs 30 s after the data link was cut"
        kill -9 "$MPI_PID"
    fi
    wait "$MPI_PID"
    rc=$?
    MPI_PID=
    secs=$(python3 -c "import time, sys; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$t0")
    echo "data link cut after $lines results; mpirun exited $rc after $secs s"
    CHECKS=$((CHECKS + 3))
    [ "$rc" -ne 0 ] || fail "mpirun exited 0 after the link was cut"
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 15 else 1)" "$secs" ||
        fail "the job took $secs s to end (want within peer_timeout_s 5 + 10 s)"
    said=$(grep -E '^\[r[01]\] (no (boundary message|token return) from rank [01]|rank [01] has not taken) .*peer_timeout_s' "$T/cut.err" | head -n 1)
    if [ -n "$said" ]; then
        echo "ok: $said"
    else
        fail "no rank-tagged sentence naming the silent peer: $(tail -c 800 "$T/cut.err")"
    fi
fi
sleep 1
for ns in "$NS_A" "$NS_B"; do
    CHECKS=$((CHECKS + 1))
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    if [ -n "$left" ]; then
        fail "processes left in namespace $ns: $(for p in $left; do ps -o comm= -p "$p"; done | tr '\n' ' ')"
    fi
done
CHECKS=$((CHECKS + 1))
pgrep -f "$BIN run" >/dev/null && fail "an omnikv process is left: $(pgrep -af "$BIN run")"
CHECKS=$((CHECKS + 1))
python3 - "$T/cut.jsonl" <<'EOF' || fail "the results written before the cut are not intact"
import json, sys
data = open(sys.argv[1]).read()
assert data.endswith("\n"), "the file ends inside a line"
recs = [json.loads(l) for l in data.splitlines()]
assert recs and all("error" not in r and len(r["tokens"]) == 24 for r in recs), "incomplete records"
assert len(recs) < 12, "the batch was not interrupted"
print(f"ok: {len(recs)} whole result lines survived the cut")
EOF

# ---- (3) the link is back: --resume completes the batch -------------------------------------------
ip -n "$NS_A" link set "$D_A" up
CHECKS=$((CHECKS + 1))
timeout 180 "${MPI[@]}" "$BIN" run "${COMMON[@]}" "${CUT[@]}" -o "$T/cut.jsonl" --resume \
    2>"$T/resume.err" || fail "--resume after the cut: $(tail -c 800 "$T/resume.err")"
CHECKS=$((CHECKS + 1))
timeout 180 "$BIN" run "${COMMON[@]}" "${CUT[@]}" -o "$T/one12.jsonl" 2>"$T/one12.err" ||
    fail "one rank, 12 requests: $(tail -c 400 "$T/one12.err")"
same "$T/one12.jsonl" "$T/cut.jsonl" "the cut batch completed by --resume vs one rank"

echo "$CHECKS checks, $FAILS failed"
[ "$FAILS" -eq 0 ]
