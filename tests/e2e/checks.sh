# checks.sh — the e2e scripts' check helpers, sourced after T (a scratch folder) is set: counted
# checks and failures, an exit-code check that keeps stdout/stderr in $T/out and $T/err (at most
# 120 s, so a hang shows as exit 124), the one-sentence error rule, and python assertions.
FAILS=0
CHECKS=0

fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    CHECKS=$((CHECKS + 1))
    "$@" || fail "$what"
}
# expect_exit CODE DESCRIPTION COMMAND...
expect_exit() {
    local want=$1 what=$2
    shift 2
    CHECKS=$((CHECKS + 1))
    timeout 120 "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" -ne "$want" ]; then
        fail "$what: exit $got, want $want; stderr: $(tail -c 600 "$T/err")"
        return 1
    fi
    return 0
}
# The failure sentence: the last stderr line starts "omnikv: " and mentions each given word.
one_sentence() {
    local last
    last=$(tail -n 1 "$T/err")
    CHECKS=$((CHECKS + 1))
    case "$last" in
    "omnikv: "*) ;;
    *) fail "expected an 'omnikv: ...' line on stderr, got: $last"; return ;;
    esac
    for w in "$@"; do
        case "$last" in
        *"$w"*) ;;
        *) fail "error line lacks '$w': $last" ;;
        esac
    done
}
# py SCRIPT ARGS...: a python check; its assertion messages become failures.
py() {
    CHECKS=$((CHECKS + 1))
    python3 -c "$@" || fail "python check failed (see above)"
}
