#!/usr/bin/env bash
# Apache Kafka (KRaft, single combined broker+controller) for stadtwacht's broker test tier.
#
# Usage:
#   deploy/kafka/apache-kafka.sh resolve
#   deploy/kafka/apache-kafka.sh start --dir DIR --port PORT [--controller-port P] [--tls] [--sasl]
#                                      [--internal-port P] [--no-auto-create] [--timeout SECONDS]
#   deploy/kafka/apache-kafka.sh stop --dir DIR
#   deploy/kafka/apache-kafka.sh classpath          # prints the lib dir glob (resolving first)
#
# resolve  downloads Apache Kafka's runtime jars from Maven Central with `mvn dependency:copy-dependencies`
#          into $STADTWACHT_KAFKA_CACHE/<version>/lib (default cache root: <repo>/.cache/apache-kafka);
#          does nothing when that version is already resolved.
# start    resolves, writes DIR/server.properties for one node listening on 127.0.0.1 only, formats the
#          storage (kafka.tools.StorageTool), starts the broker in the background (pid in DIR/kafka.pid,
#          logs in DIR/logs/ and DIR/kafka.out) and waits until it answers a Metadata request.
#          --tls: the client listener on PORT speaks SSL with a throwaway CA written to DIR/ca.pem
#          (key material in DIR/tls/); the controller listener stays PLAINTEXT on loopback. The broker
#          requests (does not require) a client certificate: DIR/client.pem + DIR/client-key.pem.
#          --sasl: the client listener on PORT requires SASL authentication (SASL_PLAINTEXT, or SASL_SSL
#          together with --tls) with the mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for one user,
#          $STADTWACHT_KAFKA_SASL_USER (default stadtwacht) with password $STADTWACHT_KAFKA_SASL_PASSWORD
#          (default: random), written to DIR/sasl-user and DIR/sasl-password (mode 600). The SCRAM
#          credentials go into the metadata log at format time. The broker's own inter-broker traffic and
#          the readiness probe use a PLAINTEXT listener on loopback (--internal-port, default: a free port,
#          recorded in DIR/internal-port), which clients never learn about from metadata of PORT.
#          --no-auto-create: auto.create.topics.enable=false (a topic no one created stays missing, as on
#          most production clusters); default true.
# stop     stops exactly the process recorded in DIR/kafka.pid (SIGTERM, then SIGKILL after 30 s).
#
# Environment: STADTWACHT_KAFKA_VERSION (default 4.4.0), STADTWACHT_KAFKA_CACHE (cache root),
#              STADTWACHT_KAFKA_HEAP (default -Xmx512m), STADTWACHT_KAFKA_JVM_OPTS (default: C1 only, serial GC),
#              STADTWACHT_KAFKA_SASL_USER, STADTWACHT_KAFKA_SASL_PASSWORD (--sasl; [A-Za-z0-9._-] only),
#              JAVA (default: java on PATH), PYTHON (runs probe.py and port picking; default python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KAFKA_VERSION="${STADTWACHT_KAFKA_VERSION:-4.4.0}"
LOG4J_VERSION="2.24.3"
SLF4J_VERSION="2.0.17"
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
CACHE_ROOT="${STADTWACHT_KAFKA_CACHE:-$REPO/.cache/apache-kafka}"
CACHE="$CACHE_ROOT/$KAFKA_VERSION"
LIB="$CACHE/lib"
JAVA="${JAVA:-java}"
PYTHON="${PYTHON:-python3}"
HEAP="${STADTWACHT_KAFKA_HEAP:--Xmx512m}"
# Startup-friendly defaults for a 2-core machine shared with other work: C1 only, serial GC, few threads.
JVM_OPTS="${STADTWACHT_KAFKA_JVM_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:CICompilerCount=1}"
TLS_PASSWORD="stadtwacht-test"

die() { echo "apache-kafka.sh: $*" >&2; exit 1; }
log() { echo "apache-kafka.sh: $*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

write_pom() {
    local pom="$1" artifact
    {
        cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>stadtwacht.local</groupId>
  <artifactId>apache-kafka-runtime</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
EOF
        for artifact in kafka_2.13 kafka-server kafka-metadata kafka-raft kafka-storage kafka-group-coordinator \
            kafka-transaction-coordinator kafka-clients; do
            printf '    <dependency><groupId>org.apache.kafka</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' \
                "$artifact" "$KAFKA_VERSION"
        done
        for artifact in log4j-api log4j-core log4j-slf4j2-impl log4j-1.2-api; do
            printf '    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' \
                "$artifact" "$LOG4J_VERSION"
        done
        # Pinned: a transitive slf4j-api 1.7 would win otherwise and silently drop the log4j2 binding.
        printf '    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>%s</version></dependency>\n' \
            "$SLF4J_VERSION"
        cat <<EOF
  </dependencies>
</project>
EOF
    } >"$pom"
}

resolve() {
    [[ -f "$CACHE/.resolved" ]] && return 0
    command -v mvn >/dev/null || die "mvn not found on PATH (needed once to download Apache Kafka $KAFKA_VERSION)"
    mkdir -p "$CACHE"
    # One resolver at a time per version; a second caller waits and then finds the marker.
    exec 9>"$CACHE/.lock"
    flock 9
    if [[ -f "$CACHE/.resolved" ]]; then exec 9>&-; return 0; fi
    local work
    work="$(mktemp -d "$CACHE/.resolve.XXXXXX")"
    write_pom "$work/pom.xml"
    log "resolving Apache Kafka $KAFKA_VERSION into $LIB (Maven Central) ..."
    if ! mvn -B -q -f "$work/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$work/lib" >"$work/mvn.log" 2>&1; then
        cat "$work/mvn.log" >&2
        rm -rf "$work"
        die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
    fi
    [[ -f "$work/lib/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after resolve"
    rm -rf "$LIB"
    mv "$work/lib" "$LIB"
    rm -rf "$work"
    echo "$KAFKA_VERSION" >"$CACHE/.resolved"
    exec 9>&-
    log "resolved $(find "$LIB" -name '*.jar' | wc -l) jars"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pid_alive() {
    # True when the pid runs a JVM started with this DIR's server.properties (guards against pid reuse).
    local pid="$1" props="$2"
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF "$props"
}

make_tls() {
    local dir="$1" tls="$1/tls"
    command -v openssl >/dev/null || die "--tls needs openssl on PATH"
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=stadtwacht test CA" \
        -keyout "$tls/ca-key.pem" -out "$dir/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$tls/broker-key.pem" -out "$tls/broker.csr" >/dev/null 2>&1
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" \
        >"$tls/broker.ext"
    openssl x509 -req -in "$tls/broker.csr" -CA "$dir/ca.pem" -CAkey "$tls/ca-key.pem" \
        -CAserial "$tls/ca.srl" -CAcreateserial \
        -days 2 -extfile "$tls/broker.ext" -out "$tls/broker.pem" >/dev/null 2>&1
    # A client certificate for tests of mutual TLS (the broker requests but does not require one).
    openssl req -newkey rsa:2048 -nodes -subj "/CN=stadtwacht-test-client" \
        -keyout "$dir/client-key.pem" -out "$tls/client.csr" >/dev/null 2>&1
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=clientAuth" >"$tls/client.ext"
    openssl x509 -req -in "$tls/client.csr" -CA "$dir/ca.pem" -CAkey "$tls/ca-key.pem" \
        -CAserial "$tls/ca.srl" -days 2 -extfile "$tls/client.ext" -out "$dir/client.pem" >/dev/null 2>&1
    openssl pkcs12 -export -name broker -inkey "$tls/broker-key.pem" -in "$tls/broker.pem" \
        -certfile "$dir/ca.pem" -out "$tls/broker.p12" -passout "pass:$TLS_PASSWORD" >/dev/null 2>&1
}

client_protocol() {
    local tls="$1" sasl="$2"
    case "$tls$sasl" in
        00) echo PLAINTEXT ;;
        10) echo SSL ;;
        01) echo SASL_PLAINTEXT ;;
        11) echo SASL_SSL ;;
    esac
}

write_properties() {
    local dir="$1" port="$2" cport="$3" tls="$4" sasl="$5" iport="$6" autocreate="$7" client_listener listeners advertised inter
    client_listener="$(client_protocol "$tls" "$sasl")"
    listeners="$client_listener://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
    advertised="$client_listener://127.0.0.1:$port"
    inter="$client_listener"
    if [[ "$sasl" == 1 ]]; then
        listeners+=",INTERNAL://127.0.0.1:$iport"
        advertised+=",INTERNAL://127.0.0.1:$iport"
        inter=INTERNAL
    fi
    cat >"$dir/server.properties" <<EOF
# Written by deploy/kafka/apache-kafka.sh: single-node KRaft cluster for tests, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=$inter
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,INTERNAL:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$dir/data
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=$autocreate
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.consumer.session.timeout.ms=45000
log.retention.check.interval.ms=300000
log.segment.bytes=16777216
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
EOF
    if [[ "$tls" == 1 ]]; then
        cat >>"$dir/server.properties" <<EOF
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/tls/broker.p12
ssl.keystore.password=$TLS_PASSWORD
ssl.key.password=$TLS_PASSWORD
ssl.truststore.type=PEM
ssl.truststore.location=$dir/ca.pem
ssl.client.auth=requested
ssl.endpoint.identification.algorithm=https
EOF
    fi
    if [[ "$sasl" == 1 ]]; then
        local name user password
        name="$(echo "$client_listener" | tr 'A-Z' 'a-z')"
        user="$(cat "$dir/sasl-user")"
        password="$(cat "$dir/sasl-password")"
        cat >>"$dir/server.properties" <<EOF
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.$name.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$user="$password";
listener.name.$name.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.$name.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
        chmod 600 "$dir/server.properties"
    fi
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.kafka.additivity = false
logger.kafka.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

start() {
    local dir="" port="" cport="" iport="" tls=0 sasl=0 autocreate=true timeout=120
    while (($#)); do
        case "$1" in
            --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
            --port) port="${2:?--port needs a value}"; shift 2 ;;
            --controller-port) cport="${2:?--controller-port needs a value}"; shift 2 ;;
            --tls) tls=1; shift ;;
            --sasl) sasl=1; shift ;;
            --no-auto-create) autocreate=false; shift ;;
            --internal-port) iport="${2:?--internal-port needs a value}"; shift 2 ;;
            --timeout) timeout="${2:?--timeout needs a value}"; shift 2 ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    [[ -n "$dir" && -n "$port" ]] || die "start needs --dir DIR --port PORT"
    command -v "$JAVA" >/dev/null || die "java not found (set JAVA or put java on PATH)"
    resolve
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local props="$dir/server.properties" pidfile="$dir/kafka.pid"
    if [[ -f "$pidfile" ]] && pid_alive "$(cat "$pidfile")" "$props"; then
        die "a broker from $dir is already running (pid $(cat "$pidfile"))"
    fi
    [[ -n "$cport" ]] || cport="$(free_port)"
    [[ "$cport" != "$port" ]] || die "--controller-port must differ from --port"
    port_open "$port" && die "port $port on 127.0.0.1 is already in use"
    port_open "$cport" && die "controller port $cport on 127.0.0.1 is already in use"
    rm -rf "$dir/data" "$dir/logs" "$dir/tls" "$dir/ca.pem" "$dir/client.pem" "$dir/client-key.pem" \
        "$dir/sasl-user" "$dir/sasl-password" "$dir/internal-port"
    mkdir -p "$dir/logs"
    [[ "$tls" == 1 ]] && make_tls "$dir"
    local scram=() probe_port="$port"
    if [[ "$sasl" == 1 ]]; then
        local user="${STADTWACHT_KAFKA_SASL_USER:-stadtwacht}"
        local password="${STADTWACHT_KAFKA_SASL_PASSWORD:-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
        [[ "$user" =~ ^[A-Za-z0-9._-]+$ ]] || die "STADTWACHT_KAFKA_SASL_USER may hold only [A-Za-z0-9._-]"
        [[ "$password" =~ ^[A-Za-z0-9._-]+$ ]] || die "STADTWACHT_KAFKA_SASL_PASSWORD may hold only [A-Za-z0-9._-]"
        [[ -n "$iport" ]] || iport="$(free_port)"
        [[ "$iport" != "$port" && "$iport" != "$cport" ]] || die "--internal-port must differ from the other ports"
        port_open "$iport" && die "internal port $iport on 127.0.0.1 is already in use"
        (umask 077; printf '%s' "$user" >"$dir/sasl-user"; printf '%s' "$password" >"$dir/sasl-password")
        echo "$iport" >"$dir/internal-port"
        scram=(--add-scram "SCRAM-SHA-256=[name=$user,password=$password]"
            --add-scram "SCRAM-SHA-512=[name=$user,password=$password]")
        probe_port="$iport"
    fi
    write_properties "$dir" "$port" "$cport" "$tls" "$sasl" "$iport" "$autocreate"

    local cluster_id jvm
    # shellcheck disable=SC2206  # JVM_OPTS is a space-separated list of flags on purpose
    jvm=("$JAVA" "$HEAP" -Xms128m $JVM_OPTS -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "-Dlog4j2.configurationFile=$dir/log4j2.properties"
        "-Dkafka.logs.dir=$dir/logs" -cp "$LIB/*")
    # A random base64url Kafka Uuid; one starting with '-' would read as an option to StorageTool.
    cluster_id=-
    while [[ "$cluster_id" == -* ]]; do
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    if ! "${jvm[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$props" "${scram[@]}" \
        >"$dir/format.out" 2>&1; then
        cat "$dir/format.out" >&2
        die "formatting storage in $dir/data failed"
    fi

    nohup "${jvm[@]}" kafka.Kafka "$props" >"$dir/kafka.out" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pidfile"
    echo "$port" >"$dir/port"

    local probe=("$PYTHON" "$HERE/probe.py" --port "$probe_port")
    [[ "$tls" == 1 && "$sasl" == 0 ]] && probe+=(--cafile "$dir/ca.pem")
    local deadline=$((SECONDS + timeout))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$dir/kafka.out" "$dir/logs/server.log" >&2 2>/dev/null || true
            rm -f "$pidfile"
            die "broker exited during startup (see $dir/kafka.out and $dir/logs/server.log)"
        fi
        if port_open "$port" && port_open "$probe_port" && "${probe[@]}" >"$dir/probe.out" 2>&1; then
            break
        fi
        if ((SECONDS >= deadline)); then
            cat "$dir/probe.out" >&2 2>/dev/null || true
            tail -n 40 "$dir/logs/server.log" >&2 2>/dev/null || true
            stop --dir "$dir"
            die "broker did not answer metadata on 127.0.0.1:$port within ${timeout}s"
        fi
        sleep 0.5
    done
    log "Apache Kafka $KAFKA_VERSION up on 127.0.0.1:$port ($(client_protocol "$tls" "$sasl")), pid $pid"
}

stop() {
    local dir=""
    while (($#)); do
        case "$1" in
            --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
            *) die "stop: unknown argument $1" ;;
        esac
    done
    [[ -n "$dir" ]] || die "stop needs --dir DIR"
    [[ -d "$dir" ]] || return 0
    dir="$(cd "$dir" && pwd)"
    local pidfile="$dir/kafka.pid" props="$dir/server.properties" pid
    [[ -f "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    if pid_alive "$pid" "$props"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while pid_alive "$pid" "$props" && ((SECONDS < deadline)); do sleep 0.2; done
        if pid_alive "$pid" "$props"; then
            log "broker pid $pid ignored SIGTERM for 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            while pid_alive "$pid" "$props"; do sleep 0.1; done
        fi
    fi
    rm -f "$pidfile"
}

cmd="${1:-}"
[[ -n "$cmd" ]] || usage
shift
case "$cmd" in
    resolve) resolve ;;
    classpath) resolve; echo "$LIB/*" ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    -h|--help|help) usage ;;
    *) die "unknown command $cmd (resolve|start|stop|classpath)" ;;
esac
