#!/usr/bin/env bash
# The compose test: build Conveyor's image from the repository's own Dockerfile through its own
# compose.yaml, run the stack with rootful Podman and podman-compose, and check it as a user
# would. Run by .ci/run (`make compose-test`) on every CI run; needs root on Debian 12.
#
# It installs what it needs (podman, runc, debootstrap from Debian; podman-compose from PyPI in
# a venv of its own) and builds the base images the files name, because image registries are
# not reachable here: a Debian bookworm root file system (debootstrap --variant=minbase)
# imported with `podman import`, then python:3.11-slim (Debian's python3 is 3.11) and
# redis:7-alpine (Debian's redis-server 7.0) on top. They are kept in Podman's storage, so a
# second run on the same machine skips them. Podman settings are in a CONTAINERS_CONF file of
# its own; nothing in /etc changes.
#
# Checks: the image builds (once) and is reported with its size; workers started before Redis
# exists wait for it by themselves (Podman 4.3 ignores `condition: service_healthy`) and come
# up without a restart; every container becomes healthy (Podman 4.3 runs no healthchecks
# without systemd, so this script runs them); an enqueue through the API is completed by a
# worker; the monitor serves its page and counts 3 workers in /metrics; the demo producer's
# jobs are processed; the published ports listen on 127.0.0.1 only; the API and the monitor
# answer other containers by service name and refuse an unknown Host; and a stop in order
# (intake, then workers with a job in flight that still completes, then Redis) in which every
# container exits 0, after which `down` leaves no container, network or volume behind.
#
# env: KEEP_WORK=1 keeps the scratch folder (logs); CONVEYOR_COMPOSE_TEST_VENV (default
#      /var/cache/conveyor-compose-test/venv) is where podman-compose is installed.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/conveyor-compose-test.XXXXXX)
PROJECT=conveyor-test-$$
IMAGE=localhost/conveyor-compose-test:latest
STANDIN_REV=3   # bump when the stand-in base images below change
PODMAN_COMPOSE_VERSION=1.6.0
VENV=${CONVEYOR_COMPOSE_TEST_VENV:-/var/cache/conveyor-compose-test/venv}
T0=$SECONDS
step() { printf '\n== [%3ss] %s\n' "$((SECONDS - T0))" "$*"; }
fail() { echo "COMPOSE TEST FAILED: $*" >&2; exit 1; }
has() { [[ "$1" == *"$2"* ]]; }   # not `... | grep -q`: with pipefail, grep's early exit fails the pipe
exec 3>&1   # timed's report goes here even when the command's output is redirected
timed() { local t=$SECONDS rc=0; "$@" || rc=$?; echo "   $1: $((SECONDS - t))s" >&3; return $rc; }

[ "$(id -u)" = 0 ] || fail "needs root (rootful Podman); CI runs as root"

# Podman settings, in a file of the test's own. crun 1.8 rejects these machines' hybrid cgroup
# v1+v2 layout -> runc. Without CAP_SYS_RESOURCE podman's default rlimits (nofile/nproc
# 1048576) cannot be set -> cap them at what we have. No systemd -> cgroupfs and file events.
nofile=$(ulimit -Hn); { [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; } && nofile=1048576
nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"
PC=("$VENV/bin/podman-compose" -p "$PROJECT" -f "$REPO/compose.yaml")
standin_ok() { [ "$(podman image inspect "$1" --format '{{index .Labels "conveyor.stand-in"}}' 2>/dev/null)" = "$STANDIN_REV" ]; }

debootstrap_job=
early_exit() {   # until the stack's own cleanup takes over
  local rc=$?
  [ -z "$debootstrap_job" ] || wait "$debootstrap_job" 2>/dev/null || true
  rm -rf "$WORK"
  exit $rc
}
trap early_exit EXIT

# --- tools, and the base root file system meanwhile ------------------------------------------------
step "packages: podman, runc, debootstrap, curl (Debian); podman-compose $PODMAN_COMPOSE_VERSION (PyPI)"
export DEBIAN_FRONTEND=noninteractive
apt_updated=0
ensure() {   # ensure TOOL...: apt-get install the ones that are missing
  local need=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || need+=("$tool"); done
  [ ${#need[@]} -gt 0 ] || return 0
  [ $apt_updated = 1 ] || timed apt-get update -qq || fail "apt-get update"
  apt_updated=1
  timed apt-get install -y -qq "${need[@]}" >>"$WORK/apt.log" 2>&1 ||
    { tail -20 "$WORK/apt.log"; fail "apt-get install ${need[*]}"; }
}
ensure debootstrap curl
# debootstrap is the slow part of a cold run (30-60 s): it runs while the rest is installed.
if ! { command -v podman >/dev/null && standin_ok localhost/conveyor-debian:bookworm; }; then
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  echo "debootstrap --variant=minbase bookworm from $MIRROR, in the background"
  timed debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 &
  debootstrap_job=$!
fi
ensure podman runc
if ! has "$("$VENV/bin/podman-compose" version 2>/dev/null)" "$PODMAN_COMPOSE_VERSION"; then
  rm -rf "$VENV" && mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" || fail "python3 -m venv"
  timed "$VENV/bin/pip" install -q "podman-compose==$PODMAN_COMPOSE_VERSION" || fail "pip install podman-compose"
fi
podman --version

# --- base images -------------------------------------------------------------------------------
step "base images the Dockerfile and compose.yaml name, built locally (no registry reachable)"
if [ -n "$debootstrap_job" ]; then
  job=$debootstrap_job
  debootstrap_job=
  wait "$job" || { tail -20 "$WORK/debootstrap.log"; fail debootstrap; }
  # debootstrap's package lists are lent to the builds below (mounted, not in any image), so
  # they need no `apt-get update` of their own; dpkg skips fsync, as in Docker's Debian images.
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb
  for name in python redis; do cp -a "$WORK/rootfs/var/lib/apt/lists" "$WORK/lists-$name"; done
  rm -rf "$WORK"/rootfs/var/lib/apt/lists/*
  echo force-unsafe-io >"$WORK/rootfs/etc/dpkg/dpkg.cfg.d/unsafe-io"
  import_rootfs() { tar -C "$WORK/rootfs" -c . | podman import "$@"; }
  timed import_rootfs -q --change 'CMD ["/bin/bash"]' \
    --change "LABEL conveyor.stand-in=$STANDIN_REV" - localhost/conveyor-debian:bookworm >/dev/null
  rm -rf "$WORK/rootfs"
fi
mkdir -p "$WORK/python" "$WORK/redis"
# apt-get install with the base's lists; if they have gone stale (a cached base), update first.
apt_install() { echo "(apt-get install -y --no-install-recommends $* || (apt-get update && apt-get install -y --no-install-recommends $*))"; }
# python:3.11-slim: Debian's python3 (3.11) with pip, without Debian's "externally managed"
# marker, as in the official image.
cat >"$WORK/python/Containerfile" <<EOF
FROM localhost/conveyor-debian:bookworm
LABEL conveyor.stand-in=$STANDIN_REV
ENV LANG=C.UTF-8
RUN $(apt_install python3 python3-pip python-is-python3 ca-certificates) \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/lib/python3.11/EXTERNALLY-MANAGED
CMD ["python3"]
EOF
# redis:7-alpine: Debian's redis-server 7.0; like the official image, protected mode is off.
cat >"$WORK/redis/Containerfile" <<EOF
FROM localhost/conveyor-debian:bookworm
LABEL conveyor.stand-in=$STANDIN_REV
RUN $(apt_install redis-server redis-tools) \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb && mkdir -p /data && chown redis:redis /data \\
 && printf '#!/bin/sh\nif [ "\$1" = redis-server ]; then shift; exec redis-server "\$@" --protected-mode no; fi\nexec "\$@"\n' \\
      >/usr/local/bin/docker-entrypoint.sh && chmod +x /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
USER redis
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
build_standin() {   # build_standin NAME:TAG (from $WORK/NAME/Containerfile) unless it is current
  local name=${1%%:*}
  standin_ok "localhost/$1" && return 0
  mkdir -p "$WORK/lists-$name"   # empty if the base came from the cache: apt_install updates
  timed podman build -q --network host -v "$WORK/lists-$name:/var/lib/apt/lists" \
    -t "localhost/$1" "$WORK/$name" >"$WORK/$name.log" 2>&1 ||
    { tail -20 "$WORK/$name.log"; echo "stand-in $1 failed" >&2; return 1; }
}
build_standin redis:7-alpine & redis_job=$!   # not needed before `up`: built meanwhile
build_standin python:3.11-slim || fail "stand-in python:3.11-slim"

# --- the stack -----------------------------------------------------------------------------------
dump_logs() {
  for c in $(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT"); do
    echo "--- $(podman inspect "$c" --format '{{.Name}} {{.State.Status}} exit={{.State.ExitCode}}')"
    podman logs --tail 20 "$c" 2>&1
  done
}
cleanup() {   # whatever happened: remove everything this run created (the images stay)
  rc=$?
  [ -z "${redis_job:-}" ] || wait "$redis_job" 2>/dev/null || true   # never under a build
  if [ $rc -ne 0 ]; then
    dump_logs || true
    echo "--- compose log"; tail -30 "$WORK/compose.log" 2>/dev/null || true
  fi
  podman rm -f -t 0 $(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT") >/dev/null 2>&1 || true
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
  podman volume rm -f "${PROJECT}_redis-data" >/dev/null 2>&1 || true
  [ "${KEEP_WORK:-0}" = 1 ] && echo "scratch: $WORK" || rm -rf "$WORK"
  step "done (exit $rc)"
}
trap cleanup EXIT

ids() {   # container ids of the given services
  local s
  for s in "$@"; do
    podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" \
      --filter "label=com.docker.compose.service=$s"
  done
}
field() { podman inspect "$1" --format "$2"; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export API_PORT=$(free_port) MONITOR_PORT=$(free_port) CONVEYOR_IMAGE=$IMAGE
API=http://127.0.0.1:$API_PORT MONITOR=http://127.0.0.1:$MONITOR_PORT

step "build the image through compose.yaml (podman-compose build; --format docker keeps HEALTHCHECK)"
# The host's CA bundle and pip's/uv's use of it let the build through these machines'
# TLS-inspecting egress; they are mounted for the build only and do not enter the image.
printf 'system-certs = true\n' >"$WORK/uv.toml"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$WORK/pip.conf"
BUILD_ARGS="--format docker --network host -v $WORK/uv.toml:/etc/uv/uv.toml:ro"
BUILD_ARGS+=" -v $WORK/pip.conf:/etc/pip.conf:ro"
BUILD_ARGS+=" -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"
previous=$(podman image inspect "$IMAGE" --format "{{.Id}}" 2>/dev/null || true)
tb=$SECONDS
"${PC[@]}" --podman-build-args "$BUILD_ARGS" build >"$WORK/build.log" 2>&1 ||
  { tail -40 "$WORK/build.log"; fail "build"; }
builds=$(grep -c '^\[1/2\] STEP 1/' "$WORK/build.log" || true)
[ "$builds" = 1 ] || fail "compose built the image $builds times, not once"
podman image exists "$IMAGE" || fail "compose did not tag $IMAGE"
has "$(field "$IMAGE" '{{.HealthCheck}}')" 'CMD python' || fail "the image has no HEALTHCHECK"
size=$(field "$IMAGE" '{{.Size}}') base=$(field localhost/python:3.11-slim '{{.Size}}')
echo "built once in $((SECONDS - tb))s: $IMAGE $size bytes, $(((size - base) / 1000000)) MB over python:3.11-slim"
if [ -n "$previous" ] && [ "$previous" != "$(field "$IMAGE" "{{.Id}}")" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true   # the last run's image, untagged by this build
fi

wait_healthy() {   # run every container's healthcheck until all pass (Podman cannot schedule them)
  local deadline=$((SECONDS + $1)) bad c cs
  while :; do
    mapfile -t cs < <(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")
    for c in "${cs[@]}"; do
      [ "$(field "$c" '{{.State.Health.Status}}')" = healthy ] ||
        timeout 30 podman healthcheck run "$c" >/dev/null 2>&1 &
    done
    wait
    bad=()
    for c in "${cs[@]}"; do
      [ "$(field "$c" '{{.State.Status}}/{{.State.Health.Status}}')" = running/healthy ] ||
        bad+=("$(field "$c" '{{.Name}}:{{.State.Status}}/{{.State.Health.Status}}')")
    done
    [ ${#bad[@]} -eq 0 ] && return 0
    [ $SECONDS -lt $deadline ] || fail "not healthy after $1s: ${bad[*]}"
    sleep 1
  done
}
wait_logged() {   # wait_logged SECONDS EVENT CONTAINER...: until each container logged EVENT
  local deadline=$((SECONDS + $1)) event=$2 c
  shift 2
  for c in "$@"; do
    until has "$(podman logs "$c" 2>&1)" "\"event\":\"$event\""; do
      [ $SECONDS -lt $deadline ] || fail "$(field "$c" '{{.Name}}') did not log $event within ${1}s"
      sleep 0.5
    done
  done
}

wait $redis_job || fail "stand-in redis:7-alpine"

step "workers first, with no Redis yet: they must wait for it by themselves"
"${PC[@]}" up -d --no-deps worker >"$WORK/compose.log" 2>&1 || fail "compose up worker"
workers=($(ids worker))
[ ${#workers[@]} = 3 ] || fail "deploy.replicas gave ${#workers[@]} worker containers, not 3"
[ -z "$(ids redis)" ] || fail "redis was started with the workers (--no-deps)"
wait_logged 60 redis_waiting "${workers[@]}"
for c in "${workers[@]}"; do
  [ "$(field "$c" '{{.State.Status}}')" = running ] || fail "worker $(field "$c" '{{.Name}}') did not wait for Redis"
done
echo "3 workers running, waiting for Redis"

step "up -d --scale worker=3: Redis, API (:$API_PORT), monitor (:$MONITOR_PORT), cleanup; all healthy"
"${PC[@]}" up -d --scale worker=3 >>"$WORK/compose.log" 2>&1 || fail "compose up"
wait_healthy 120
for c in $(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT"); do
  field "$c" '   {{.Name}} {{.State.Health.Status}} restarts={{.RestartCount}}'
done
wait_logged 30 worker_started "${workers[@]}"
for c in "${workers[@]}"; do
  [ "$(field "$c" '{{.RestartCount}}')" = 0 ] || fail "a worker was restarted instead of waiting for Redis"
done

step "published ports: 127.0.0.1 only"
for s in api monitor; do
  ports=$(field "$(ids $s)" '{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIP}} {{end}}{{end}}')
  [ "$(echo $ports)" = 127.0.0.1 ] || fail "$s is published on '$ports', not 127.0.0.1"
done

step "host names: localhost and other containers by service name are answered, a foreign Host gets 421"
podman exec "${workers[0]}" python -c '
import urllib.request
for url in ("http://api:8000/tasks", "http://monitor:8001/"):
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.status == 200, (url, answer.status)
        print("  ", url, answer.status)
' || fail "a container could not reach the API or the monitor by service name"
for url in "$API/tasks" "$MONITOR/"; do
  code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H 'Host: rebound.example' "$url")
  [ "$code" = 421 ] || fail "$url with Host: rebound.example answered $code, not 421"
done
echo "   Host: rebound.example -> 421 from both"
for url in "localhost:$API_PORT/tasks" "localhost:$MONITOR_PORT/"; do   # as a browser on the host
  code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$url")
  [ "$code" = 200 ] || fail "http://$url answered $code, not 200"
done
echo "   http://localhost:PORT -> 200 from both"

step "enqueue through the API -> completed by a worker"
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
enqueue() {
  curl -sf -m 5 -X POST "$API/enqueue" -H 'content-type: application/json' \
    -d "{\"name\": \"simulate\", \"data\": {\"duration_ms\": $1}}" | json '["id"]'
}
state_of() { curl -sf -m 5 "$API/jobs/$1" | json '["state"]'; }
id=$(enqueue 100) || fail "POST /enqueue"
for _ in $(seq 100); do [ "$(state_of "$id")" = completed ] && break; sleep 0.1; done
[ "$(state_of "$id")" = completed ] || fail "job $id is $(state_of "$id"), not completed"
echo "job $id completed"

step "monitor: the dashboard page and 3 workers in /metrics"
has "$(curl -sf -m 5 "$MONITOR/")" '<title>Conveyor monitor</title>' || fail "monitor page"
metric() { curl -sf -m 5 "$MONITOR/metrics" | awk -v m="$1" 'index($0, m "{") == 1 {s += $2} END {print int(s)}'; }
for _ in $(seq 50); do [ "$(metric conveyor_workers)" = 3 ] && break; sleep 0.2; done
[ "$(metric conveyor_workers)" = 3 ] || fail "the monitor counts $(metric conveyor_workers) workers, not 3"
echo "monitor page OK, conveyor_workers 3"

step "demo profile: the producer's jobs are processed"
"${PC[@]}" --profile demo up -d --scale worker=3 >>"$WORK/compose.log" 2>&1 || fail "compose --profile demo up"
before=$(metric conveyor_jobs_completed_total)
for _ in $(seq 60); do [ "$(metric conveyor_jobs_completed_total)" -gt "$((before + 2))" ] && break; sleep 0.5; done
after=$(metric conveyor_jobs_completed_total)
[ "$after" -gt "$((before + 2))" ] || fail "producer running, completed jobs $before -> $after"
echo "completed jobs $before -> $after"

step "stop in order: intake, then workers (a job in flight finishes), then Redis; all exit 0"
slow=$(enqueue 3000) || fail "POST /enqueue (slow job)"
for _ in $(seq 50); do [ "$(state_of "$slow")" = active ] && break; sleep 0.1; done
[ "$(state_of "$slow")" = active ] || fail "slow job $slow is not active"
stage() {   # podman-compose stop these services (all running until then); each must exit 0
  local c cs
  mapfile -t cs < <(ids "$@")
  [ ${#cs[@]} -gt 0 ] || fail "no containers for $*"
  for c in "${cs[@]}"; do
    [ "$(field "$c" '{{.State.Status}}')" = running ] || fail "$(field "$c" '{{.Name}}') was not running before its stop"
  done
  "${PC[@]}" --profile demo stop "$@" >>"$WORK/compose.log" 2>&1 || fail "compose stop $*"
  for c in "${cs[@]}"; do
    field "$c" '   {{.Name}} exit={{.State.ExitCode}}'
    [ "$(field "$c" '{{.State.ExitCode}}')" = 0 ] || fail "$(field "$c" '{{.Name}}') exited $(field "$c" '{{.State.ExitCode}}') on SIGTERM"
  done
}
stage api producer
stage worker monitor cleanup
redis_c=$(ids redis)
score=$(podman exec "$redis_c" redis-cli ZSCORE bull:taskQueue:completed "$slow")
[ -n "$score" ] || fail "the job in flight ($slow) did not complete before the workers stopped"
echo "job in flight $slow completed during the workers' shutdown"
stage redis
has "$(podman logs "$(ids producer)" 2>&1)" 'enqueued ' || fail "the producer printed no summary"

step "down -v: nothing left behind"
"${PC[@]}" --profile demo down -v >>"$WORK/compose.log" 2>&1 || fail "compose down"
left=$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")
[ -z "$left" ] || fail "containers left after down: $left"
! podman network exists "${PROJECT}_default" || fail "network ${PROJECT}_default left after down"
! podman volume exists "${PROJECT}_redis-data" || fail "volume ${PROJECT}_redis-data left after down"
echo "COMPOSE TEST PASSED in $((SECONDS - T0))s"
