#!/bin/sh
# Makes a private CA, a broker certificate and one client certificate per device (CN = device id,
# which Mosquitto uses as the username with `use_identity_as_username true`, so the ACL's %u is the
# device id). Usage:  deploy/make-certs.sh OUTDIR BROKER_HOST_OR_IP DEVICE_ID [DEVICE_ID ...]
# Existing CA files in OUTDIR are reused, so devices can be added later. Keys are mode 600.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 OUTDIR BROKER_HOST_OR_IP DEVICE_ID [DEVICE_ID ...]" >&2; exit 2; }
out=$1; host=$2; shift 2
days=${CERT_DAYS:-3650}
mkdir -p "$out"; cd "$out"
umask 077
if [ ! -f ca.key ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days "$days" \
    -subj "/CN=paydbox fleet CA" 2>/dev/null
fi
case "$host" in
  *[!0-9.]*) san="DNS:$host" ;;
  *) san="IP:$host" ;;
esac
if [ ! -f server.key ]; then
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=$host" 2>/dev/null
  printf "subjectAltName=%s\nextendedKeyUsage=serverAuth\n" "$san" > server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
    -days "$days" -extfile server.ext 2>/dev/null
  rm -f server.csr server.ext
fi
for dev in "$@"; do
  case "$dev" in *[!A-Za-z0-9_-]*) echo "bad device id: $dev (A-Z a-z 0-9 _ - only)" >&2; exit 2 ;; esac
  openssl req -newkey rsa:2048 -nodes -keyout "$dev.key" -out "$dev.csr" -subj "/CN=$dev" 2>/dev/null
  printf "extendedKeyUsage=clientAuth\n" > "$dev.ext"
  openssl x509 -req -in "$dev.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$dev.crt" \
    -days "$days" -extfile "$dev.ext" 2>/dev/null
  rm -f "$dev.csr" "$dev.ext"
done
chmod 644 ca.crt server.crt 2>/dev/null || true
echo "certificates in $out: ca.crt server.crt/key $(printf '%s.crt ' "$@")"
