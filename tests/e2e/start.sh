#!/usr/bin/env bash
# Starts a real Kubernetes 1.20 control plane on loopback: etcd (Debian's etcd-server) and
# kube-apiserver (built by build.sh), with a token file (one system:masters token), RBAC, a
# service-account key pair made with openssl (TokenRequest works, so tests can act as a
# ServiceAccount), and serving certificates from a throwaway CA. No kubelet, no
# controller-manager: tests create Node objects themselves. kube-scheduler is started by
# the tests (tests/e2e/e2e_cluster.py) once the manifests' RBAC is applied, so that it runs as
# the manifests' own ServiceAccount.
#
# usage: start.sh STATE_DIR      writes STATE_DIR/env (ports, token, paths) and pid files;
#                                stop.sh STATE_DIR stops everything it started.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/e2e/k8s-env.sh
. "$here/k8s-env.sh"
dir="${1:?usage: start.sh STATE_DIR}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
die() { echo "start.sh: $*" >&2; exit 1; }

apiserver="$K8S_BIN/kube-apiserver"
[ -x "$apiserver" ] || die "no kube-apiserver in $K8S_BIN: run tests/e2e/build.sh first"
command -v etcd >/dev/null || die "no etcd: apt-get install etcd-server"
command -v openssl >/dev/null || die "no openssl"
py="$(command -v python3)"

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)

# --- credentials ------------------------------------------------------------------------
pki="$dir/pki"
mkdir -p "$pki"
admin_token="$(openssl rand -hex 24)"
echo "$admin_token,gsched-e2e-admin,gsched-e2e-admin,system:masters" >"$pki/tokens.csv"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=gsched-e2e-ca \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
  -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' >"$pki/san.ext"
openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
  -CAcreateserial -days 2 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null

# --- etcd ---------------------------------------------------------------------------------
# Its data on tmpfs when there is one: fsyncs on a shared 2-core machine are the slow part.
etcd_data="$dir/etcd"
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  etcd_data="$(mktemp -d /dev/shm/gsched-e2e-etcd.XXXXXX)"
  echo "$etcd_data" >"$dir/etcd-data-dir"
fi
etcd --name gsched-e2e --data-dir "$etcd_data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "gsched-e2e=http://127.0.0.1:$etcd_peer" \
  --log-level warn >"$dir/etcd.log" 2>&1 &
echo $! >"$dir/etcd.pid"

# --- kube-apiserver ---------------------------------------------------------------------
"$apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --secure-port "$api_port" --insecure-port 0 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --cert-dir "$pki" \
  --token-auth-file "$pki/tokens.csv" \
  --authorization-mode RBAC \
  --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --api-audiences https://kubernetes.default.svc \
  --service-cluster-ip-range 10.0.0.0/24 \
  --disable-admission-plugins ServiceAccount,TaintNodesByCondition \
  --endpoint-reconciler-type none \
  --allow-privileged \
  --v 1 >"$dir/kube-apiserver.log" 2>&1 &
echo $! >"$dir/kube-apiserver.pid"

cat >"$dir/env" <<ENV
GSCHED_E2E_DIR=$dir
K8S_BIN=$K8S_BIN
ETCD_URL=http://127.0.0.1:$etcd_port
API_SERVER=https://127.0.0.1:$api_port
API_CA=$pki/ca.crt
ADMIN_TOKEN=$admin_token
ENV

# A kubeconfig for the admin (the tests act as the cluster's owner with it).
cat >"$dir/admin.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
  - name: e2e
    cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$pki/ca.crt"}
users:
  - name: admin
    user: {token: "$admin_token"}
contexts:
  - name: e2e
    context: {cluster: e2e, user: admin}
current-context: e2e
KC

# --- ready? -------------------------------------------------------------------------------
for _ in $(seq 1 240); do
  if ! kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null; then
    tail -30 "$dir/kube-apiserver.log" >&2
    die "kube-apiserver exited (log: $dir/kube-apiserver.log)"
  fi
  if ! kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null; then
    tail -30 "$dir/etcd.log" >&2
    die "etcd exited (log: $dir/etcd.log)"
  fi
  if "$py" - "$api_port" "$pki/ca.crt" "$admin_token" <<'PY' 2>/dev/null; then
import ssl, sys, urllib.request
port, ca, token = sys.argv[1:4]
req = urllib.request.Request(f"https://127.0.0.1:{port}/readyz",
                             headers={"Authorization": f"Bearer {token}"})
ctx = ssl.create_default_context(cafile=ca)
with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
    echo "control plane ready: https://127.0.0.1:$api_port (state in $dir)"
    exit 0
  fi
  sleep 0.5
done
tail -30 "$dir/kube-apiserver.log" >&2
die "kube-apiserver not ready after 120 s (log: $dir/kube-apiserver.log)"
