# Sourced by the scripts that start a test server in the background (smtp.sh, s3.sh): a free
# loopback port, the wait until the server takes connections, and its stop by pid file.

# A port free on 127.0.0.1 now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_port NAME PORT PID_FILE LOG: returns once 127.0.0.1:PORT takes connections (within
# 30 s); fails, with the end of LOG on stderr, if the process of PID_FILE ends first or it never
# does.
wait_for_port() {
    local name=$1 port=$2 pid_file=$3 log=$4
    for _ in $(seq 300); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            return 0
        fi
        kill -0 "$(cat "$pid_file")" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start; its log, $log:" >&2
    tail -n 20 "$log" >&2
    return 1
}

# ours PID_FILE PATTERN: whether the file names a live process whose command line has PATTERN
# (not some later process that reused a dead server's pid).
ours() {
    local pid_file=$1 pattern=$2 pid
    [[ -f $pid_file ]] || return 1
    pid=$(cat "$pid_file")
    [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

# refuse_running NAME PID_FILE PATTERN: fails if the server of PID_FILE still runs (a second
# start would orphan it); forgets a stale file.
refuse_running() {
    local name=$1 pid_file=$2 pattern=$3
    if ours "$pid_file" "$pattern"; then
        echo "$name already runs (pid $(cat "$pid_file"), $pid_file): stop it first" >&2
        return 1
    fi
    rm -f "$pid_file"
}

# stop_pid_file PID_FILE PATTERN: SIGTERM to its process (woken first if stopped), SIGKILL after
# 10 s, if it is still the server (PATTERN in its command line); the file removed. Nothing if
# there is no file.
stop_pid_file() {
    local pid_file=$1 pattern=$2 pid
    [[ -f $pid_file ]] || return 0
    if ! ours "$pid_file" "$pattern"; then
        rm -f "$pid_file"
        return 0
    fi
    pid=$(cat "$pid_file")
    kill -CONT "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pid_file"
}
