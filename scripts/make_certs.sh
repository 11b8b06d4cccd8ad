#!/usr/bin/env bash
# Create a local certificate authority and a SuperLink server certificate (openssl only).
#
#   scripts/make_certs.sh OUT_DIR [SAN ...]
#
# OUT_DIR gets:
#   ca.key, ca.crt           the local CA; copy ca.crt (only) to every SuperNode and `flwr` user
#   server.key, server.pem   the SuperLink's key and certificate, signed by the CA
# The server certificate is valid for localhost and 127.0.0.1 plus any extra SANs given, e.g.
#   scripts/make_certs.sh certs IP:192.168.1.10 DNS:laptop.local
# A SuperNode checks that the address in its --superlink matches one of these SANs, so add the
# laptop's LAN address (or hostname) before deploying to other machines.
# Keys are RSA 4096 and the certificates last DAYS days (default 365). Existing files are kept
# unless FORCE=1, so re-running never silently replaces a CA that devices already trust.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 1
fi
command -v openssl >/dev/null || { echo "openssl not found (apt-get install openssl)" >&2; exit 2; }

OUT="$1"; shift
DAYS="${DAYS:-365}"
mkdir -p "$OUT"
if [[ -e "$OUT/ca.crt" && "${FORCE:-0}" != "1" ]]; then
    echo "$OUT/ca.crt exists; keeping it (FORCE=1 to regenerate everything)" >&2
    exit 0
fi

SANS="DNS:localhost,IP:127.0.0.1,IP:::1"
for san in "$@"; do SANS="$SANS,$san"; done

umask 077  # private keys readable by their owner only
openssl genrsa -out "$OUT/ca.key" 4096 2>/dev/null
openssl req -x509 -new -key "$OUT/ca.key" -sha256 -days "$DAYS" \
    -subj "/CN=fedkd local CA" -out "$OUT/ca.crt"

openssl genrsa -out "$OUT/server.key" 4096 2>/dev/null
openssl req -new -key "$OUT/server.key" -subj "/CN=fedkd SuperLink" -out "$OUT/server.csr"
cat > "$OUT/server.ext" <<EOF
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $SANS
EOF
openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" \
    -CAcreateserial -days "$DAYS" -sha256 -extfile "$OUT/server.ext" -out "$OUT/server.pem" 2>/dev/null
rm -f "$OUT/server.csr" "$OUT/server.ext" "$OUT/ca.srl"
chmod 644 "$OUT/ca.crt" "$OUT/server.pem"

openssl verify -CAfile "$OUT/ca.crt" "$OUT/server.pem"
echo "server certificate SANs: $SANS"
